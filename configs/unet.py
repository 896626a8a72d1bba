"""U-Net (Ronneberger et al. 2015) on the embedded dataset. Arg: 'small' (CPU-sized, default) | 'paper' widths.

segjax-train --config=configs/unet.py:small --workdir=runs/unet
segjax-train --config=configs/unet.py:small --config.model.upsample.method=resize_conv --workdir=runs/unet_rc
"""

from segjax.config_utils import load_sibling

default = load_sibling(__file__)

VARIANTS = ("small", "paper")


def get_config(arg="small"):
    arg = arg or "small"
    if arg not in VARIANTS:
        raise ValueError(f"configs/unet.py variant {arg!r} is not one of {VARIANTS}.")
    config = default.get_config()
    config.model.name = "unet"
    config.model.preset = arg
    config.model.norm = "batch"  # the paper has none; batch norm makes the small net train in minutes
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3 if arg == "small" else 1e-3
    config.schedule.name = "warmup_cosine"
    config.num_train_steps = 2000
    return config
