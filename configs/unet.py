"""U-Net (Ronneberger et al. 2015) on the embedded dataset.

  segjax-train --config=configs/unet.py:small --workdir=runs/unet
  segjax-train --config=configs/unet.py:preset=small,depth=3 --workdir=runs/unet_d3
  segjax-train --config=configs/unet.py --config.model.upsample.method=resize_conv --workdir=runs/unet_rc

Argument options: preset 'small' (CPU-sized, the default; a bare value sets it) or 'paper' widths; depth and
base_width override the preset's.
"""

from segjax.config import load_sibling, parse_arg
from segjax.models import PRESET_NAMES

default = load_sibling(__file__)


def get_config(arg=None):
    options = parse_arg(__file__, arg, preset=PRESET_NAMES, depth=None, base_width=None)
    config = default.get_config()
    config.model.name = "unet"
    config.model.preset = options.preset
    config.model.depth = options.depth
    config.model.base_width = options.base_width
    config.model.norm = "batch"  # the paper has none; batch norm makes the small net train in minutes
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3 if options.preset == "small" else 1e-3
    config.schedule.name = "warmup_cosine"
    config.num_train_steps = 2000
    return config
