"""The model section of a config: its defaults, the width/depth presets of each network, and the
resolution of a config into the arguments of a model class (with clear errors for bad values)."""

import dataclasses

import ml_collections
from ml_collections import config_dict

from segjax import ops
from segjax.models.layers import NORMS

FAMILIES = {
    "fcn32s": "fcn",
    "fcn16s": "fcn",
    "fcn8s": "fcn",
    "segnet": "segnet",
    "unet": "unet",
    "deconvnet": "deconvnet",
    "segnet_basic": "segnet_basic",
    "fcn_basic": "segnet_basic",
    "fcn_basic_noaddition": "segnet_basic",
    "bilinear_basic": "segnet_basic",
}
PRESET_NAMES = ("small", "paper")

# Per family and preset: base_width (channels of the first level), depth (number of 2x poolings),
# convs (3x3 convs per encoder level, cycled if depth is longer), and for the networks with
# VGG's fully connected layers turned into convolutions: fc_width and fc_kernel.
# 'paper' is the published network: VGG-16 (64..512 channels, 2-2-3-3-3 convs, fc 4096 with a 7x7
# fc6) for FCN, SegNet and DeconvNet; U-Net 64..1024 channels over 4 poolings, 2 convs per level.
# 'small' networks train in minutes on a CPU.
PRESETS = {
    "fcn": {
        "paper": dict(base_width=64, depth=5, convs=(2, 2, 3, 3, 3), fc_width=4096, fc_kernel=7),
        "small": dict(base_width=16, depth=5, convs=(1, 1, 2, 2, 2), fc_width=128, fc_kernel=3),
    },
    "segnet": {
        "paper": dict(base_width=64, depth=5, convs=(2, 2, 3, 3, 3)),
        "small": dict(base_width=16, depth=3, convs=(2,)),
    },
    "unet": {
        "paper": dict(base_width=64, depth=4, convs=(2,)),
        "small": dict(base_width=16, depth=3, convs=(2,)),
    },
    "deconvnet": {
        "paper": dict(base_width=64, depth=5, convs=(2, 2, 3, 3, 3), fc_width=4096, fc_kernel=7),
        "small": dict(base_width=16, depth=3, convs=(2,), fc_width=128, fc_kernel=3),
    },
    # SegNet's decoder study (segjax.models.basic): 4 levels of one 7x7 convolution, 64 channels in the paper
    "segnet_basic": {
        "paper": dict(base_width=64, depth=4, convs=(1,)),
        "small": dict(base_width=16, depth=4, convs=(1,)),
    },
}

# What `upsample.method = None` and `dropout = None` mean: the paper's choice (by family, or by name where the networks
# of a family differ).
DEFAULT_METHOD = {
    "fcn": "transposed",
    "segnet": "max_unpool",
    "unet": "transposed",
    "deconvnet": "max_unpool",
    "segnet_basic": "max_unpool",
    "fcn_basic": "transposed",
    "fcn_basic_noaddition": "transposed",
    "bilinear_basic": "bilinear",
}
# FCN: dropout 0.5 after fc6 and fc7; U-Net: 0.5 at the end of the contracting path; DeconvNet keeps
# VGG's fc dropout; SegNet none (its Bayesian variant uses 0.5 around the deepest blocks).
DEFAULT_DROPOUT = {"fcn": 0.5, "segnet": 0.0, "unet": 0.5, "deconvnet": 0.5, "segnet_basic": 0.0}
# Paper weight init of the transposed convolutions: FCN's (and FCN-Basic's) bilinear, the others the default.
DEFAULT_TRANSPOSED_INIT = {
    "fcn": "bilinear",
    "segnet": None,
    "unet": None,
    "deconvnet": None,
    "segnet_basic": None,
    "fcn_basic": "bilinear",
    "fcn_basic_noaddition": "bilinear",
}


def default_model_config() -> ml_collections.ConfigDict:
    """The model section of a config with its defaults (a small U-Net with its paper decoder)."""
    return ml_collections.ConfigDict(
        {
            "name": "unet",  # one of MODELS: fcn32s/16s/8s, segnet, unet, deconvnet, segnet_basic, fcn_basic, ...
            "preset": "small",  # 'small' (CPU-sized) or 'paper' widths and depth
            "base_width": config_dict.placeholder(int),  # channels of the first level (None: the preset's)
            "depth": config_dict.placeholder(int),  # number of 2x poolings (None: the preset's; FCN is fixed at 5)
            "norm": "batch",  # 'none' (FCN, U-Net papers), 'batch' (SegNet paper) or 'group'
            "dropout": config_dict.placeholder(float),  # None: the paper's (FCN, U-Net 0.5; SegNet 0)
            "encoder": "vgg",  # 'vgg' (every network) or 'resnet50' (unet, fcn*; base_width 64 is torchvision's)
            "output_stride": config_dict.placeholder(int),  # resnet50: 32 (None), 16 or 8 (dilated, FCN only)
            # A local torchvision .pth or timm .safetensors file loaded into the encoder before training (None: none)
            "encoder_weights": config_dict.placeholder(str),
            # A finished segjax-train workdir whose latest checkpoint starts this run: every parameter and batch
            # statistic with the same name and shape is copied (FCN's staged training: 16s from 32s), None: none
            "init_from": config_dict.placeholder(str),
            "skips": True,  # U-Net: concatenate the encoder's features; False: a plain encoder-decoder (ablations)
            "upsample": {
                "method": config_dict.placeholder(str),  # one of segjax.ops.METHODS; None: the paper's decoder
                "kernel_size": config_dict.placeholder(int),  # of the learned methods; None: their default
                "init": config_dict.placeholder(str),  # transposed: default|bilinear; pixel_shuffle: default|icnr
                "resize": "nearest",  # resize_conv: 'nearest'|'bilinear'
            },
        }
    )


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    name: str
    kwargs: dict


def _get(cfg, key, default=None):
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


_KNOWN_KEYS = {
    "name",
    "preset",
    "base_width",
    "depth",
    "norm",
    "dropout",
    "skips",
    "upsample",
    "encoder",
    "output_stride",
    "encoder_weights",
    "init_from",
}
_KNOWN_UPSAMPLE_KEYS = {"method", "kernel_size", "init", "resize"}


def _positive_int(value, what: str, name: str):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"model {name}: {what} must be a positive int or None, got {value!r}.")
    return value


def resolve(model_config) -> ResolvedModel:
    """Turns a model config (ConfigDict or dict) into (name, keyword arguments of the model class)."""
    keys = set(model_config.keys())
    unknown = keys - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"Unknown model config keys {sorted(unknown)}; valid: {sorted(_KNOWN_KEYS)}.")
    name = _get(model_config, "name", "unet")
    if name not in FAMILIES:
        raise ValueError(f"Unknown model {name!r}; valid: {', '.join(FAMILIES)}.")
    family = FAMILIES[name]
    preset_name = _get(model_config, "preset", "small")
    if preset_name not in PRESET_NAMES:
        raise ValueError(f"model {name}: unknown preset {preset_name!r}; valid: {', '.join(PRESET_NAMES)}.")
    preset = PRESETS[family][preset_name]
    base_width = _positive_int(_get(model_config, "base_width"), "base_width", name) or preset["base_width"]
    depth = _positive_int(_get(model_config, "depth"), "depth", name) or preset["depth"]
    # Which encoder fits which network is the model classes' check (create_model runs it).
    encoder = _get(model_config, "encoder", "vgg")
    output_stride = _positive_int(_get(model_config, "output_stride"), "output_stride", name) or 32
    if encoder == "resnet50":
        if _get(model_config, "depth") not in (None, 5):
            raise ValueError(f"model {name}: the ResNet-50 encoder has depth 5 (stride 32); set depth to None.")
        depth = 5
    weights = _get(model_config, "encoder_weights")
    if weights is not None and not isinstance(weights, str):
        raise ValueError(f"model {name}: encoder_weights must be a file path or None, got {weights!r}.")
    init_from = _get(model_config, "init_from")
    if init_from is not None and not isinstance(init_from, str):
        raise ValueError(f"model {name}: init_from must be a segjax-train workdir or None, got {init_from!r}.")
    if init_from is not None and weights is not None:
        raise ValueError(
            f"model {name}: encoder_weights={weights!r} and init_from={init_from!r} are both set; a run starts from "
            "one of them: set the other to None."
        )
    if family == "fcn" and depth != 5:
        raise ValueError(
            f"model {name}: depth is fixed at 5 (the output stride 32 is in the name), got "
            f"depth={depth}; use unet, segnet or deconvnet for other depths."
        )
    norm = _get(model_config, "norm", "batch")
    if norm not in NORMS:
        raise ValueError(f"model {name}: unknown norm {norm!r}; valid: {', '.join(NORMS)}.")
    dropout = _get(model_config, "dropout")
    if dropout is None:
        dropout = DEFAULT_DROPOUT[family]
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"model {name}: dropout must be a rate in [0, 1) or None, got {dropout!r}.")

    up = _get(model_config, "upsample") or {}
    unknown = set(up.keys()) - _KNOWN_UPSAMPLE_KEYS
    if unknown:
        raise ValueError(f"Unknown model.upsample keys {sorted(unknown)}; valid: {sorted(_KNOWN_UPSAMPLE_KEYS)}.")
    method = _get(up, "method") or DEFAULT_METHOD.get(name, DEFAULT_METHOD[family])
    init = _get(up, "init")
    if init is None and method == "transposed":
        init = DEFAULT_TRANSPOSED_INIT.get(name, DEFAULT_TRANSPOSED_INIT[family])
    try:
        upsample = ops.UpsampleSpec(method, _get(up, "kernel_size"), init, _get(up, "resize", "nearest"))
    except ValueError as e:
        raise ValueError(f"model {name}: {e}") from None
    convs = preset["convs"]
    kwargs = dict(
        base_width=base_width,
        depth=depth,
        convs=tuple(convs[i % len(convs)] for i in range(depth)),
        norm=norm,
        dropout=float(dropout),
        upsample=upsample,
    )
    kwargs.update(encoder=encoder, output_stride=output_stride)
    if "fc_width" in preset:
        kwargs.update(fc_width=preset["fc_width"], fc_kernel=preset["fc_kernel"])
    skips = _get(model_config, "skips", True)
    if not isinstance(skips, bool):
        raise ValueError(f"model {name}: skips must be True or False, got {skips!r}.")
    if family == "unet":
        kwargs["skips"] = skips
    elif not skips:
        raise ValueError(
            f"model {name}: only U-Net's skip connections can be switched off (skips=False); FCN's skips are "
            "chosen by its name (fcn32s has none), SegNet and DeconvNet pass pooling indices, not features."
        )
    if family == "fcn":
        kwargs.pop("depth")
    return ResolvedModel(name, kwargs)
