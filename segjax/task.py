"""`Task`: what a run of one config needs, built once from (config, workdir) and shared by training, evaluation,
the benchmarks and the tests: the dataset's description, the model, the frozen specs, the device layout, fresh and
restore-target states, the wrapped steps and the checkpoints.

Building it checks everything a bad config breaks (keys, values, the model/operator pair, the dataset, batch sizes
against the devices) before anything is written to the workdir.
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from segjax import checkpoint as checkpoint_lib
from segjax import config_utils, optim, parallel, steps
from segjax import data as data_lib
from segjax import losses as losses_lib
from segjax import models as models_lib
from segjax.distributed import sum_over_processes
from segjax.models import pretrained

log = logging.getLogger("segjax.task")

# Run-once programs (the initial state) skip XLA's backend optimisations: on CPU, optimising the random
# initialisers and the optimizer's init takes far longer than running them (a tiny U-Net: ~40 s vs ~3 s to compile).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Task:
    """The pieces of a run of `config` (see the module docstring); `workdir` is where its checkpoints live."""

    def __init__(self, config, workdir: str | None = None):
        config_utils.validate(config)
        self.config = config
        self.workdir = None if workdir is None else os.path.abspath(workdir)
        self.optimizer = optim.OptimizerSpec.from_config(config.optimizer)
        self.schedule = optim.ScheduleSpec.from_config(config)
        self.loss = losses_lib.LossSpec.from_config(config.loss)
        self.info = data_lib.get_dataset_info(config.data)
        self.layout = parallel.data_parallel(config.parallelism, config.num_devices)
        self.layout.check_batch_size(config.eval_batch_size, "eval_batch_size")  # training checks batch_size
        self.dtype = _DTYPES[config.compute_dtype]
        # Batch norm averages its statistics over the data-parallel axis the steps are wrapped with.
        self.model = models_lib.create_model(config.model, self.num_classes, axis_name=parallel.AXIS, dtype=self.dtype)
        self.inference_spec()  # checks config.eval's test mode
        if self.optimizer.frozen is not None:
            self.abstract_state()  # a pattern that matches no parameter fails here, before anything is written
        self._logged_buckets: set[str] = set()

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def ignore_index(self) -> int:
        return self.info.ignore_index

    def learning_rate(self):
        """The learning-rate schedule, step -> rate (for logging)."""
        return optim.create_schedule(self.schedule, self.optimizer.learning_rate)

    # --- states -------------------------------------------------------------------------------------------------
    def fresh_state(self) -> steps.TrainState:
        """A fresh TrainState on the host (numpy), seeded by config.seed.

        Built by one program compiled without XLA's backend optimisations and shared by every task whose model and
        specs are equal (only the seed is an argument): the unoptimised program is what every run starts from.
        """
        key = jax.random.PRNGKey(self.config.seed)
        state = jax.device_get(_fresh_state(self.model, self.optimizer, self.schedule, tuple(self.info.crop_size), key))
        weights = self.initial_weights
        if weights is None:
            return state
        variables = weights.apply({"params": state.params, "batch_stats": state.batch_stats})
        return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])

    @functools.cached_property
    def initial_weights(self) -> pretrained.LoadedWeights | None:
        """What a fresh run starts from besides its initialisers (None: nothing): config.model.encoder_weights (a
        file matched to the encoder) or config.model.init_from (the latest checkpoint of another run, matched by name
        and shape). Raises a PretrainedWeightsError (a ValueError) naming what does not fit; logs what was loaded."""
        model = self.config.model
        abstract = self.abstract_state()
        variables = {"params": abstract.params, "batch_stats": abstract.batch_stats}
        if model.encoder_weights is not None:
            weights = pretrained.load_encoder_weights(os.path.expanduser(model.encoder_weights), self.model, variables)
        elif model.init_from is not None:
            weights = _weights_of_run(os.path.abspath(os.path.expanduser(model.init_from)), variables)
        else:
            return None
        log.info("%s", weights.summary())
        return weights

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
            self.config.data,
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

    def inference_spec(self) -> steps.InferenceSpec:
        """config.eval's test mode (whole / slide / resize, scales, flip) as a frozen spec."""
        e = self.config.eval
        window = data_lib.as_size(e.window) if e.window is not None else tuple(self.info.crop_size)
        stride = data_lib.as_size(e.stride) if e.stride is not None else tuple(max(1, 2 * s // 3) for s in window)
        return steps.InferenceSpec(e.mode, window, stride, tuple(e.scales), bool(e.flip))

    def eval_buckets(self, split: str) -> list[tuple[tuple[int, int] | None, np.ndarray | None]]:
        """How `split` is evaluated: [(canvas, example indices), ...]. Every image is padded (its labels with
        ignore_index) to its bucket's canvas: its own size rounded up to the network's stride (and at least one
        sliding window), coarser only where eval.max_buckets would otherwise be exceeded (see
        `data.size_buckets`). [(None, None)] in 'resize' mode: every image fitted into data.eval_size."""
        spec = self.inference_spec()
        if spec.mode == "resize":
            return [(None, None)]
        minimum = spec.window if spec.mode == "slide" else (1, 1)
        sizes = data_lib.image_sizes(self.config.data, split)
        buckets = data_lib.size_buckets(sizes, self.model.stride, self.config.eval.max_buckets, minimum)
        if split not in self._logged_buckets:
            self._logged_buckets.add(split)
            canvases = ", ".join(f"{h}x{w} ({len(i)})" for (h, w), i in buckets)
            log.info("Evaluating %s: %d images on %d canvases: %s", split, len(sizes), len(buckets), canvases)
        return buckets

    def eval_step(self, boundary_tolerance: int | None):
        step = steps.EvalStep(
            self.model, self.num_classes, self.ignore_index, boundary_tolerance, self.inference_spec()
        )
        return self.layout.wrap(step)

    def predict_step(self):
        return self.layout.wrap(steps.PredictStep(self.model, self.inference_spec()), per_example=True)

    # --- checkpoints --------------------------------------------------------------------------------------------
    def checkpointer(self, *, read_only: bool = False) -> checkpoint_lib.Checkpointer:
        if self.workdir is None:
            raise ValueError("This Task has no workdir, so no checkpoints.")
        return checkpoint_lib.Checkpointer(self.workdir, keep=self.config.keep_checkpoints, read_only=read_only)

    def checkpoint_meta(self) -> dict:
        """What a checkpoint records about its run besides the state (checked by segjax-eval)."""
        return {"num_classes": self.num_classes, "model": self.config.model.to_dict(), "dataset": self.config.data.name}


def _weights_of_run(workdir: str, variables: dict) -> pretrained.LoadedWeights:
    """config.model.init_from: the latest checkpoint of the run in `workdir`, matched to `variables`."""
    if not os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
        raise pretrained.PretrainedWeightsError(
            f"model.init_from {workdir} has no checkpoints/ folder; point it at a segjax-train workdir that has saved "
            "a checkpoint."
        )
    checkpoints = checkpoint_lib.Checkpointer(workdir, read_only=True)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise pretrained.PretrainedWeightsError(f"model.init_from {workdir} has no finished checkpoint yet.")
        return pretrained.weights_from_run(workdir, step, checkpoints.restore_variables(step), variables)
    finally:
        checkpoints.close()


def _create_state(model, optimizer, schedule, crop_size, rng):
    tx, _ = optim.create_optimizer(optimizer, schedule)
    sample = jnp.zeros((1, *crop_size, 3), jnp.float32)  # the parameters do not depend on the image size
    return steps.create_train_state(model, tx, rng, sample)


_fresh_state = jax.jit(_create_state, static_argnums=(0, 1, 2, 3), compiler_options=_FAST_COMPILE)
