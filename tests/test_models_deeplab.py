"""DeepLabv3 / v3+ and the ResNet-101 layout: parameter counts against torchvision's published ones (shapes only, by
jax.eval_shape), the head's layout, the upsampling choice, the encoder against PyTorch's activations with the
ResNet-50 fixture, a real training-mode gradient at a tiny width, and the config errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from segjax import models, ops
from segjax.models import deeplab, pretrained
from segjax.models.encoder import RESNET_BLOCKS, ResNetEncoder
from segjax.models.layers import NormFactory

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pretrained")

# torchvision's published parameter counts (the weights' tables): resnet50, resnet101 (with the 1000-class fc) and
# deeplabv3_resnet50 / _resnet101 at 21 classes with their auxiliary FCNHead on layer3.
RESNET50, RESNET101 = 25_557_032, 44_549_160
DEEPLABV3_RESNET50, DEEPLABV3_RESNET101 = 42_004_074, 60_996_202
FC = 2048 * 1000 + 1000
AUX = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21  # FCNHead(1024, 21): 3x3 conv, BN, 1x1 classifier


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def params(model, shape=(1, 64, 64, 3)):
    """The model's parameters as shapes: nothing is initialised or compiled."""
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct(shape, jnp.float32))
    return variables["params"]


def deeplab_model(name, num_classes=21, **section):
    return models.create_model(dict(name=name, **section), num_classes)


def conv(k, cin, cout):
    return k * k * cin * cout


def test_deeplabv3_has_torchvisions_parameter_counts():
    """deeplabv3_resnet50 without its auxiliary head: 39,638,869 (torchvision's 42,004,074 less the FCNHead)."""
    for encoder, published, resnet in (
        ("resnet50", DEEPLABV3_RESNET50, RESNET50),
        ("resnet101", DEEPLABV3_RESNET101, RESNET101),
    ):
        p = params(deeplab_model("deeplabv3", preset="paper", encoder=encoder))
        assert count(p["encoder"]) == resnet - FC, encoder
        assert count(p) == published - AUX, encoder
    assert DEEPLABV3_RESNET50 - AUX == 39_638_869


def test_deeplabv3plus_parameters_follow_its_decoder():
    """v3+ = v3 without the 3x3 conv after ASPP, plus the 48-channel projection of layer1 (256 channels) and two 3x3
    conv-BN (304 -> 256, 256 -> 256); convolutions before batch norm have no bias."""
    v3 = count(params(deeplab_model("deeplabv3", preset="paper")))
    v3plus = count(params(deeplab_model("deeplabv3plus", preset="paper")))
    bn = 2 * 256
    removed = conv(3, 256, 256) + bn
    added = conv(1, 256, 48) + 2 * 48 + conv(3, 256 + 48, 256) + bn + conv(3, 256, 256) + bn
    assert v3plus == v3 - removed + added


def test_head_layout_rates_and_defaults():
    v3 = deeplab_model("deeplabv3", num_classes=3, base_width=4)
    assert (v3.encoder, v3.output_stride, v3.dropout, v3.upsample.method) == ("resnet50", 16, 0.1, "bilinear")
    assert deeplab.ASPP_RATES == {16: (6, 12, 18), 8: (12, 24, 36)}
    head = params(v3)["head"]
    assert set(head) == {"aspp", "conv", "classifier"}  # bilinear upsampling has no parameters
    assert set(head["aspp"]) == {"branch0", "branch1", "branch2", "branch3", "pooling", "project"}
    assert head["aspp"]["branch1"]["conv"]["kernel"].shape == (3, 3, 128, 16)  # 4 x width 4, layer4: 32 x 4
    assert head["aspp"]["project"]["conv"]["kernel"].shape == (1, 1, 5 * 16, 16)
    plus = params(deeplab_model("deeplabv3plus", num_classes=3, base_width=4))["head"]
    assert set(plus) == {"aspp", "low_level", "conv0", "conv1", "classifier"}
    assert plus["low_level"]["conv"]["kernel"].shape == (1, 1, 16, 3)  # layer1's 4 x 4 channels -> 3/4 of width 4
    r101 = params(deeplab_model("deeplabv3", num_classes=3, base_width=4, encoder="resnet101"))["encoder"]
    assert sum(k.startswith("layer3_") for k in r101) == RESNET_BLOCKS["resnet101"][2] == 23


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_any_size_in_logits_out_and_the_upsampling_is_a_config_choice(name, output_stride):
    """Odd sizes come back whole; a transposed decoder adds exactly its kernels (bilinear-initialised: 2f - f%2 wide,
    no bias) to the bilinear network: x output_stride (v3), or x output_stride / 4 at 4 * width channels and x4
    (v3+)."""
    base = dict(base_width=4, output_stride=output_stride)
    model = deeplab_model(name, num_classes=3, **base)
    out = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0], jax.ShapeDtypeStruct((2, 37, 45, 3), jnp.float32)
    )
    assert out.shape == (2, 37, 45, 3)
    transposed = deeplab_model(name, num_classes=3, upsample={"method": "transposed"}, **base)
    assert transposed.upsample.weight_init == "bilinear"

    def kernel(f):
        return 2 * f - f % 2

    if name == "deeplabv3":
        added = kernel(output_stride) ** 2 * 3 * 3
    else:
        added = kernel(output_stride // 4) ** 2 * 16 * 16 + kernel(4) ** 2 * 3 * 3
    assert count(params(transposed)) - count(params(model)) == added


def test_encoder_equals_pytorchs_with_the_resnet50_fixture():
    """The ResNet-50 fixture (1/16 width, tests/torchvision_layout.py) loads into DeepLab's encoder as it is: every
    tensor but the classifier's, and the dilated encoder's output (stride 8) equals PyTorch's."""
    model = models.DeepLabV3Plus(num_classes=3, base_width=4, output_stride=8)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    weights = pretrained.load_encoder_weights(os.path.join(FIXTURES, "resnet50_tiny.safetensors"), model, shapes)
    assert weights.unused == ("fc.weight", "fc.bias")
    variables = {c: traverse_util.unflatten_dict(arrays)["encoder"] for c, arrays in weights.arrays.items()}
    n = 45 * 61 * 3  # tests/torchvision_layout.py's input (a formula: nothing stored)
    x = (np.sin(np.arange(n) * 0.37) + 0.5 * np.cos(np.arange(n) * 0.011)).reshape(1, 45, 61, 3).astype(np.float32)
    levels = ResNetEncoder(4, NormFactory("batch"), 8).apply(variables, x, train=False)
    reference = np.load(os.path.join(FIXTURES, "activations.npz"))["resnet50/os8/layer4"]
    np.testing.assert_allclose(levels[-1].features, reference, rtol=1e-4, atol=1e-4)


def test_deeplabv3plus_trains_tiny():
    """A training-mode step at width 2: finite loss, finite gradients that reach the encoder and the head (batch norm
    on the image-pooling branch's 1x1 map included)."""
    model = deeplab_model("deeplabv3plus", num_classes=3, base_width=2, output_stride=8)
    x = jax.random.normal(jax.random.key(1), (2, 24, 24, 3))
    labels = jax.random.randint(jax.random.key(2), (2, 24, 24), 0, 3)
    variables = jax.jit(model.init)(jax.random.key(0), x)

    def loss(p):
        logits, _ = model.apply(
            {**variables, "params": p}, x, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"]
        )
        return -(jax.nn.one_hot(labels, 3) * jax.nn.log_softmax(logits)).sum(-1).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert np.isfinite(value)
    for part in ("encoder", "head"):
        leaves = jax.tree.leaves(grads[part])
        assert all(np.all(np.isfinite(g)) for g in leaves) and sum(float(jnp.abs(g).sum()) for g in leaves) > 0


@pytest.mark.parametrize(
    "section, match",
    [
        (dict(name="deeplabv3", output_stride=32), r"output_stride=32 cannot work.*16 or 8"),
        (dict(name="deeplabv3plus", norm="none"), r"DeepLabV3Plus.*needs norm 'batch' or 'group'"),
        (dict(name="deeplabv3", upsample={"method": "max_unpool"}), r"DeepLabV3.*max_unpool.*segnet"),
        (dict(name="unet", encoder="resnet101"), r"encoder 'resnet101' is DeepLab's"),
        (dict(name="deeplabv3", depth=3), r"ResNet encoders have depth 5"),
    ],
)
def test_config_errors(section, match):
    with pytest.raises(ValueError, match=match):
        models.create_model(section, 3)


def test_registry_lists_deeplab():
    assert models.MODELS["deeplabv3"] is models.DeepLabV3 and models.MODELS["deeplabv3plus"] is models.DeepLabV3Plus
    assert ops.UpsampleSpec("bilinear") == models.ModelSpec.from_config({"name": "deeplabv3"}).upsample
