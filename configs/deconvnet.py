"""DeconvNet (Noh, Hong & Han 2015) on the embedded dataset: SegNet's recipe with DeconvNet's decoder.

  segjax-train --config=configs/deconvnet.py --workdir=runs/deconvnet

Built on configs/segnet.py (same argument options, batch norm, SGD with momentum 0.9 and weight decay 5e-4); what
differs: the mirrored decoder of unpooling + (transposed) convolutions, no class balancing, a lower learning rate
with polynomial decay.
"""

from segjax.config import load_sibling

segnet = load_sibling(__file__, "segnet")


def get_config(arg=None):
    config = segnet.get_config(arg)
    config.model.name = "deconvnet"
    config.loss.class_weighting = "none"
    config.optimizer.learning_rate = 0.05
    config.schedule.name = "poly"
    return config
