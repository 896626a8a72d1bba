"""Quickstart: a small U-Net on the embedded synthetic dataset, a few minutes on a laptop CPU.

  segjax-train --config=configs/quickstart.py --workdir=runs/quickstart
  segjax-eval --workdir=runs/quickstart
"""
from segjax.config_utils import load_sibling

unet = load_sibling(__file__, "unet")


def get_config(arg=None):
    del arg
    config = unet.get_config("small")
    config.num_train_steps = 600
    config.batch_size = 16
    config.eval_batch_size = 50
    config.optimizer.learning_rate = 3e-3
    config.schedule.warmup_steps = 50
    config.log_every_steps = 25
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    return config
