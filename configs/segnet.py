"""SegNet (Badrinarayanan, Kendall & Cipolla 2017) on the embedded dataset.

  segjax-train --config=configs/segnet.py --workdir=runs/segnet
  segjax-train --config=configs/segnet.py:preset=paper --workdir=runs/segnet_paper

Recipe after the paper: max-unpooling with the encoder's pooling indices, batch norm, SGD with momentum 0.9 at a
fixed learning rate, cross-entropy with median-frequency class balancing. Argument options: preset 'small' (the
default; a bare value sets it) or 'paper'; depth and base_width override the preset's.
"""

from segjax.config import load_sibling, parse_arg
from segjax.models import PRESET_NAMES

default = load_sibling(__file__)


def get_config(arg=None):
    options = parse_arg(__file__, arg, preset=PRESET_NAMES, depth=None, base_width=None)
    config = default.get_config()
    config.model.name = "segnet"
    config.model.preset = options.preset
    config.model.depth = options.depth
    config.model.base_width = options.base_width
    config.model.norm = "batch"
    config.loss.class_weighting = "median_frequency"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "constant"
    config.schedule.warmup_steps = 100
    config.num_train_steps = 3000
    return config
