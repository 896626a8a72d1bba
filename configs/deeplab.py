"""DeepLabv3 (Chen et al. 2017) and DeepLabv3+ (Chen et al. 2018) on a dilated ResNet, on the embedded dataset.

  segjax-train --config=configs/deeplab.py:v3plus --workdir=runs/deeplabv3plus
  segjax-train --config=configs/deeplab.py:variant=v3,preset=paper,encoder=resnet101,output_stride=8 --workdir=runs/v3
  segjax-train --config=configs/deeplab.py:v3 --config.model.upsample.method=transposed --workdir=runs/v3_transposed

Argument options: variant 'v3plus' (the default; a bare value sets it) or 'v3'; preset 'small' (CPU-sized) or 'paper'
(ResNet's width 64: torchvision's layout, so model.encoder_weights can start it from ImageNet weights); encoder
'resnet50' or 'resnet101'; output_stride 16 (the papers' training stride) or 8; photometric (mmsegmentation's
PhotoMetricDistortion in training, on by default as in its DeepLab recipes). Recipe after the papers: SGD with
momentum, poly decay (power 0.9), dropout 0.1 after ASPP, bilinear upsampling; with the 'paper' preset the head
learns at 10x the encoder's rate (optimizer.lr_multipliers; meant for an encoder started from pretrained weights).

Recipe 'v3plus_voc' (`configs/deeplab.py:v3plus_voc`, no further options; override keys on the command line): the
VOC 2012 setting of the DeepLabv3+ paper on a prepared `segjax-prepare voc_aug` folder, see docs/datasets.md.
"""

from segjax.config import load_sibling, parse_arg
from segjax.data.catalog import VOC_CLASSES
from segjax.data.pipeline import photometric_config
from segjax.models import PRESET_NAMES

default = load_sibling(__file__)

VARIANTS = {"v3plus": "deeplabv3plus", "v3": "deeplabv3"}
HEAD_LR_MULTIPLIER = (("^head/", 10.0),)


def get_config(arg=None):
    if arg in RECIPES:
        return RECIPES[arg]()
    options = parse_arg(
        __file__,
        arg,
        variant=tuple(VARIANTS),
        preset=PRESET_NAMES,
        encoder=("resnet50", "resnet101"),
        output_stride=16,
        photometric=True,
    )
    config = default.get_config()
    config.model.name = VARIANTS[options.variant]
    config.model.preset = options.preset
    config.model.encoder = options.encoder
    config.model.output_stride = options.output_stride
    config.model.norm = "batch"
    config.data.photometric = photometric_config(enabled=options.photometric)
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4  # mmsegmentation's DeepLab recipes
    config.optimizer.lr_multipliers = HEAD_LR_MULTIPLIER if options.preset == "paper" else ()
    config.schedule.name = "poly"
    config.schedule.poly_power = 0.9
    config.schedule.warmup_steps = 100
    config.num_train_steps = 3000
    return config


def v3plus_voc():
    """DeepLabv3+ ResNet-50, output stride 16, on VOC 2012 + SBD (train_aug, 10582 images; validation: VOC 2012 val,
    1449), as Chen et al. 2018 (ECCV) train on VOC: 513x513 crops, batch 16, SGD momentum 0.9, lr 0.007 with poly
    decay (power 0.9), 30k iterations, weight decay 4e-5 (the official TF models code), random scale 0.5-2.0 and
    flip, no head multiplier, no photometric distortion. Set data.folder.root and model.encoder_weights (torchvision
    resnet50 .pth) on the command line.

    Published VOC 2012 val mIoU (single scale, no flip): 78.85 for ResNet-101 at output stride 16 (the paper's
    Table 3); ResNet-50 is not published in the paper (--config.model.encoder=resnet101 is the paper's network, but
    the weight loader knows ResNet-50 only). Deviation: the ImageNet weights are torchvision's, not the paper's.
    """
    config = get_config("variant=v3plus,preset=paper,encoder=resnet50,output_stride=16,photometric=False")
    voc_aug_folder(config)
    config.data.crop_size = 513
    config.data.scale_range = (0.5, 2.0)
    config.data.hflip = True
    config.batch_size = 16
    config.optimizer.learning_rate = 0.007
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 4e-5
    config.optimizer.lr_multipliers = ()
    config.schedule.name = "poly"
    config.schedule.poly_power = 0.9
    config.schedule.warmup_steps = 0
    config.num_train_steps = 30_000
    config.eval_every_steps = config.checkpoint_every_steps = 3000
    return config


def voc_aug_folder(config):
    """The data section for `segjax-prepare voc_aug`'s folder: 21 classes, 255 ignored, evaluated whole."""
    config.data.name = "folder"
    config.data.folder.num_classes = len(VOC_CLASSES)
    config.data.folder.class_names = VOC_CLASSES
    config.data.ignore_index = 255
    config.data.train_split, config.data.eval_split = "train", "validation"
    config.eval.mode = "whole"


RECIPES = {"v3plus_voc": v3plus_voc}
