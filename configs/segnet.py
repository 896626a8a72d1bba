"""SegNet (Badrinarayanan, Kendall & Cipolla 2017) on the embedded dataset. Arg: 'small' (default) | 'paper'.

  segjax-train --config=configs/segnet.py --workdir=runs/segnet

Recipe after the paper: max-unpooling with the encoder's pooling indices, batch norm, SGD with momentum 0.9 at a
fixed learning rate, cross-entropy with median-frequency class balancing.
"""

from segjax.config_utils import load_sibling

default = load_sibling(__file__)

VARIANTS = ("small", "paper")


def get_config(arg="small"):
    arg = arg or "small"
    if arg not in VARIANTS:
        raise ValueError(f"configs/segnet.py variant {arg!r} is not one of {VARIANTS}.")
    config = default.get_config()
    config.model.name = "segnet"
    config.model.preset = arg
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
