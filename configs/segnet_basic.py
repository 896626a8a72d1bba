"""SegNet's decoder study (Badrinarayanan et al. 2017, Table 1) on the embedded dataset: SegNet-Basic's encoder (4
levels of one 7x7 convolution, batch norm, max pooling) with one of the paper's decoders.

  segjax-train --config=configs/segnet_basic.py --workdir=runs/segnet_basic
  segjax-train --config=configs/segnet_basic.py:decoder=fcn --workdir=runs/fcn_basic

Argument options: decoder 'segnet' (max-unpooling with the encoder's indices, the default), 'fcn' (FCN-Basic),
'fcn_noaddition' (FCN-Basic-NoAddition) or 'bilinear' (no learned decoder); preset 'small' (16 channels, the default)
or 'paper' (64). SegNet's recipe (configs/segnet.py): SGD with momentum 0.9, a fixed learning rate, median-frequency
class balancing (`--config.loss.class_weighting=none` gives the paper's natural-frequency rows).
"""

from segjax.config import load_sibling, parse_arg
from segjax.models import PRESET_NAMES

segnet = load_sibling(__file__, "segnet")
MODEL_NAMES = {
    "segnet": "segnet_basic",
    "fcn": "fcn_basic",
    "fcn_noaddition": "fcn_basic_noaddition",
    "bilinear": "bilinear_basic",
}


def get_config(arg=None):
    options = parse_arg(__file__, arg, decoder=tuple(MODEL_NAMES), preset=PRESET_NAMES, base_width=None)
    config = segnet.get_config(f"preset={options.preset}")
    config.model.name = MODEL_NAMES[options.decoder]
    config.model.base_width = options.base_width
    return config
