"""Defaults for every key of a segjax experiment; the family configs (unet.py, fcn.py, ...) start from these.

Every key is documented in docs/config_reference.md. Override any of them on the command line:
  segjax-train --config=configs/unet.py:small --config.model.upsample.method=resize_conv --config.seed=3
"""

import ml_collections
from ml_collections import config_dict

from segjax.config_utils import make_overridable
from segjax.data import default_data_config
from segjax.losses import default_loss_config
from segjax.models import default_model_config


def get_config(arg=None):
    del arg  # default.py has no variants
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = default_data_config()
    config.model = default_model_config()
    config.loss = default_loss_config()

    # Devices and numerics.
    config.parallelism = "pmap"  # 'pmap' | 'sharded' (jit over a device mesh)
    config.num_devices = config_dict.placeholder(int)  # None: all local devices
    config.compute_dtype = "float32"  # 'float32' | 'bfloat16' (activations; parameters stay float32)

    # Steps and batches (global batch sizes, split evenly over the devices).
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_train_steps = 2000

    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "adamw",  # 'sgd' | 'adam' | 'adamw'
            "learning_rate": 1e-3,  # peak learning rate
            "momentum": 0.9,  # sgd
            "nesterov": False,  # sgd
            "b1": 0.9,  # adam/adamw
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 1e-4,  # never applied to biases and norm parameters
            "grad_clip_norm": config_dict.placeholder(float),  # clip by global norm; None: off
        }
    )
    config.schedule = ml_collections.ConfigDict(
        {
            "name": "warmup_cosine",  # 'constant' | 'poly' | 'warmup_cosine'
            "warmup_steps": 100,  # linear warmup from learning_rate / warmup_steps
            "poly_power": 0.9,  # 'poly': lr * (1 - t/T)^power
            "end_learning_rate_factor": 0.0,  # final lr = factor * learning_rate ('poly', 'warmup_cosine')
        }
    )

    # Logging, validation, checkpoints.
    config.log_every_steps = 50
    config.eval_every_steps = 500  # validation on data.eval_split; a checkpoint is saved at every validation
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 3  # the last N, plus the best by validation mIoU
    config.progress_bar = True
    config.eval = ml_collections.ConfigDict(
        {
            "boundary_tolerance": config_dict.placeholder(int),  # pixels; None: SegNet's 0.75% of the diagonal
            "max_batches": config_dict.placeholder(int),  # None: the whole split
            "num_images_to_plot": 8,  # segjax-eval's image / ground truth / prediction grid
        }
    )
    return make_overridable(config)  # keys defaulting to None stay settable from the command line
