"""Encoder-decoder segmentation networks whose upsampling operator is a config choice.

`create_model(spec, num_classes)` builds FCN-32s/16s/8s, SegNet, U-Net, DeconvNet, DeepLabv3/v3+ or the networks of
SegNet's decoder study (SegNet-Basic, FCN-Basic, FCN-Basic-NoAddition, Bilinear-Interpolation) from a `ModelSpec`, the
model section of a config read once (`ModelSpec.from_config`, see `default_model_config`); `MODELS` maps the config
names to the classes.
"""

import dataclasses

import jax.numpy as jnp
import ml_collections

from segjax.models.base import EncoderDecoder
from segjax.models.basic import BilinearBasic, FCNBasic, FCNBasicNoAddition, SegNetBasic
from segjax.models.config import PRESET_NAMES, PRESETS, ModelSpec, default_model_config
from segjax.models.deeplab import DeepLab, DeepLabV3, DeepLabV3Plus
from segjax.models.fcn import FCN, FCN8s, FCN16s, FCN32s
from segjax.models.layers import Conv, NormFactory, conv2d
from segjax.models.segnet import DeconvNet, SegNet
from segjax.models.unet import UNet

MODELS = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "segnet": SegNet,
    "unet": UNet,
    "deconvnet": DeconvNet,
    "segnet_basic": SegNetBasic,
    "fcn_basic": FCNBasic,
    "fcn_basic_noaddition": FCNBasicNoAddition,
    "bilinear_basic": BilinearBasic,
    "deeplabv3": DeepLabV3,
    "deeplabv3plus": DeepLabV3Plus,
}


def create_model(
    model: ModelSpec | ml_collections.ConfigDict | dict, num_classes: int, *, dtype=jnp.float32
) -> EncoderDecoder:
    """The network a `ModelSpec` describes (or a model config section, read by `ModelSpec.from_config`), with
    `num_classes` outputs. Raises a ValueError for unknown values or a model/operator pair that cannot work.

    The network is plain: batch norm uses this device's statistics; the steps that run it under a data-parallel
    axis bind that axis (`with_axis_name`). `dtype`: computation dtype (parameters stay float32; logits are
    returned as float32).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    spec = model if isinstance(model, ModelSpec) else ModelSpec.from_config(model)
    norm = dataclasses.replace(spec.norm, dtype=dtype)
    network = MODELS[spec.name](num_classes=num_classes, norm=norm, dtype=dtype, **spec.module_arguments())
    network.check()
    return network


def with_axis_name(model, axis_name: str | None):
    """`model` with its batch-norm statistics averaged over `axis_name` (a pmap / shard_map axis): flax imagenet's
    `partial(BatchNorm, axis_name=...)`, bound where a step runs under the axis. Models without a `NormFactory`
    (and axis_name=None) are returned as they are. Parameters and their names do not change."""
    norm = getattr(model, "norm", None)
    if axis_name is None or not isinstance(norm, NormFactory) or norm.axis_name == axis_name:
        return model
    return model.clone(norm=dataclasses.replace(norm, axis_name=axis_name))


__all__ = [
    "MODELS",
    "PRESET_NAMES",
    "PRESETS",
    "Conv",
    "DeconvNet",
    "DeepLab",
    "DeepLabV3",
    "DeepLabV3Plus",
    "BilinearBasic",
    "EncoderDecoder",
    "FCNBasic",
    "FCNBasicNoAddition",
    "FCN",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "ModelSpec",
    "SegNet",
    "SegNetBasic",
    "UNet",
    "conv2d",
    "create_model",
    "with_axis_name",
    "default_model_config",
]
