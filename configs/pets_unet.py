"""U-Net on Oxford-IIIT Pets (TFDS `oxford_iiit_pet`): pet vs background, trimap border pixels ignored.

  segjax-train --config=configs/pets_unet.py --workdir=runs/pets_unet --config.data.download=True

The first run needs the dataset prepared by TFDS (`--config.data.download=True`, which needs TensorFlow:
pip install "segjax[tf]"), or already present under data.data_dir. Images are cropped to 256x256 for training
and evaluated at a fixed 256x256 (the catalog's sizes). Arg: 'small' (default) | 'paper' widths.
"""

from segjax.config import load_sibling

unet = load_sibling(__file__, "unet")


def get_config(arg=None):
    config = unet.get_config(arg)
    config.data.name = "oxford_iiit_pet"
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_train_steps = 10000
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.log_every_steps = 100
    config.optimizer.learning_rate = 1e-3
    config.schedule.warmup_steps = 500
    return config
