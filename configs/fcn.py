"""FCN (Long, Shelhamer & Darrell 2015) on the embedded dataset.

  segjax-train --config=configs/fcn.py:8s --workdir=runs/fcn8s
  segjax-train --config=configs/fcn.py:stride=32s,preset=paper --workdir=runs/fcn32s_paper

Argument options: stride '8s' (the default; a bare value sets it), '16s' or '32s'; preset 'small' or 'paper';
base_width. Recipe after the paper: SGD with momentum, weight decay, a bilinear-initialised learned upsampling (the
paper's 'deconvolution'), with the polynomial decay FCN's successors (DeepLab) use instead of a fixed rate. The
paper's networks have no normalisation; the 'small' preset trains from scratch, so it uses batch norm.
"""

from segjax.config import load_sibling, parse_arg
from segjax.models import PRESET_NAMES

default = load_sibling(__file__)


def get_config(arg=None):
    options = parse_arg(__file__, arg, stride=("8s", "16s", "32s"), preset=PRESET_NAMES, base_width=None)
    config = default.get_config()
    config.model.name = f"fcn{options.stride}"
    config.model.preset = options.preset
    config.model.base_width = options.base_width
    config.model.norm = "batch"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4 if options.stride == "32s" else 2e-4  # the paper's values
    config.schedule.name = "poly"
    config.schedule.warmup_steps = 100
    config.num_train_steps = 3000
    return config
