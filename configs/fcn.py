"""FCN (Long, Shelhamer & Darrell 2015) on the embedded dataset. Arg: the output stride, '32s' | '16s' | '8s'.

  segjax-train --config=configs/fcn.py:8s --workdir=runs/fcn8s
  segjax-train --config=configs/fcn.py:32s --config.model.preset=paper --workdir=runs/fcn32s_paper

Recipe after the paper: SGD with momentum, weight decay, a bilinear-initialised learned upsampling (the paper's
'deconvolution'), with the polynomial decay FCN's successors (DeepLab) use instead of a fixed rate. The paper's
networks have no normalisation; the 'small' preset trains from scratch, so it uses batch norm.
"""

from segjax.config_utils import load_sibling

default = load_sibling(__file__)

VARIANTS = ("32s", "16s", "8s")


def get_config(arg="8s"):
    arg = arg or "8s"
    if arg not in VARIANTS:
        raise ValueError(f"configs/fcn.py variant {arg!r} is not one of {VARIANTS}.")
    config = default.get_config()
    config.model.name = f"fcn{arg}"
    config.model.preset = "small"
    config.model.norm = "batch"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4 if arg == "32s" else 2e-4  # the paper's values
    config.schedule.name = "poly"
    config.schedule.warmup_steps = 100
    config.num_train_steps = 3000
    return config
