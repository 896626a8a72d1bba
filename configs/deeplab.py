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
"""

from segjax.config import load_sibling, parse_arg
from segjax.data.pipeline import photometric_config
from segjax.models import PRESET_NAMES

default = load_sibling(__file__)

VARIANTS = {"v3plus": "deeplabv3plus", "v3": "deeplabv3"}
HEAD_LR_MULTIPLIER = (("^head/", 10.0),)


def get_config(arg=None):
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
