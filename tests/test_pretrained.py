"""Pretrained encoder weights: the safetensors reader against its writer, the committed torchvision-layout fixtures
(1/16-width VGG16, VGG16-BN and ResNet-50 with random weights and batch-norm statistics, see
tests/torchvision_layout.py) loaded into segjax's encoders and compared with PyTorch's activations, the refusals, and
the run that starts from a file. With torch installed, also .pth files and full-size networks."""

import importlib
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from segjax import models, ops
from segjax.models import pretrained
from segjax.models.encoder import ResNet50Encoder, ResNetEncoder, VGGEncoder
from segjax.models.layers import NormFactory

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pretrained")
VGG16_CONVS = (2, 2, 3, 3, 3)
REFERENCE = dict(np.load(os.path.join(FIXTURES, "activations.npz")))
TORCHVISION_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}  # torchvision's, for the fake files


def fixture(name):
    return os.path.join(FIXTURES, f"{name}_tiny.safetensors")


def fixture_input(shape):
    """tests/torchvision_layout.py's inputs (a formula: nothing stored)."""
    n = int(np.prod(shape))
    return (np.sin(np.arange(n) * 0.37) + 0.5 * np.cos(np.arange(n) * 0.011)).reshape(shape).astype(np.float32)


def vgg_model(cls, norm, **kwargs):
    """A segjax VGG16 network at 1/16 width (4..32 channels), as the fixtures."""
    return cls(num_classes=3, base_width=4, convs=VGG16_CONVS, norm=NormFactory(norm), **kwargs)


def init(model, shape=(1, 32, 32, 3)):
    return jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape))


def shapes(model, shape=(1, 32, 32, 3)):
    """The model's variables as shapes only (what matching a file needs): nothing is compiled."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))


def encoder_variables(weights: pretrained.LoadedWeights):
    """The loaded encoder tensors as the variables of the encoder module alone."""
    return {c: traverse_util.unflatten_dict(arrays)["encoder"] for c, arrays in weights.arrays.items()}


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def test_safetensors_written_by_the_package_read_back_with_their_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a.weight": rng.normal(size=(3, 5, 7)).astype(np.float32),
        "b": rng.normal(size=(4, 1)).astype(np.float16),
        "c.num_batches_tracked": np.array(17, np.int64),
        "empty": np.zeros((0, 3), np.float32),
        # bfloat16 (timm ships some files so): kept as ml_dtypes.bfloat16, exact.
        "d.bf16": np.array([1.0, -2.5, 3.140625, 1e-3, 65280.0], ml_dtypes.bfloat16),
    }
    path = str(tmp_path / "t.safetensors")
    safetensors.numpy.save_file(tensors, path)
    back = pretrained.read_safetensors(path)
    assert sorted(back) == sorted(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)


def test_only_the_encoders_tensors_are_read_and_bfloat16_loads_as_float32(tmp_path, monkeypatch):
    """A file with the fixture's tensors in bfloat16 and a large extra tensor: the loader reads the encoder's tensors
    (widened to float32 exactly) and never the extra one."""
    model = vgg_model(models.SegNet, "batch")
    tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in pretrained.read_safetensors(fixture("vgg16_bn")).items()}
    tensors["decoder.huge"] = np.zeros((64, 1024), np.float32)
    path = str(tmp_path / "bf16.safetensors")
    safetensors.numpy.save_file(tensors, path)
    read = []
    real_getitem = pretrained.SafetensorsTensors.__getitem__

    def recording(self, name):
        read.append(name)
        return real_getitem(self, name)

    monkeypatch.setattr(pretrained.SafetensorsTensors, "__getitem__", recording)
    weights = pretrained.load_encoder_weights(path, model, shapes(model))
    assert "decoder.huge" in weights.unused and "decoder.huge" not in read
    assert set(read) == set(weights.loaded)
    kernel = weights.arrays["params"][("encoder", "block1", "conv0", "kernel")]
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, tensors["features.0.weight"].astype(np.float32).transpose(2, 3, 1, 0))


# --------------------------------------------------------------------------------------------------
# The fixtures against PyTorch's activations
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fcn_with_vgg16():
    model = vgg_model(models.FCN8s, "none", fc_width=16, fc_kernel=7)
    variables = init(model, (1, 224, 224, 3))
    weights = pretrained.load_encoder_weights(fixture("vgg16"), model, variables)
    return model, weights, weights.apply(variables)


def test_vgg16_levels_and_fc6_match_pytorch(fcn_with_vgg16):
    model, weights, variables = fcn_with_vgg16
    encoder = VGGEncoder(tuple(4 * 2 ** min(i, 3) for i in range(5)), VGG16_CONVS, model.norm)
    levels = encoder.apply(encoder_variables(weights), fixture_input((1, 32, 64, 3)), train=False)
    for i, level in enumerate(levels):
        np.testing.assert_allclose(level.features, REFERENCE[f"vgg16/level{i}"], rtol=1e-4, atol=1e-5)
    # fc6: torchvision's Linear(32 * 7 * 7, 16) on the flattened pool5 map is the 7x7 convolution's centre output.
    _, state = model.apply(
        variables,
        fixture_input((1, 224, 224, 3)),
        capture_intermediates=lambda m, _: m.name == "fc6",
        mutable=["intermediates"],
    )
    fc6 = state["intermediates"]["fc6"]["__call__"][0]
    assert fc6.shape == (1, 7, 7, 16)
    np.testing.assert_allclose(fc6[:, 3, 3], REFERENCE["vgg16/fc6"], rtol=1e-4, atol=1e-5)
    assert len(weights.loaded) == 13 * 2 + 4  # 13 convolutions, fc6 and fc7 (weight and bias each)
    assert weights.unused == ("classifier.6.weight", "classifier.6.bias")  # the ImageNet classifier
    assert "score_fr/kernel" in weights.fresh and not any(p.startswith("encoder") for p in weights.fresh)


def test_vgg16_bn_levels_match_pytorch_with_running_statistics():
    model = vgg_model(models.SegNet, "batch")
    weights = pretrained.load_encoder_weights(fixture("vgg16_bn"), model, shapes(model))
    encoder = VGGEncoder(tuple(4 * 2 ** min(i, 3) for i in range(5)), VGG16_CONVS, model.norm)
    levels = encoder.apply(encoder_variables(weights), fixture_input((1, 32, 64, 3)), train=False)
    for i, level in enumerate(levels):
        np.testing.assert_allclose(level.features, REFERENCE[f"vgg16_bn/level{i}"], rtol=1e-4, atol=1e-4)
    # SegNet has no fc layers: the whole classifier is unused; the statistics and the conv biases (folded into the
    # running means, as segjax's convolutions before batch norm have none) were loaded too.
    assert all(name.startswith("classifier.") for name in weights.unused)
    assert {"features.0.bias", "features.1.running_mean", "features.1.running_var"} <= set(weights.loaded)


@pytest.mark.parametrize("output_stride", [32, 8])
def test_resnet50_levels_match_pytorch_at_an_odd_size(output_stride):
    model = models.UNet(num_classes=3, base_width=4, depth=5, encoder="resnet50", norm=NormFactory("batch"))
    weights = pretrained.load_encoder_weights(fixture("resnet50"), model, shapes(model))
    assert weights.unused == ("fc.weight", "fc.bias")
    encoder = ResNet50Encoder(4, model.norm, output_stride)
    levels = encoder.apply(encoder_variables(weights), fixture_input((1, 45, 61, 3)), train=False)
    assert [level.stride for level in levels] == ([2, 4, 8, 16, 32] if output_stride == 32 else [2, 4, 8, 8, 8])
    if output_stride == 32:
        for i, level in enumerate(levels):
            np.testing.assert_allclose(level.features, REFERENCE[f"resnet50/level{i}"], rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(levels[-1].features, REFERENCE["resnet50/os8/layer4"], rtol=1e-4, atol=1e-4)


def test_resnet50_unet_and_fcn_run_at_any_size():
    for model in (
        models.UNet(num_classes=3, base_width=4, depth=5, encoder="resnet50", upsample=ops.UpsampleSpec("nearest")),
        models.FCN8s(num_classes=3, base_width=4, encoder="resnet50", output_stride=32),
        models.FCN16s(num_classes=3, base_width=4, encoder="resnet50", output_stride=8),
    ):
        out, _ = jax.eval_shape(lambda m=model: m.init_with_output(jax.random.key(0), jnp.zeros((2, 37, 50, 3))))
        assert out.shape == (2, 37, 50, 3)


# --------------------------------------------------------------------------------------------------
# ResNet-101 from a torchvision-layout file written here (no torch, no fixture)
# --------------------------------------------------------------------------------------------------


def torchvision_resnet_shapes(blocks, width, classes=10) -> dict:
    """The state dict of torchvision's ResNet(Bottleneck, blocks) with a stem of `width` channels, as name -> shape
    in its order (torchvision's code: conv1, bn1, then per bottleneck conv1..bn3 and, first in each layer, the
    projection `downsample`; fc last). Checked against tests/torchvision_layout.py's module where torch is installed."""

    def bn(prefix, c):
        return {f"{prefix}.{leaf}": (c,) for leaf in ("weight", "bias", "running_mean", "running_var")} | {
            f"{prefix}.num_batches_tracked": ()
        }

    shapes = {"conv1.weight": (width, 3, 7, 7), **bn("bn1", width)}
    inplanes = width
    for i, n in enumerate(blocks):
        planes = width * 2**i
        for j in range(n):
            block = f"layer{i + 1}.{j}"
            shapes |= {f"{block}.conv1.weight": (planes, inplanes, 1, 1), **bn(f"{block}.bn1", planes)}
            shapes |= {f"{block}.conv2.weight": (planes, planes, 3, 3), **bn(f"{block}.bn2", planes)}
            shapes |= {f"{block}.conv3.weight": (planes * 4, planes, 1, 1), **bn(f"{block}.bn3", planes * 4)}
            if j == 0:
                shapes |= {f"{block}.downsample.0.weight": (planes * 4, inplanes, 1, 1)}
                shapes |= bn(f"{block}.downsample.1", planes * 4)
            inplanes = planes * 4
    return shapes | {"fc.weight": (classes, inplanes), "fc.bias": (classes,)}


def fake_torchvision_file(path, blocks, width=4, seed=0) -> dict:
    """A torchvision-layout ResNet state dict of random numbers (every tensor different), written as safetensors."""
    rng = np.random.default_rng(seed)
    state = {
        name: np.array(7, np.int64) if name.endswith("num_batches_tracked") else rng.normal(size=shape).astype("f4")
        for name, shape in torchvision_resnet_shapes(blocks, width).items()
    }
    safetensors.numpy.save_file(state, str(path))
    return state


def has_segjax_place(name: str) -> bool:
    """Whether torchvision's tensor `name` has a place in the encoder (not the classifier nor the batch counts)."""
    return not name.startswith("fc.") and not name.endswith("num_batches_tracked")


def segjax_place(name: str):
    """Where torchvision's tensor `name` belongs in segjax's ResNet encoder: (collection, path), written from
    segjax.models.encoder's module names (`layer{i}_{j}`, `downsample_conv`/`_norm`, batch norm's scale, bias, mean,
    var) apart from the loader's own mapping."""
    *modules, leaf = name.split(".")
    if modules[0].startswith("layer"):
        modules = [f"{modules[0]}_{modules[1]}", *modules[2:]]
    if modules[-2:] == ["downsample", "0"]:
        modules = [*modules[:-2], "downsample_conv"]
    elif modules[-2:] == ["downsample", "1"]:
        modules = [*modules[:-2], "downsample_norm"]
    if modules[-1].startswith("conv") or modules[-1] == "downsample_conv":
        return "params", ("encoder", *modules, "kernel")
    collection, leaf = {
        "weight": ("params", "scale"),
        "bias": ("params", "bias"),
        "running_mean": ("batch_stats", "mean"),
        "running_var": ("batch_stats", "var"),
    }[leaf]
    return collection, ("encoder", *modules, leaf)


def test_a_torchvision_resnet101_file_loads_every_tensor_where_it_belongs(tmp_path):
    state = fake_torchvision_file(tmp_path / "resnet101.safetensors", TORCHVISION_BLOCKS["resnet101"])
    model = models.DeepLabV3(num_classes=3, base_width=4, encoder="resnet101", norm=NormFactory("batch"))
    variables = shapes(model)
    weights = pretrained.load_encoder_weights(str(tmp_path / "resnet101.safetensors"), model, variables)
    assert sorted(weights.unused) == ["fc.bias", "fc.weight"]
    loaded = {(c, path): array for c, arrays in weights.arrays.items() for path, array in arrays.items()}
    expected = {
        segjax_place(name): array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
        for name, array in state.items()
        if has_segjax_place(name)
    }
    assert loaded.keys() == expected.keys()
    for key, array in expected.items():
        np.testing.assert_array_equal(loaded[key], array, err_msg=str(key))
    # Every encoder variable came from the file, nothing else did: 104 convolutions and 104 batch norms (4 tensors).
    encoder = {
        (c, path): leaf.shape
        for c in ("params", "batch_stats")
        for path, leaf in traverse_util.flatten_dict(dict(variables[c])).items()
        if path[0] == "encoder"
    }
    assert {k: v.shape for k, v in loaded.items()} == encoder
    assert len(weights.loaded) == 104 * 5
    assert sum(a.size for a in loaded.values()) == sum(a.size for k, a in state.items() if has_segjax_place(k))
    assert sum(path[1].startswith("layer3_") and path[2:] == ("conv1", "kernel") for _, path in loaded) == 23
    np.testing.assert_array_equal(
        weights.arrays["params"][("encoder", "layer3_22", "conv2", "kernel")],
        state["layer3.22.conv2.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        weights.arrays["batch_stats"][("encoder", "layer3_0", "downsample_norm", "var")],
        state["layer3.0.downsample.1.running_var"],
    )
    assert not any(p.startswith("encoder/") for p in weights.fresh) and "head/classifier/kernel" in weights.fresh


def test_resnet50_and_resnet101_files_are_refused_by_the_other_encoder(tmp_path):
    """ResNet-50's file lacks layer3.6 to layer3.22 (17 bottlenecks, 15 tensors each); ResNet-101's has them, which a
    ResNet-50 encoder must not silently drop."""
    r101 = tmp_path / "resnet101.safetensors"
    fake_torchvision_file(r101, TORCHVISION_BLOCKS["resnet101"])
    resnet101 = models.DeepLabV3(num_classes=3, base_width=4, encoder="resnet101")
    with pytest.raises(
        pretrained.PretrainedWeightsError,
        match=r"0 tensors with other shapes, 255 missing; first: layer3\.\d+\.[\w.]+ \(for encoder/layer3_",
    ):
        pretrained.load_encoder_weights(fixture("resnet50"), resnet101, shapes(resnet101))
    for resnet50 in (
        models.DeepLabV3(num_classes=3, base_width=4, encoder="resnet50"),
        models.UNet(num_classes=3, base_width=4, depth=5, encoder="resnet50", norm=NormFactory("batch")),
    ):
        with pytest.raises(
            pretrained.PretrainedWeightsError,
            match=r"0 missing, 255 the encoder does not have; first: layer3\.\d+\.[\w.]+ \(not in the encoder\)",
        ):
            pretrained.load_encoder_weights(str(r101), resnet50, shapes(resnet50))


def test_the_fake_resnet_layouts_are_torchvisions():
    """The fake files' names and shapes are those of the PyTorch modules of tests/torchvision_layout.py."""
    pytest.importorskip("torch")
    layout = importlib.import_module("torchvision_layout")
    for blocks in TORCHVISION_BLOCKS.values():
        net = layout.ResNet(16, classes=10, blocks=blocks)
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == torchvision_resnet_shapes(blocks, 4)
        assert list(net.state_dict()) == list(torchvision_resnet_shapes(blocks, 4))


def test_a_resnet101_loads_to_pytorchs_activations(tmp_path):
    """A 1/16-width ResNet-101 with random weights, through a .pth, gives PyTorch's levels (at output stride 32 and
    8, dilated as torchvision's replace_stride_with_dilation)."""
    torch = pytest.importorskip("torch")
    layout = importlib.import_module("torchvision_layout")
    torch.manual_seed(0)
    blocks = TORCHVISION_BLOCKS["resnet101"]
    net = layout.randomise_batch_norm(layout.ResNet(16, classes=10, blocks=blocks), 0)
    torch.save(net.state_dict(), tmp_path / "resnet101.pth")
    model = models.DeepLabV3(num_classes=3, base_width=4, encoder="resnet101")
    weights = pretrained.load_encoder_weights(str(tmp_path / "resnet101.pth"), model, shapes(model))
    x = fixture_input((1, 45, 61, 3))
    dilated = layout.ResNet(16, (False, True, True), classes=10, blocks=blocks)
    dilated.load_state_dict(net.state_dict())
    for output_stride, reference in ((32, net), (8, dilated.eval())):
        encoder = ResNetEncoder(4, model.norm, output_stride, blocks=blocks)
        levels = encoder.apply(encoder_variables(weights), x, train=False)
        with torch.no_grad():
            expected = reference.levels(layout.as_nchw(x))
        for got, want in zip(levels, expected, strict=True):
            np.testing.assert_allclose(got.features, layout.as_nhwc(want), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "file, make_model, match",
    [
        (
            "resnet50",
            lambda: vgg_model(models.SegNet, "batch"),
            r"0 tensors with other shapes, 65 missing; first: features\.0\.weight",
        ),
        (
            "vgg16",
            lambda: vgg_model(models.SegNet, "batch"),
            r"8 tensors with other shapes, 55 missing; first: features\.7\.weight \(8, 8, 3, 3\) -> "
            r"encoder/block2/conv0/kernel needs \(3, 3, 4, 8\)",
        ),
        (
            "vgg16_bn",
            lambda: models.SegNet(num_classes=3, base_width=8, convs=VGG16_CONVS),
            r"features\.0\.weight \(4, 3, 3, 3\) -> encoder/block1/conv0/kernel needs \(3, 3, 3, 8\)",
        ),
        (
            "vgg16",
            lambda: vgg_model(models.FCN8s, "none", fc_width=16, fc_kernel=3),
            r"classifier\.0\.weight \(16, 1568\) -> fc6/kernel needs \(3, 3, 32, 16\)",
        ),
        ("vgg16_bn", lambda: vgg_model(models.SegNet, "group"), "no group norm"),
    ],
)
def test_a_file_that_does_not_fit_is_refused_by_name(file, make_model, match):
    model = make_model()
    with pytest.raises(pretrained.PretrainedWeightsError, match=match):
        pretrained.load_encoder_weights(fixture(file), model, shapes(model))


def test_unreadable_files_are_refused_clearly(tmp_path, monkeypatch):
    model = vgg_model(models.SegNet, "batch")
    variables = shapes(model)
    with pytest.raises(pretrained.PretrainedWeightsError, match="no file '/nonexistent.pth'"):
        pretrained.load_encoder_weights("/nonexistent.pth", model, variables)
    good = (tmp_path / "good.safetensors").as_posix()
    safetensors.numpy.save_file({"x": np.ones((4, 4), np.float32)}, good)
    data = open(good, "rb").read()
    bad_files = {
        "junk": b"\x05\x00\x00\x00\x00\x00\x00\x00{nope",  # a header that is not JSON
        "short": b"\x05\x00",  # not even the header's length
        "truncated": data[:-8],  # the header's offsets run past the end of the file
        "huge_header": (1 << 40).to_bytes(8, "little") + data[8:],  # a header length beyond the file
    }
    for name, content in bad_files.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        with pytest.raises(
            pretrained.PretrainedWeightsError, match=rf"^{path} is not a readable safetensors file \("
        ) as e:
            pretrained.load_encoder_weights(str(path), model, variables)
        assert "\n" not in str(e.value)
    (tmp_path / "w.pth").write_bytes(b"not read")
    real_import = importlib.import_module

    def without_torch(name, *args):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args)

    monkeypatch.setattr(pretrained.importlib, "import_module", without_torch)
    with pytest.raises(pretrained.PretrainedWeightsError, match=r"needs PyTorch \(pip install -e '\.\[bench\]'\)"):
        pretrained.load_encoder_weights(str(tmp_path / "w.pth"), model, variables)


# --------------------------------------------------------------------------------------------------
# PyTorch files and full-size networks (torch installed: the 'bench' extra)
# --------------------------------------------------------------------------------------------------


def test_pth_files_load_like_their_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v.copy()) for k, v in pretrained.read_safetensors(fixture("resnet50")).items()}
    torch.save({"state_dict": state}, tmp_path / "resnet50.pth")  # the wrapped form of training checkpoints
    model = models.UNet(num_classes=3, base_width=4, depth=5, encoder="resnet50", norm=NormFactory("batch"))
    variables = shapes(model)
    from_pth = pretrained.load_encoder_weights(str(tmp_path / "resnet50.pth"), model, variables)
    from_safetensors = pretrained.load_encoder_weights(fixture("resnet50"), model, variables)
    assert from_pth.loaded == from_safetensors.loaded
    jax.tree.map(np.testing.assert_array_equal, from_pth.arrays, from_safetensors.arrays)


@pytest.mark.parametrize("name", ["vgg16_bn", "resnet50"])
def test_full_size_torchvision_layout_networks_match(name, tmp_path):
    torch = pytest.importorskip("torch")
    layout = importlib.import_module("torchvision_layout")
    torch.manual_seed(0)
    if name == "resnet50":
        net = layout.randomise_batch_norm(layout.ResNet(), 0)
        model = models.UNet(num_classes=3, base_width=64, depth=5, encoder="resnet50", norm=NormFactory("batch"))
        encoder = ResNet50Encoder(64, model.norm)
    else:
        net = layout.randomise_batch_norm(layout.VGG(True), 0)
        model = models.SegNet(num_classes=3, base_width=64, convs=VGG16_CONVS, norm=NormFactory("batch"))
        encoder = VGGEncoder((64, 128, 256, 512, 512), VGG16_CONVS, model.norm)
    path = str(tmp_path / f"{name}.pth")
    torch.save(net.state_dict(), path)
    weights = pretrained.load_encoder_weights(path, model, shapes(model))
    x = fixture_input((1, 64, 64, 3))
    levels = encoder.apply(encoder_variables(weights), x, train=False)
    with torch.no_grad():
        expected = net.levels(layout.as_nchw(x))
    expected = expected if name == "resnet50" else expected[0]
    for got, want in zip(levels, expected, strict=True):
        np.testing.assert_allclose(got.features, layout.as_nhwc(want), rtol=1e-3, atol=1e-3)
