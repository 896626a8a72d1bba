"""segjax.models: shapes for odd sizes, exact parameter counts, the model x upsampling grid, the papers'
defaults (FCN's bilinear init, SegNet's index unpooling), batch norm (against nn.BatchNorm and across
devices), the conv module."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from segjax import models, ops
from segjax.models import layers

NUM_CLASSES = 3
ODD = (2, 37, 45, 3)


def rkey(seed):
    """RBG keys: XLA compiles their random bits far faster than threefry's (init compile 28 s -> 4 s)."""
    return jax.random.key(seed, impl="rbg")


def tiny(name, **overrides):
    cfg = models.default_model_config()
    cfg.name = name
    cfg.base_width = 2
    if models.config.FAMILIES[name] not in ("fcn", "deeplab"):  # their depth is their encoder's
        cfg.depth = 2
    for key, value in overrides.items():
        if key.startswith("upsample_"):
            cfg.upsample[key[len("upsample_") :]] = value
        else:
            cfg[key] = value
    return cfg


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def abstract_apply(model, shape):
    """Output shape and parameter shapes of init + apply without compiling anything."""

    def run(x):
        variables = model.init({"params": rkey(0)}, x)
        return model.apply(variables, x), variables

    return jax.eval_shape(run, jax.ShapeDtypeStruct(shape, jnp.float32))


# --------------------------------------------------------------------------------------------------
# Shapes, parameter counts, the grid
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("shape", [ODD, (1, 1, 70, 3), (1, 33, 32, 3)])
def test_output_shape_any_size(name, shape):
    out, _ = abstract_apply(models.create_model(tiny(name), NUM_CLASSES), shape)
    assert out.shape == shape[:3] + (NUM_CLASSES,)
    assert out.dtype == jnp.float32


def conv_params(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def unet_params(b, d, c, up="transposed", norm="none", skips=True):
    """U-Net: per level two 3x3 convs down and up, 2x2 up-conv (or 1x1 projection), 1x1 classifier; without
    skips the first up-block conv sees only the upsampled features."""
    bias = norm == "none"
    norm_p = 0 if norm == "none" else 2  # batch norm: scale and bias per channel
    w = [b * 2**lvl for lvl in range(d + 1)]
    total, cin = 0, 3
    for lvl in range(d + 1):  # contracting path and bottom
        total += conv_params(3, cin, w[lvl], bias) + conv_params(3, w[lvl], w[lvl], bias) + 2 * norm_p * w[lvl]
        cin = w[lvl]
    for lvl in range(d):
        total += conv_params(2, w[lvl + 1], w[lvl]) if up == "transposed" else conv_params(1, w[lvl + 1], w[lvl])
        first_in = 2 * w[lvl] if skips else w[lvl]
        total += conv_params(3, first_in, w[lvl], bias) + conv_params(3, w[lvl], w[lvl], bias) + 2 * norm_p * w[lvl]
    return total + conv_params(1, w[0], c)


def segnet_params(b, d, c, convs=2):
    """SegNet with batch norm (convs without bias) and max_unpool (no parameters)."""
    w = [b * 2 ** min(lvl, 3) for lvl in range(d)]
    total, cin = 0, 3
    for lvl in range(d):
        for _ in range(convs):
            total += conv_params(3, cin, w[lvl], False) + 2 * w[lvl]
            cin = w[lvl]
    for lvl in range(d):
        outs = [w[lvl]] * (convs - 1) + [w[max(lvl - 1, 0)]]
        cin = w[lvl]
        for o in outs:
            total += conv_params(3, cin, o, False) + 2 * o
            cin = o
    return total + conv_params(1, w[0], c)


def fcn32s_small_params(b, c):
    """FCN-32s 'small' preset without norm: convs (1, 1, 2, 2, 2), fc 128 (3x3 fc6), 64x64 bilinear
    transposed conv without bias."""
    w = [b, 2 * b, 4 * b, 8 * b, 8 * b]
    total, cin = 0, 3
    for lvl, n in enumerate((1, 1, 2, 2, 2)):
        for _ in range(n):
            total += conv_params(3, cin, w[lvl])
            cin = w[lvl]
    total += conv_params(3, w[4], 128) + conv_params(1, 128, 128) + conv_params(1, 128, c)
    return total + 64 * 64 * c * c


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (dict(name="unet", base_width=4, depth=2, norm="none"), unet_params(4, 2, 5)),
        (dict(name="unet", base_width=3, depth=3, norm="batch"), unet_params(3, 3, 5, norm="batch")),
        (
            dict(name="unet", base_width=4, depth=2, norm="none", upsample={"method": "nearest"}),
            unet_params(4, 2, 5, up="nearest"),
        ),
        (dict(name="unet", base_width=4, depth=2, norm="none", skips=False), unet_params(4, 2, 5, skips=False)),
        (  # the channel-halving bilinear init: a 4x4 instead of a 2x2 kernel for each up-convolution (8->4, 16->8)
            dict(
                name="unet", base_width=4, depth=2, upsample=dict(method="transposed", kernel_size=4, init="bilinear")
            ),
            unet_params(4, 2, 5, norm="batch") + (4 * 4 - 2 * 2) * (8 * 4 + 16 * 8),
        ),
        (dict(name="segnet", base_width=2, depth=4, norm="batch"), segnet_params(2, 4, 5)),
        (dict(name="fcn32s", base_width=2, norm="none"), fcn32s_small_params(2, 5)),
    ],
)
def test_parameter_counts(cfg, expected):
    _, variables = abstract_apply(models.create_model(cfg, 5), (1, 32, 32, 3))
    assert count(variables["params"]) == expected


def test_paper_unet_parameter_count():
    # Ronneberger et al.'s U-Net: 64..1024 channels, 23 convolutional layers, about 31 M parameters.
    _, variables = abstract_apply(
        models.create_model(dict(name="unet", preset="paper", norm="none"), 2), (1, 32, 32, 3)
    )
    assert count(variables["params"]) == unet_params(64, 4, 2)
    assert 31.0e6 < unet_params(64, 4, 2) < 31.1e6


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("method", ops.METHODS)
def test_model_method_grid(name, method):
    cfg = tiny(name, upsample_method=method)
    if method in models.MODELS[name].unsupported_methods:
        with pytest.raises(ValueError, match=rf"(?s){models.MODELS[name].__name__}.*max_unpool.*segnet"):
            models.create_model(cfg, NUM_CLASSES)
        return
    model = models.create_model(cfg, NUM_CLASSES)
    out, variables = abstract_apply(model, ODD)
    assert out.shape == ODD[:3] + (NUM_CLASSES,)
    if method in ops.PARAMETRIC_METHODS or not name.startswith("fcn"):
        assert count(variables["params"]) > 0


def basic_params(decoder, b, c):
    """SegNet's Table 1 networks: 4 encoder levels of a 7x7 conv (no bias) + batch norm; the decoders as in
    segjax.models.basic (transposed convolutions: 4x4, no bias; 1x1 convolutions with bias)."""
    encoder = conv_params(7, 3, b, False) + 3 * conv_params(7, b, b, False) + 4 * 2 * b
    score = conv_params(1, b, c)
    if decoder == "segnet":
        return encoder + 4 * (conv_params(7, b, b, False) + 2 * b) + score
    if decoder == "bilinear":
        return encoder + score
    level = conv_params(4, c, c, False) + conv_params(7, c, c, False) + 2 * c
    reduce = conv_params(1, b, c) if decoder == "fcn" else 0
    return encoder + score + 4 * (level + reduce) + conv_params(1, c, c)


@pytest.mark.parametrize(
    "name, decoder, paper",
    [
        ("segnet_basic", "segnet", 1.425e6),
        ("fcn_basic", "fcn", 0.65e6),
        ("fcn_basic_noaddition", "fcn_noaddition", 0.65e6),
        ("bilinear_basic", "bilinear", 0.625e6),
    ],
)
def test_segnet_table1_networks_have_the_papers_parameter_counts(name, decoder, paper):
    cfg = models.default_model_config()
    cfg.update(name=name, preset="paper")
    model = models.create_model(cfg, 11)  # CamVid's classes
    _, variables = abstract_apply(model, (1, 64, 64, 3))
    assert count(variables["params"]) == basic_params(decoder, 64, 11)
    assert abs(count(variables["params"]) / paper - 1) < 0.025  # Table 1 rounds to 0.025M


def test_decoder_storage_counts_what_the_encoder_hands_the_decoder():
    def paper_model(name):
        cfg = models.default_model_config()
        cfg.update(name=name, preset="paper")
        return models.create_model(cfg, 11)

    segnet, fcn = paper_model("segnet_basic"), paper_model("fcn_basic")
    shape = (1, 360, 480, 3)  # CamVid: padded to 368x480

    def encoder_levels(x):
        _, state = segnet.apply(segnet.init(rkey(0), x), x, capture_intermediates=lambda m, _: m.name == "encoder")
        return state["intermediates"]["encoder"]["__call__"][0]

    levels = jax.eval_shape(encoder_levels, jax.ShapeDtypeStruct(shape, jnp.float32))
    indices = sum(level.indices.size for level in levels)
    features = sum(level.features.size for level in levels)
    storage = models.basic.decoder_storage_bytes(segnet, *shape[1:3])
    assert storage == {"paper": indices * 2 // 8, "as_implemented": indices * 4}
    assert levels[0].indices.dtype == jnp.int32
    fcn_storage = models.basic.decoder_storage_bytes(fcn, *shape[1:3])
    assert fcn_storage == {"paper": features // 64 * 11 * 4, "as_implemented": features * 4}
    assert fcn_storage["paper"] / storage["paper"] == pytest.approx(11, rel=0.01)  # Table 1's storage multiplier
    assert models.basic.decoder_storage_bytes(paper_model("bilinear_basic"), 360, 480)["paper"] == 0


def test_bilinear_basic_is_the_bilinear_upsampling_of_its_class_scores():
    model = models.create_model(tiny("bilinear_basic"), NUM_CLASSES)  # depth 2: stride 4
    x = jax.random.normal(rkey(3), (2, 12, 20, 3))
    variables = model.init(rkey(0), x)
    out, state = model.apply(variables, x, capture_intermediates=lambda m, _: m.name == "score")
    score = state["intermediates"]["score"]["__call__"][0]
    assert score.shape == (2, 3, 5, NUM_CLASSES)
    expected = ops.bilinear_upsample(score, 4)  # tested against PyTorch in test_ops_resize
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, method", [("unet", "pixel_shuffle"), ("fcn8s", "resize_conv"), ("deconvnet", "max_unpool")]
)
def test_grid_real_runs_finite_gradients(name, method):
    model = models.create_model(tiny(name, upsample_method=method), NUM_CLASSES)
    x = jax.random.normal(rkey(1), (2, 19, 23, 3))
    labels = jax.random.randint(rkey(2), (2, 19, 23), 0, NUM_CLASSES)
    variables = jax.jit(model.init)({"params": rkey(0)}, x)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, rngs={"dropout": rkey(3)}, mutable=["batch_stats"]
        )
        onehot = jax.nn.one_hot(labels, NUM_CLASSES)
        return -(onehot * jax.nn.log_softmax(logits)).sum(-1).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert np.isfinite(value)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


# --------------------------------------------------------------------------------------------------
# Config errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(name="vgg"), "Unknown model 'vgg'"),
        (dict(name="unet", preset="huge"), "preset 'huge'"),
        (dict(name="unet", norm="layer"), "norm 'layer'"),
        (dict(name="fcn8s", depth=4), "depth is fixed at 5"),
        (dict(name="unet", widht=3), "Unknown model config keys"),
        (dict(name="unet", dropout=1.5), "dropout"),
        (dict(name="segnet", skips=False), "only U-Net's skip connections"),
        (dict(name="unet", upsample={"method": "cubic"}), "cubic"),
        (dict(name="segnet", upsample={"method": "nearest", "kernel_size": 0}), "kernel_size must be a positive"),
        (dict(name="segnet", upsample={"method": "resize_conv", "init": "icnr"}), "init='icnr'"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        models.create_model(cfg, NUM_CLASSES)


@pytest.mark.parametrize("base_width,depth", [(4, 2), (8, 3)])
def test_a_2x2_projection_before_bilinear_matches_the_2x2_transposed_convolutions_parameters(base_width, depth):
    """The compute-matched arm of the ablation: parameter-free upsampling whose channel projection is 2x2 has the
    parameters of U-Net's own 2x2 up-convolution (4 Cin Cout + Cout per step); the default 1x1 has a quarter."""

    def count(**upsample):
        config = dict(name="unet", base_width=base_width, depth=depth, norm="none", upsample=upsample)
        model = models.create_model(config, NUM_CLASSES)
        params = model.init(rkey(0), jnp.zeros((1, 16, 16, 3)), train=False)["params"]
        return sum(x.size for x in jax.tree.leaves(params))

    matched = count(method="bilinear", kernel_size=2)
    assert matched == count(method="transposed", kernel_size=2)
    weights = sum(base_width * 2 ** (i + 1) * base_width * 2**i for i in range(depth))  # Cin x Cout per step
    assert matched - count(method="bilinear") == 3 * weights


def test_default_config_builds_the_small_unet():
    cfg = models.default_model_config()
    model = models.create_model(cfg, NUM_CLASSES)
    assert isinstance(model, models.UNet)
    assert (model.base_width, model.depth, model.upsample.method) == (16, 3, "transposed")


# --------------------------------------------------------------------------------------------------
# The papers' defaults
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fcn32s_at_init():
    model = models.create_model(dict(name="fcn32s", base_width=2, norm="none"), NUM_CLASSES)
    x = jax.random.normal(rkey(0), (1, 96, 128, 3))
    variables = jax.jit(model.init)({"params": rkey(1)}, x)
    logits, state = jax.jit(
        lambda v, x: model.apply(
            v, x, capture_intermediates=lambda m, _: m.name == "score_fr", mutable=["intermediates"]
        )
    )(variables, x)
    return variables, logits, state["intermediates"]["score_fr"]["__call__"][0]


def test_fcn_bilinear_init_is_bilinear_upsampling_of_the_score_map(fcn32s_at_init):
    variables, logits, score = fcn32s_at_init
    kernel = variables["params"]["upscore_final"]["upsample"]["kernel"]
    np.testing.assert_array_equal(kernel, ops.bilinear_kernel(64, NUM_CLASSES))
    assert score.shape == (1, 3, 4, NUM_CLASSES)
    expected = ops.bilinear_upsample(score, 32)
    # Away from the borders (where bilinear clamps to the edge and the transposed conv sees zeros).
    np.testing.assert_allclose(logits[:, 16:-16, 16:-16], expected[:, 16:-16, 16:-16], rtol=1e-5, atol=1e-5)
    # Everywhere: the transposed convolution with FCN's bilinear kernel, from the score map.
    reference = lax.conv_transpose(
        score, ops.bilinear_kernel(64, NUM_CLASSES), (32, 32), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)


def test_fcn8s_skip_scores_start_at_zero_and_upsamplers_bilinear():
    _, variables = abstract_apply(models.create_model(tiny("fcn8s"), NUM_CLASSES), (1, 32, 32, 3))
    params = variables["params"]
    assert set(params) >= {"score_pool4", "score_pool3", "upscore1", "upscore2", "upscore_final"}
    assert params["upscore1"]["upsample"]["kernel"].shape == (4, 4, NUM_CLASSES, NUM_CLASSES)
    assert params["upscore_final"]["upsample"]["kernel"].shape == (16, 16, NUM_CLASSES, NUM_CLASSES)
    model = models.create_model(tiny("fcn8s"), NUM_CLASSES)
    real = jax.jit(model.init)({"params": rkey(0)}, jnp.zeros((1, 32, 32, 3)))["params"]
    assert not np.any(real["score_pool4"]["kernel"]) and not np.any(real["score_pool3"]["kernel"])
    np.testing.assert_array_equal(real["upscore1"]["upsample"]["kernel"], ops.bilinear_kernel(4, NUM_CLASSES))


def test_segnet_unpools_exactly_where_the_encoder_maxima_were():
    model = models.create_model(dict(name="segnet", base_width=2, depth=2, norm="none"), NUM_CLASSES)
    x = jax.random.normal(rkey(0), (2, 14, 18, 3))  # padded to 16 x 20 inside
    variables = jax.jit(model.init)({"params": rkey(1)}, x)
    _, state = jax.jit(
        lambda v, x: model.apply(
            v, x, capture_intermediates=lambda m, _: m.name in ("block2", "up2"), mutable=["intermediates"]
        )
    )(variables, x)
    enc = np.asarray(state["intermediates"]["encoder"]["block2"]["__call__"][0])  # (2, 8, 10, 4), before pool 2
    up = np.asarray(state["intermediates"]["up2"]["__call__"][0])
    assert up.shape == enc.shape
    n, h, w, c = enc.shape
    cells = enc.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    first_max = cells.argmax(-1)  # first maximum in row-major window order
    expected = np.zeros_like(cells)
    np.put_along_axis(expected, first_max[..., None], cells.max(-1)[..., None], axis=-1)
    expected = expected.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, h, w, c)
    np.testing.assert_array_equal(up, expected)
    assert np.count_nonzero(up) > 0


def test_unet_defaults_are_the_papers():
    _, variables = abstract_apply(models.create_model(tiny("unet"), NUM_CLASSES), (1, 16, 16, 3))
    up = variables["params"]["up2"]["upsample"]
    assert up["kernel"].shape == (2, 2, 8, 4)  # 2x2 up-convolution halving the channels


# --------------------------------------------------------------------------------------------------
# Normalisation and dropout
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (2, 4, 4, 64)])
def test_batch_norm_matches_flax_batch_norm(shape):
    """Training output, running statistics, evaluation output and gradients (x, scale, bias, through a
    ReLU) equal nn.BatchNorm's, on shifted random inputs with repeated values (odd sizes: the row view
    then groups k=35 pixels; 64 channels: k=8)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.round(rng.normal(size=shape) * 2, 1) + 3, jnp.float32)  # ties from rounding
    cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
    params = {
        "scale": jnp.asarray(rng.uniform(0.5, 2, shape[-1:]), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=shape[-1:]), jnp.float32),
    }
    stats = {
        "mean": jnp.asarray(rng.normal(size=shape[-1:]), jnp.float32),
        "var": jnp.asarray(rng.uniform(0.5, 2, shape[-1:]), jnp.float32),
    }
    ours = layers.BatchNorm()
    ref = nn.BatchNorm(momentum=0.9)

    def run(module, kwargs_train, kwargs_eval):
        def loss(p, x):
            y, upd = module.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"], **kwargs_train)
            return jnp.sum(nn.relu(y) * cotangent), (y, upd["batch_stats"])

        (_, (y, new_stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
        y_eval = module.apply({"params": params, "batch_stats": stats}, x, **kwargs_eval)
        return y, new_stats, grads, y_eval

    got = jax.jit(lambda: run(ours, {"train": True}, {"train": False}))()
    want = jax.jit(lambda: run(ref, {"use_running_average": False}, {"use_running_average": True}))()
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def test_batch_norm_statistics_are_synchronised_over_devices():
    cfg = dict(name="unet", base_width=2, depth=1, norm="batch", dropout=0.0)
    x = jax.random.normal(rkey(0), (4, 8, 8, 3)) * 2 + 1
    single = models.create_model(cfg, NUM_CLASSES)
    variables = jax.jit(single.init)({"params": rkey(1)}, x)
    logits, updates = jax.jit(lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)

    synced = models.with_axis_name(single, "devices")
    devices = jax.devices()[:2]
    step = jax.pmap(
        lambda v, xs: synced.apply(v, xs, train=True, mutable=["batch_stats"]),
        axis_name="devices",
        in_axes=(None, 0),
        devices=devices,
    )
    plogits, pupdates = step(variables, x.reshape(2, 2, 8, 8, 3))
    np.testing.assert_allclose(plogits.reshape(logits.shape), logits, rtol=2e-5, atol=2e-5)
    for got, want in zip(jax.tree.leaves(pupdates), jax.tree.leaves(updates), strict=True):
        np.testing.assert_allclose(got[0], want, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(got[1], want, rtol=2e-5, atol=2e-6)

    # Gradients: each device's input gradient is its slice of the single-device one (the batch-norm
    # gradient uses the statistics of the whole batch); parameter gradients sum to the single-device ones.
    cotangent = jax.random.normal(rkey(2), logits.shape)

    def grads(model, variables, x, cot):
        def loss(params, x):
            y, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(y * cot)

        return jax.grad(loss, argnums=(0, 1))(variables["params"], x)

    g_params, g_x = jax.jit(lambda v, x, c: grads(single, v, x, c))(variables, x, cotangent)
    pg_params, pg_x = jax.pmap(
        lambda v, x, c: grads(synced, v, x, c), axis_name="devices", in_axes=(None, 0, 0), devices=devices
    )(variables, x.reshape(2, 2, 8, 8, 3), cotangent.reshape((2, 2) + logits.shape[1:]))
    np.testing.assert_allclose(pg_x.reshape(g_x.shape), g_x, rtol=1e-4, atol=1e-6)
    for got, want in zip(jax.tree.leaves(pg_params), jax.tree.leaves(g_params), strict=True):
        np.testing.assert_allclose(got.sum(0), want, rtol=1e-4, atol=1e-5)


def test_group_norm_and_no_norm_parameters():
    _, group = abstract_apply(models.create_model(tiny("segnet", norm="group", base_width=8), 3), (1, 8, 8, 3))
    assert "gn" in group["params"]["encoder"]["block1"]["norm0"] and "batch_stats" not in group
    _, none = abstract_apply(models.create_model(tiny("segnet", norm="none"), 3), (1, 8, 8, 3))
    encoder = none["params"]["encoder"]
    assert "norm0" not in encoder["block1"] and "bias" in encoder["block1"]["conv0"]
    assert layers.group_count(64) == 16 and layers.group_count(8) == 2 and layers.group_count(6) == 1


def test_unet_dropout_only_in_training():
    model = models.create_model(dict(name="unet", base_width=2, depth=1, norm="none", dropout=0.5), 2)
    x = jax.random.normal(rkey(0), (1, 8, 8, 3))
    variables = jax.jit(model.init)({"params": rkey(1)}, x)
    apply = jax.jit(lambda key, train: model.apply(variables, x, train=train, rngs={"dropout": key}), static_argnums=1)
    a, b = apply(rkey(2), True), apply(rkey(3), True)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(apply(rkey(2), False), apply(rkey(3), False))


# --------------------------------------------------------------------------------------------------
# The convolution module
# --------------------------------------------------------------------------------------------------


def test_conv_equals_flax_conv_with_the_same_parameters():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 9, 11, 5)), jnp.float32)
    ours = layers.Conv(4, 2)
    variables = ours.init(rkey(0), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, nn.Conv(4, (2, 2)).init(rkey(0), x))
    np.testing.assert_allclose(ours.apply(variables, x), nn.Conv(4, (2, 2)).apply(variables, x), rtol=1e-6, atol=1e-6)
