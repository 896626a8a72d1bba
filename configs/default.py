"""Defaults for every key of a segjax experiment; the family configs (unet.py, fcn.py, ...) start from these.

Every key is documented in docs/config_reference.md; keys whose default is None are typed placeholders, defined
where the section is. Override any of them on the command line:
  segjax-train --config=configs/unet.py:small --config.model.upsample.method=resize_conv --config.seed=3
"""

import ml_collections
from ml_collections import config_dict

from segjax.config import parse_arg, section_defaults


def get_config(arg=None):
    parse_arg(__file__, arg)  # default.py takes no argument
    config = ml_collections.ConfigDict()
    config.seed = 0
    # data, model, loss, optimizer, schedule, eval: each section's keys and defaults are defined by the code that
    # reads them (segjax.config.section_defaults lists where); stored configs of older runs are completed from it.
    config.update(section_defaults())

    # Devices and numerics.
    config.parallelism = "sharded"  # 'sharded' (jit over a mesh of every process's devices) | 'pmap' (one process)
    config.num_devices = config_dict.placeholder(int)  # None: all local devices
    config.compute_dtype = "float32"  # 'float32' | 'bfloat16' (activations; parameters stay float32)

    # Steps and batches (global batch sizes, split evenly over the devices).
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_train_steps = 2000

    # Logging, validation, checkpoints.
    config.log_every_steps = 50
    config.eval_every_steps = 500  # validation on data.eval_split; a checkpoint is saved at every validation
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 3  # the last N, plus the best by validation mIoU
    config.progress_bar = True
    return config
