"""Encoder-decoder segmentation networks whose upsampling operator is a config choice.

`create_model(model_config, num_classes)` builds FCN-32s/16s/8s, SegNet, U-Net, DeconvNet or the networks of SegNet's
decoder study (SegNet-Basic, FCN-Basic, FCN-Basic-NoAddition, Bilinear-Interpolation) from the
model section of a config (see `default_model_config`); `MODELS` maps the config names to the classes.
"""

import jax.numpy as jnp

from segjax.models.base import EncoderDecoder
from segjax.models.basic import BilinearBasic, FCNBasic, FCNBasicNoAddition, SegNetBasic
from segjax.models.config import PRESET_NAMES, PRESETS, default_model_config, resolve
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
}


def create_model(model_config, num_classes: int, *, axis_name: str | None = None, dtype=jnp.float32) -> EncoderDecoder:
    """The network named by `model_config.name`, with the config's preset, widths, norm, dropout and
    upsampling operator. Raises a ValueError for unknown values or a model/operator pair that cannot work.

    `axis_name`: batch-norm statistics are averaged over this pmap / shard_map axis.
    `dtype`: computation dtype (parameters stay float32; logits are returned as float32).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    resolved = resolve(model_config)
    kwargs = dict(resolved.kwargs, norm=NormFactory(resolved.kwargs["norm"], axis_name, dtype))
    model = MODELS[resolved.name](num_classes=num_classes, dtype=dtype, **kwargs)
    model.check()
    return model


__all__ = [
    "MODELS",
    "PRESET_NAMES",
    "PRESETS",
    "Conv",
    "DeconvNet",
    "BilinearBasic",
    "EncoderDecoder",
    "FCNBasic",
    "FCNBasicNoAddition",
    "FCN",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "SegNet",
    "SegNetBasic",
    "UNet",
    "conv2d",
    "create_model",
    "default_model_config",
]
