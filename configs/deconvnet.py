"""DeconvNet (Noh, Hong & Han 2015) on the embedded dataset. Arg: 'small' (default) | 'paper'.

  segjax-train --config=configs/deconvnet.py --workdir=runs/deconvnet

Recipe after the paper: a mirrored decoder of unpooling + (transposed) convolutions, batch norm after every
convolution, SGD with momentum 0.9, weight decay 5e-4.
"""

from segjax.config_utils import load_sibling

default = load_sibling(__file__)

VARIANTS = ("small", "paper")


def get_config(arg="small"):
    arg = arg or "small"
    if arg not in VARIANTS:
        raise ValueError(f"configs/deconvnet.py variant {arg!r} is not one of {VARIANTS}.")
    config = default.get_config()
    config.model.name = "deconvnet"
    config.model.preset = arg
    config.model.norm = "batch"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "poly"
    config.schedule.warmup_steps = 100
    config.num_train_steps = 3000
    return config
