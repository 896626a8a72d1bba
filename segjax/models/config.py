"""The model section of a config: its defaults, the width/depth presets of each network, and `ModelSpec`, the section
read once into the arguments of a model class (with clear errors for bad values)."""

import dataclasses

import ml_collections
from ml_collections import config_dict

from segjax import ops
from segjax.models.layers import NormFactory

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
    "deeplabv3": "deeplab",
    "deeplabv3plus": "deeplab",
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
    # DeepLab: ResNet's stem width (64: ResNet-50/101, 256 channels in ASPP); depth and convs are the ResNet's.
    "deeplab": {
        "paper": dict(base_width=64, depth=5, convs=(1,)),
        "small": dict(base_width=16, depth=5, convs=(1,)),
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
    "deeplab": "bilinear",
}
# FCN: dropout 0.5 after fc6 and fc7; U-Net: 0.5 at the end of the contracting path; DeconvNet keeps
# VGG's fc dropout; SegNet none (its Bayesian variant uses 0.5 around the deepest blocks).
# DeepLab: 0.1 after ASPP's projection (the papers' released code; torchvision's ASPP has 0.5).
DEFAULT_DROPOUT = {"fcn": 0.5, "segnet": 0.0, "unet": 0.5, "deconvnet": 0.5, "segnet_basic": 0.0, "deeplab": 0.1}
# Paper weight init of the transposed convolutions: FCN's (and FCN-Basic's) bilinear, the others the default.
DEFAULT_TRANSPOSED_INIT = {
    "fcn": "bilinear",
    "segnet": None,
    "unet": None,
    "deconvnet": None,
    "segnet_basic": None,
    "fcn_basic": "bilinear",
    "fcn_basic_noaddition": "bilinear",
    "deeplab": "bilinear",
}
# What `output_stride = None` means: 32 (no dilation) but for DeepLab, whose papers train at 16.
DEFAULT_OUTPUT_STRIDE = {"deeplab": 16}
# DeepLab's encoders (segjax.models.deeplab); the other networks take segjax.models.encoder.ENCODERS.
RESNET_ENCODERS = ("resnet50", "resnet101")


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
            # 'vgg' (every network; deeplab*: means resnet50), 'resnet50' (unet, fcn*, deeplab*; base_width 64 is
            # torchvision's) or 'resnet101' (deeplab*)
            "encoder": "vgg",
            # ResNet: 32 (None; deeplab*: 16), 16 or 8 (dilated; FCN and DeepLab only)
            "output_stride": config_dict.placeholder(int),
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


def _family(name) -> str:
    if name not in FAMILIES:
        raise ValueError(f"Unknown model {name!r}; valid: {', '.join(FAMILIES)}.")
    return FAMILIES[name]


def _positive_int(value, what: str, name: str):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"model {name}: {what} must be a positive int or None, got {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model section of a config, read once: the network's name and the arguments of its class with every
    None resolved (the preset's widths and depth, the paper's dropout and decoder), validated here and nowhere else
    (which operator or encoder a network can use is its class's `check`, run by `create_model`). Frozen and
    hashable; `from_config` reads a config section, `segjax.models.create_model` builds the network."""

    name: str
    base_width: int
    depth: int
    convs: tuple[int, ...]  # 3x3 convolutions of each encoder level (len == depth)
    norm: NormFactory  # its kind only: create_model sets the dtype, the steps the data-parallel axis
    dropout: float
    upsample: ops.UpsampleSpec
    encoder: str = "vgg"
    output_stride: int = 32
    skips: bool = True
    fc_width: int | None = None  # networks with VGG's fully connected layers as convolutions
    fc_kernel: int | None = None
    encoder_weights: str | None = None  # what a fresh run starts from (segjax.run.initial_weights)
    init_from: str | None = None

    def __post_init__(self):
        name, family = self.name, _family(self.name)
        for what in ("base_width", "depth", "output_stride"):
            _positive_int(getattr(self, what), what, name)
        if family == "fcn" and self.depth != 5:
            raise ValueError(
                f"model {name}: depth is fixed at 5 (the output stride 32 is in the name), got "
                f"depth={self.depth}; use unet, segnet or deconvnet for other depths."
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"model {name}: dropout must be a rate in [0, 1) or None, got {self.dropout!r}.")
        if not isinstance(self.skips, bool):
            raise ValueError(f"model {name}: skips must be True or False, got {self.skips!r}.")
        if family != "unet" and not self.skips:
            raise ValueError(
                f"model {name}: only U-Net's skip connections can be switched off (skips=False); FCN's skips are "
                "chosen by its name (fcn32s has none), SegNet and DeconvNet pass pooling indices, not features."
            )
        if self.encoder_weights is not None and not isinstance(self.encoder_weights, str):
            raise ValueError(
                f"model {name}: encoder_weights must be a file path or None, got {self.encoder_weights!r}."
            )
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ValueError(f"model {name}: init_from must be a segjax-train workdir or None, got {self.init_from!r}.")
        if self.init_from is not None and self.encoder_weights is not None:
            raise ValueError(
                f"model {name}: encoder_weights={self.encoder_weights!r} and init_from={self.init_from!r} are both "
                "set; a run starts from one of them: set the other to None."
            )
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "convs", tuple(self.convs))

    @property
    def family(self) -> str:
        return FAMILIES[self.name]

    @classmethod
    def from_config(cls, section) -> "ModelSpec":
        """The spec of a model section (ConfigDict or dict; keys it leaves out take `default_model_config`'s
        values); ValueError naming an unknown key or a bad value and the valid ones."""
        defaults = default_model_config().to_dict()
        values = section.to_dict() if isinstance(section, ml_collections.ConfigDict) else dict(section)
        unknown = set(values) - set(defaults)
        if unknown:
            raise ValueError(f"Unknown model config keys {sorted(unknown)}; valid: {sorted(defaults)}.")
        up = dict(values.pop("upsample", None) or {})
        unknown = set(up) - set(defaults["upsample"])
        if unknown:
            raise ValueError(f"Unknown model.upsample keys {sorted(unknown)}; valid: {sorted(defaults['upsample'])}.")
        c = {**defaults, **values}
        up = {**defaults["upsample"], **up}
        name = c["name"]
        family = _family(name)
        if c["preset"] not in PRESET_NAMES:
            raise ValueError(f"model {name}: unknown preset {c['preset']!r}; valid: {', '.join(PRESET_NAMES)}.")
        preset = PRESETS[family][c["preset"]]
        depth = _positive_int(c["depth"], "depth", name) or preset["depth"]
        if family == "deeplab" and c["encoder"] == "vgg":  # the section's default: DeepLabv3 has no VGG variant
            c["encoder"] = "resnet50"
        if family == "deeplab" and c["encoder"] not in RESNET_ENCODERS:
            raise ValueError(
                f"model {name}: encoder={c['encoder']!r} cannot work; DeepLab is built on a dilated ResNet: set "
                f"model.encoder to one of {', '.join(RESNET_ENCODERS)}."
            )
        if c["encoder"] == "resnet101" and family != "deeplab":
            raise ValueError(
                f"model {name}: encoder 'resnet101' is DeepLab's (deeplabv3, deeplabv3plus); use 'resnet50' or 'vgg'."
            )
        if c["encoder"] in RESNET_ENCODERS:
            if c["depth"] not in (None, 5):
                raise ValueError(f"model {name}: the ResNet encoders have depth 5 (stride 32); set depth to None.")
            depth = 5
        method = up["method"] or DEFAULT_METHOD.get(name, DEFAULT_METHOD[family])
        init = up["init"]
        if init is None and method == "transposed":
            init = DEFAULT_TRANSPOSED_INIT.get(name, DEFAULT_TRANSPOSED_INIT[family])
        try:  # the specs validate themselves; the message gets the model's name
            upsample = ops.UpsampleSpec(method, up["kernel_size"], init, up["resize"])
            norm = NormFactory(c["norm"])
        except ValueError as e:
            raise ValueError(f"model {name}: {e}") from None
        convs = preset["convs"]
        return cls(
            name=name,
            base_width=_positive_int(c["base_width"], "base_width", name) or preset["base_width"],
            depth=depth,
            convs=tuple(convs[i % len(convs)] for i in range(depth)),
            norm=norm,
            dropout=DEFAULT_DROPOUT[family] if c["dropout"] is None else c["dropout"],
            upsample=upsample,
            encoder=c["encoder"],
            output_stride=_positive_int(c["output_stride"], "output_stride", name)
            or DEFAULT_OUTPUT_STRIDE.get(family, 32),
            skips=c["skips"],
            fc_width=preset.get("fc_width"),
            fc_kernel=preset.get("fc_kernel"),
            encoder_weights=c["encoder_weights"],
            init_from=c["init_from"],
        )

    def module_arguments(self) -> dict:
        """The keyword arguments of the network's class (MODELS[name]), but for num_classes, norm and dtype."""
        arguments = dict(
            base_width=self.base_width,
            convs=self.convs,
            dropout=self.dropout,
            upsample=self.upsample,
            encoder=self.encoder,
            output_stride=self.output_stride,
        )
        if self.family not in ("fcn", "deeplab"):  # their depth is fixed by their class (DeepLab's by its ResNet)
            arguments["depth"] = self.depth
        if self.fc_width is not None:
            arguments.update(fc_width=self.fc_width, fc_kernel=self.fc_kernel)
        if self.family == "unet":
            arguments["skips"] = self.skips
        return arguments
