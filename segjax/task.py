"""`Task`: what a run of one config needs, built once from (config, workdir) and shared by training, evaluation,
the benchmarks and the tests: the dataset's description, the model, the frozen specs, the device layout, fresh and
restore-target states, the wrapped steps and the checkpoints.

Building it checks everything a bad config breaks (keys, values, the model/operator pair, the dataset, batch sizes
against the devices) before anything is written to the workdir.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from segjax import checkpoint as checkpoint_lib
from segjax import config as config_lib
from segjax import data as data_lib
from segjax import losses as losses_lib
from segjax import models as models_lib
from segjax import optim, parallel, steps
from segjax.distributed import sum_over_processes
from segjax.files import absolute
from segjax.models import pretrained

log = logging.getLogger("segjax.task")

# Run-once programs (the initial state) skip XLA's backend optimisations: on CPU, optimising the random
# initialisers and the optimizer's init takes far longer than running them (a tiny U-Net: ~40 s vs ~3 s to compile).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Task:
    """The pieces of a run of `config` (see the module docstring); `workdir` is where its checkpoints live.

    The config's sections are read here, once, into frozen specs that the rest of segjax is handed whole:
    `model_spec`, `data`, `eval`, `optimizer`, `schedule`, `loss`. `model` is the one plain network.
    """

    def __init__(self, config, workdir: str | None = None):
        config_lib.validate(config)
        self.config = config
        self.workdir = None if workdir is None else absolute(workdir)
        self.optimizer = optim.OptimizerSpec.from_config(config.optimizer)
        self.schedule = optim.ScheduleSpec.from_config(config)
        self.loss = losses_lib.LossSpec.from_config(config.loss)
        self.model_spec = models_lib.ModelSpec.from_config(config.model)  # before the dataset is prepared
        self.data = data_lib.DataSpec.from_config(config.data)
        self.info = data_lib.get_dataset_info(self.data)
        self.eval = steps.EvalSpec.from_config(config.eval, self.data.crop_size)
        self.layout = parallel.data_parallel(config.parallelism, config.num_devices)
        self.layout.check_batch_size(config.eval_batch_size, "eval_batch_size")  # training checks batch_size
        self.dtype = _DTYPES[config.compute_dtype]
        # One plain model: the train step binds the data-parallel axis to its batch norm where it runs under one.
        self.model = models_lib.create_model(self.model_spec, self.num_classes, dtype=self.dtype)
        if self.optimizer.names_parameters:
            self.abstract_state()  # a pattern that matches no parameter fails here, before anything is written
        self._logged_buckets: set[str] = set()

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def ignore_index(self) -> int:
        return self.info.ignore_index

    @property
    def inference_weights(self) -> str:
        """Which weights validation and inference apply (`steps.inference_variables`), for logs and reports."""
        decay = self.optimizer.ema_decay
        return f"EMA weights (optimizer.ema_decay={decay:g})" if decay else "trained weights"

    def learning_rate(self):
        """The learning-rate schedule, step -> rate (for logging)."""
        return optim.create_schedule(self.schedule, self.optimizer.learning_rate)

    # --- states -------------------------------------------------------------------------------------------------
    def fresh_state(self, weights: pretrained.LoadedWeights | None = None) -> steps.TrainState:
        """A fresh TrainState on the host (numpy), seeded by config.seed, with `weights` copied in
        (`segjax.run.initial_weights`: an encoder file or another run).

        Built by one program compiled without XLA's backend optimisations and shared by every task whose model and
        specs are equal (only the seed is an argument): the unoptimised program is what every run starts from.
        """
        key = jax.random.PRNGKey(self.config.seed)
        state = jax.device_get(_fresh_state(self.model, self.optimizer, self.schedule, tuple(self.info.crop_size), key))
        if weights is None:
            return state
        variables = weights.apply({"params": state.params, "batch_stats": state.batch_stats})
        state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
        return steps.restart_ema(state) if state.ema else state  # the average starts from the loaded weights

    def abstract_state(self) -> steps.TrainState:
        """Zeros shaped like a fresh TrainState, without running or compiling the initialisers: a restore target."""
        create = functools.partial(_create_state, self.model, self.optimizer, self.schedule, tuple(self.info.crop_size))
        shapes = jax.eval_shape(create, jax.random.PRNGKey(self.config.seed))
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)

    # --- steps --------------------------------------------------------------------------------------------------
    def loss_with_class_weights(self) -> losses_lib.LossSpec:
        """The loss spec with its class weights fixed; 'median_frequency' counts the training split's pixels (over
        every process's share of it)."""
        spec, info = self.loss, self.info
        if spec.class_weighting != "median_frequency":
            return spec.with_class_weights(losses_lib.resolve_class_weights(spec, self.num_classes))
        counts = np.zeros(self.num_classes, np.int64)
        image_counts = np.zeros(self.num_classes, np.int64)
        statistics = jax.jit(
            functools.partial(
                losses_lib.class_pixel_statistics, num_classes=self.num_classes, ignore_index=self.ignore_index
            )
        )
        loader = data_lib.make_loader(
            self.data,
            info.train_split,
            global_batch_size=self.config.eval_batch_size,
            train=False,
            seed=self.config.seed,
        )
        for batch in loader:
            labels = np.where(batch["valid"][:, None, None], batch["label"], self.ignore_index)
            c, i = statistics(labels)
            counts += np.asarray(c, np.int64)
            image_counts += np.asarray(i, np.int64)
        counts, image_counts = sum_over_processes(counts), sum_over_processes(image_counts)
        weights = losses_lib.resolve_class_weights(spec, self.num_classes, counts, image_counts)
        log.info("Median-frequency class weights: %s", np.round(weights, 3).tolist())
        return spec.with_class_weights(weights)

    def train_step(self, loss: losses_lib.LossSpec | None = None):
        """The wrapped training step (state, batch) -> (state, metrics); equal tasks share its compilation."""
        step = steps.TrainStep(
            self.model, loss or self.loss, self.optimizer, self.schedule, self.num_classes, self.ignore_index
        )
        return self.layout.wrap(step, returns_state=True, donate_state=True)

    def canvases(self, sizes) -> list[tuple[tuple[int, int], np.ndarray]]:
        """Images of `sizes` ((n, 2) heights and widths) grouped by the canvas each is padded to for inference:
        [(canvas, indices), ...]: its own size rounded up to the network's stride (and at least one sliding window),
        coarser only where eval.max_buckets would otherwise be exceeded (see `data.size_buckets`). Evaluation and
        segjax-predict group images so."""
        spec = self.eval.inference
        minimum = spec.window if spec.mode == "slide" else (1, 1)
        return data_lib.size_buckets(sizes, self.model.stride, self.eval.max_buckets, minimum)

    def eval_buckets(self, split: str) -> list[tuple[tuple[int, int] | None, np.ndarray | None]]:
        """How `split` is evaluated: [(canvas, example indices), ...] (`canvases`; every image padded to its
        bucket's canvas, its labels with ignore_index). [(None, None)] in 'resize' mode: every image fitted into
        data.eval_size."""
        if self.eval.inference.mode == "resize":
            return [(None, None)]
        sizes = data_lib.image_sizes(self.data, split)
        buckets = self.canvases(sizes)
        if split not in self._logged_buckets:
            self._logged_buckets.add(split)
            canvases = ", ".join(f"{h}x{w} ({len(i)})" for (h, w), i in buckets)
            log.info("Evaluating %s: %d images on %d canvases: %s", split, len(sizes), len(buckets), canvases)
        return buckets

    def eval_step(self, boundary_tolerance: int | None):
        """The wrapped evaluation step (state, batch) -> summed statistics (see `steps.EvalStep`)."""
        step = steps.EvalStep(self.model, self.num_classes, self.ignore_index, boundary_tolerance, self.eval.inference)
        return self.layout.wrap(step)

    def predict_step(self):
        """The wrapped prediction step (state, batch) -> per-example class maps (see `steps.PredictStep`)."""
        return self.layout.wrap(steps.PredictStep(self.model, self.eval.inference), per_example=True)

    def predict(self, state, images: np.ndarray) -> np.ndarray:
        """Class maps (N, H, W) int32 of evaluation-ready images (N, H, W, 3) of one size (prepared by
        `DataSpec.eval_transform`), by `predict_step`, eval_batch_size at a time: the last batch is padded with
        copies of an image, as the evaluation loader pads, so each image size compiles once. `state` is laid out by
        `layout.replicate`; for one process (segjax-predict, notebooks)."""
        size, masks = self.config.eval_batch_size, []
        for start in range(0, len(images), size):
            chunk = np.asarray(images[start : start + size], np.float32)
            n = len(chunk)
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], size - n, axis=0)])
            predictions = self.predict_step()(state, self.layout.shard_batch({"image": chunk}))
            masks.append(self.layout.local_examples(predictions)[:n])
        return np.concatenate(masks)

    # --- checkpoints --------------------------------------------------------------------------------------------
    def checkpointer(self, *, read_only: bool = False) -> checkpoint_lib.Checkpointer:
        if self.workdir is None:
            raise ValueError("This Task has no workdir, so no checkpoints.")
        return checkpoint_lib.Checkpointer(self.workdir, keep=self.config.keep_checkpoints, read_only=read_only)

    def checkpoint_meta(self) -> dict:
        """What a checkpoint records about its run besides the state (checked by segjax-eval)."""
        return {"num_classes": self.num_classes, "model": self.config.model.to_dict(), "dataset": self.config.data.name}


def _create_state(model, optimizer, schedule, crop_size, rng):
    tx, _ = optim.create_optimizer(optimizer, schedule)
    sample = jnp.zeros((1, *crop_size, 3), jnp.float32)  # the parameters do not depend on the image size
    return steps.create_train_state(model, tx, rng, sample, ema=optimizer.ema_decay > 0)


_fresh_state = jax.jit(_create_state, static_argnums=(0, 1, 2, 3), compiler_options=_FAST_COMPILE)
