"""FCN (Long, Shelhamer & Darrell 2015) on the embedded dataset.

  segjax-train --config=configs/fcn.py:8s --workdir=runs/fcn8s
  segjax-train --config=configs/fcn.py:stride=32s,preset=paper --workdir=runs/fcn32s_paper

Argument options: stride '8s' (the default; a bare value sets it), '16s' or '32s'; preset 'small' or 'paper';
base_width. Recipe after the paper: SGD with momentum, weight decay, a bilinear-initialised learned upsampling (the
paper's 'deconvolution'), with the polynomial decay FCN's successors (DeepLab) use instead of a fixed rate. The
paper's networks have no normalisation; the 'small' preset trains from scratch, so it uses batch norm.

Recipe '8s_voc' (`configs/fcn.py:8s_voc`, no further options; override keys on the command line): the released
all-at-once FCN-8s on a prepared `segjax-prepare voc_aug` folder, see docs/datasets.md.
"""

from segjax.config import load_sibling, parse_arg
from segjax.data.catalog import VOC_CLASSES
from segjax.models import PRESET_NAMES

default = load_sibling(__file__)


def get_config(arg=None):
    if arg in RECIPES:
        return RECIPES[arg]()
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


# A typical VOC image, 500x375: the pixels a summed loss adds up, which a mean loss divides its gradient by.
VOC_PIXELS = 500 * 375


def voc_8s():
    """FCN-8s VGG16 trained all at once on VOC, as the reference release (fcn.berkeleyvision.org voc-fcn8s-atonce,
    Shelhamer, Long & Darrell, PAMI 2016): SGD momentum 0.99, batch 1, a fixed rate of 1e-10 on the unnormalised
    (summed) loss, weight decay 5e-4 (not on biases, whose rate is doubled), 300k iterations, the bilinear
    upsampling fixed, dropout 0.5, no normalisation, no augmentation. segjax's loss is the mean over labelled
    pixels, so the rate here is 1e-10 times a typical image's pixel count (VOC_PIXELS): about 1.9e-5. Set
    data.folder.root and model.encoder_weights (torchvision vgg16 .pth) on the command line.

    Published mean IU: 65.4 on seg11valid (VOC 2011 val less SBD train, 736 images) for this at-once network
    (the release's README); the CVPR 2015 paper's staged FCN-8s, trained with lower momentum: 62.7 on VOC 2011 test,
    62.2 on VOC 2012 test. Deviations: train is voc_aug's train_aug (10582; the release trains on SBD train alone),
    validation is VOC 2012 val (1449), not seg11valid; fixed 500x500 crops padded with ignore, not whole images;
    'SAME' padding, not the 100-pixel padding (segjax/models/fcn.py); the release scales the pool4 and pool3 skips
    by 0.01 and 0.0001, here their scores start at zero instead (the paper's staged initialisation).
    """
    config = get_config("stride=8s,preset=paper")
    config.model.norm = "none"
    config.model.dropout = 0.5
    config.data.name = "folder"
    config.data.folder.num_classes = len(VOC_CLASSES)
    config.data.folder.class_names = VOC_CLASSES
    config.data.ignore_index = 255
    config.data.train_split, config.data.eval_split = "train", "validation"
    config.data.crop_size = 500
    config.data.scale_range = (1.0, 1.0)
    config.data.hflip = False
    config.eval.mode = "whole"
    config.batch_size = 1
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 1e-10 * VOC_PIXELS
    config.optimizer.momentum = 0.99
    config.optimizer.weight_decay = 5e-4
    config.optimizer.frozen = "upscore"
    config.optimizer.lr_multipliers = (("/bias$", 2.0),)  # the release's lr_mult 2 on biases
    config.schedule.name = "constant"
    config.schedule.warmup_steps = 0
    config.num_train_steps = 300_000
    config.eval_every_steps = config.checkpoint_every_steps = 4000  # the release scores every 4000 iterations
    return config


RECIPES = {"8s_voc": voc_8s}
