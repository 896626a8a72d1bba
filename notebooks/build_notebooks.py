"""Writes the notebooks of this folder from the cell sources below (run it after editing them):

    python notebooks/build_notebooks.py

The committed .ipynb files carry no outputs. tests/test_notebooks.py executes both with SEGJAX_NOTEBOOK_SMOKE=1
(small images, a two-step training run in a temporary folder), so they keep working as the code changes.
"""

import pathlib

import nbformat
from nbformat import v4

HERE = pathlib.Path(__file__).resolve().parent

SETUP = """\
import os, pathlib, sys

# Run from the repository root or from notebooks/: find the root so `experiments` and `configs` import.
ROOT = pathlib.Path.cwd().resolve()
while not (ROOT / "experiments").is_dir() and ROOT != ROOT.parent:
    ROOT = ROOT.parent
sys.path.insert(0, str(ROOT))
# SEGJAX_NOTEBOOK_SMOKE=1: tiny settings (the test suite runs the notebooks this way).
SMOKE = os.environ.get("SEGJAX_NOTEBOOK_SMOKE") == "1"

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
"""

OPERATORS_TOUR = [
    (
        "markdown",
        """\
# A tour of the upsampling operators

Every operator in `segjax.ops` on a real photograph (matplotlib's sample image of Grace Hopper), then the
learned operators at initialisation, where Odena et al. (2016) found the checkerboard artifacts of transposed
convolutions and pixel shuffle. All operators take and return NHWC arrays.""",
    ),
    (
        "code",
        SETUP
        + """
from matplotlib import cbook
from PIL import Image

from experiments import analysis
from experiments.definitions import UPSAMPLE_ARMS
from experiments.measure import odena
from segjax import ops

SIZE = 32 if SMOKE else 128
with cbook.get_sample_data("grace_hopper.jpg") as f:
    photo = Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
x = jnp.asarray(np.asarray(photo, np.float32) / 255.0)[None]  # (1, SIZE, SIZE, 3) in [0, 1]
small = x.reshape(1, SIZE // 2, 2, SIZE // 2, 2, 3).mean(axis=(2, 4))  # 2x2 average: what the decoder upsamples
print(x.shape, small.shape)""",
    ),
    (
        "markdown",
        """\
## Pooling with indices, and unpooling

`max_pool_with_indices` returns each window's maximum and where it was (flat `h * W + w` in the input plane);
`max_unpool` puts the values back exactly there and zeros elsewhere. This is SegNet's decoder input.""",
    ),
    (
        "code",
        """\
pooled, indices = ops.max_pool_with_indices(x, 2)
unpooled = ops.max_unpool(pooled, indices, x.shape[1:3])
# Every non-zero of the unpooled map is the input value at that place (the window's maximum).
nonzero = np.asarray(unpooled) != 0
assert np.allclose(np.asarray(unpooled)[nonzero], np.asarray(x)[nonzero])
print("fraction of pixels kept:", nonzero.mean())

fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, (title, img) in zip(axes, [("input", x), ("max pooled (indices kept)", pooled), ("max unpooled", unpooled)]):
    ax.imshow(np.clip(np.asarray(img[0]), 0, 1), interpolation="nearest"); ax.set_title(title); ax.axis("off")
plt.show()""",
    ),
    (
        "markdown",
        """\
## Parameter-free upsampling x2

Nearest, bilinear (half-pixel centres, like PyTorch's `align_corners=False`), bed of nails (each value in
the top-left of its 2x2 cell, zeros elsewhere) and max-unpooling, each from the 2x2-averaged image. PSNR
against the original photograph says how much of it each one recovers.""",
    ),
    (
        "code",
        """\
def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a) - np.asarray(b)) ** 2)))

fixed = {
    "nearest": ops.nearest_upsample(small, 2),
    "bilinear": ops.bilinear_upsample(small, 2),
    "bed_of_nails": ops.bed_of_nails(small, 2),
    "max_unpool": ops.max_unpool(pooled, indices, x.shape[1:3]),
}
fig, axes = plt.subplots(1, len(fixed), figsize=(3 * len(fixed), 3))
for ax, (name, y) in zip(axes, fixed.items()):
    ax.imshow(np.clip(np.asarray(y[0]), 0, 1), interpolation="nearest")
    ax.set_title(f"{name}\\nPSNR {psnr(y, x):.1f} dB"); ax.axis("off")
plt.show()""",
    ),
    (
        "markdown",
        """\
## Transposed convolution, bilinear kernels and pixel shuffle

`conv_transpose` computes what `jax.lax.conv_transpose` computes (checked here), faster on CPU. With FCN's
bilinear kernel (size 4 for x2) it is bilinear upsampling away from the border. `pixel_shuffle` rearranges
channels into space; `pixel_unshuffle` undoes it.""",
    ),
    (
        "code",
        """\
kernel = ops.bilinear_kernel(4, 3)  # (4, 4, 3, 3) HWIO: each channel upsampled on its own
ours = ops.conv_transpose(small, kernel, 2)
reference = jax.lax.conv_transpose(small, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
print("conv_transpose vs lax.conv_transpose, max |diff|:", float(jnp.abs(ours - reference).max()))
interior = (slice(None), slice(2, -2), slice(2, -2))
print("bilinear-kernel transposed conv vs bilinear_upsample, interior max |diff|:",
      float(jnp.abs(ours[interior] - ops.bilinear_upsample(small, 2)[interior]).max()))

# Input channel c*4 + i*2 + j goes to output channel c at sub-pixel (i, j) (PyTorch's order): four copies of
# each channel, side by side, shuffle into nearest-neighbour upsampling.
copies = jnp.repeat(small, 4, axis=-1)  # 12 channels -> 3 channels at twice the size
shuffled = ops.pixel_shuffle(copies, 2)
assert jnp.array_equal(ops.pixel_unshuffle(shuffled, 2), copies)
assert jnp.allclose(shuffled, fixed["nearest"])
print("pixel_shuffle of 4 copies == nearest upsampling; pixel_unshuffle inverts it")""",
    ),
    (
        "markdown",
        """\
## Learned operators at initialisation: where checkerboards come from

Each `Upsample` module, freshly initialised, applied to the photograph (left) and to a constant image
(right: no content, so any pattern is the operator's own). Randomly initialised transposed convolutions and
pixel shuffle weight the four output phases differently: a checkerboard. Resize-convolution, bilinear-initialised
transposed convolution and ICNR-initialised pixel shuffle treat the phases alike. The score is
`segjax.ops.checkerboard_score` (0 = all phases agree).""",
    ),
    (
        "code",
        """\
def apply_operator(spec, image, seed=0):
    module = ops.Upsample(spec, factor=2, features=image.shape[-1] if spec.has_params else None)
    call = {}
    if spec.needs_indices:  # unpool with the indices of pooling the full-size image
        full = ops.nearest_upsample(image, 2)
        image, idx = ops.max_pool_with_indices(full, 2)
        call = {"indices": idx, "output_size": full.shape[1:3]}
    variables = module.init(jax.random.PRNGKey(seed), image, **call)
    return np.asarray(module.apply(variables, image, **call))

cases = [(label, ops.UpsampleSpec(**settings)) for label, settings in UPSAMPLE_ARMS.items()]
constant = jnp.ones_like(small)
fig, axes = plt.subplots(2, len(cases), figsize=(1.6 * len(cases), 3.6))
for j, (label, spec) in enumerate(cases):
    on_photo = apply_operator(spec, small)[0]
    on_constant = apply_operator(spec, constant)[0, 4:12, 4:12, 0]
    lo, hi = on_photo.min(), on_photo.max()
    axes[0, j].imshow((on_photo - lo) / max(hi - lo, 1e-6))
    c_lo, c_hi = on_constant.min(), on_constant.max()
    if c_hi - c_lo < 1e-6:
        c_lo, c_hi = c_lo - 1, c_hi + 1
    axes[1, j].imshow(on_constant, cmap="gray", vmin=c_lo, vmax=c_hi, interpolation="nearest")
    axes[0, j].set_title(label.replace("_", "\\n", 1), fontsize=7)
    for ax in axes[:, j]:
        ax.axis("off")
plt.tight_layout(); plt.show()""",
    ),
    (
        "code",
        """\
seeds = range(1) if SMOKE else range(5)
scores = odena.operator_checkerboard_at_init(seeds=seeds)
print(f"{'operator':26s} checkerboard score at init (constant input), per seed")
for label, values in scores.items():
    print(f"{label:26s} " + " ".join(f"{v:.3f}" for v in values))

# Phase maps: the mean of each of the 2x2 output phases on the constant input, normalised.
outputs = odena.operator_outputs(seed=0)
fig, axes = plt.subplots(1, len(outputs), figsize=(1.2 * len(outputs), 1.6))
for ax, (label, y) in zip(axes, outputs.items()):
    ax.imshow(analysis.phase_map(y, 2, 2), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(label.replace("_", "\\n", 1), fontsize=6); ax.axis("off")
plt.show()""",
    ),
]

INSPECT_RUN = [
    (
        "markdown",
        """\
# Inspect a training run

Loads the latest checkpoint of a `segjax-train` workdir, plots the training curves, evaluates the validation
split (per-class table) and shows predictions next to the ground truth. Set `SEGJAX_NOTEBOOK_WORKDIR` (default
`runs/quickstart`, from `segjax-train --config=configs/quickstart.py --workdir=runs/quickstart`). With
`SEGJAX_NOTEBOOK_SMOKE=1` the notebook first trains a tiny run of two steps in a temporary folder.""",
    ),
    (
        "code",
        SETUP
        + """
import tempfile

from experiments import analysis, sweep
from segjax import data, evaluate, plots, run
from segjax.files import read_metrics

WORKDIR = os.environ.get("SEGJAX_NOTEBOOK_WORKDIR", str(ROOT / "runs" / "quickstart"))
if SMOKE:
    from segjax.train import train_and_evaluate

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="segjax_notebook_"))
    data_dir = os.environ.get("SEGJAX_NOTEBOOK_DATA_DIR", str(tmp / "tfds"))
    tiny = {"data.data_dir": data_dir, "data.embedded.num_train": 16, "data.embedded.num_validation": 8,
            "data.embedded.num_test": 4, "data.crop_size": 32, "num_devices": 1, "batch_size": 4,
            "eval_batch_size": 4, "num_train_steps": 2, "log_every_steps": 1, "eval_every_steps": 2,
            "checkpoint_every_steps": 2, "progress_bar": False, "schedule.warmup_steps": 1,
            "model.base_width": 4, "model.depth": 1, "eval.num_images_to_plot": 0}
    WORKDIR = str(tmp / "run")
    train_and_evaluate(sweep.apply_overrides(sweep.load_family_config("quickstart"), tiny), WORKDIR)
print("workdir:", WORKDIR)""",
    ),
    (
        "code",
        """\
config = run.stored_config(WORKDIR)
records = read_metrics(WORKDIR)
train = [r for r in records if r["split"] == "train"]
val = [r for r in records if r["split"] != "train" and r.get("mean_iou") is not None]
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], ".-"); axes[0].set_title("training loss")
axes[1].plot([r["step"] for r in val], [r["mean_iou"] for r in val], "o-", label="validation")
axes[1].plot([r["step"] for r in train], [r["mean_iou"] for r in train], ".-", alpha=0.5, label="train batches")
axes[1].set_title("mIoU"); axes[1].legend()
for ax in axes:
    ax.set_xlabel("step")
plt.tight_layout(); plt.show()""",
    ),
    ("markdown", "## Per-class scores of the latest checkpoint on the validation split"),
    (
        "code",
        """\
report = evaluate.evaluate_checkpoint(WORKDIR, "latest", write=False, verbose=False)
info = data.get_dataset_info(config.data)
print(f"{report['dataset']} / {report['split']}, checkpoint step {report['checkpoint_step']}")
print(plots.per_class_table(report["scores"], info.class_names))""",
    ),
    ("markdown", "## Predictions"),
    (
        "code",
        """\
task, state, _ = run.restore(WORKDIR)  # the run's Task (its model, specs and wrapped steps) and latest checkpoint
batch = next(data.make_loader(task.data, info.eval_split, global_batch_size=4, train=False, seed=0))
images, labels = batch["image"], batch["label"]
predictions = task.predict(task.layout.replicate(state), images)  # the predict step segjax-eval and -predict use

colours = plots.palette(task.num_classes, task.info.name)  # the colours of segjax-eval's and -predict's figures
shown = analysis.display_images(images)
fig, axes = plt.subplots(len(shown), 3, figsize=(6, 2 * len(shown)))
for i in range(len(shown)):
    for ax, (title, img) in zip(axes[i], [("image", shown[i]), ("ground truth", plots.colourise(labels[i], colours)),
                                         ("prediction", plots.colourise(predictions[i], colours))]):
        ax.imshow(img, interpolation="nearest"); ax.axis("off")
        if i == 0:
            ax.set_title(title)
plt.tight_layout(); plt.show()
print("classes:", ", ".join(f"{i}={name}" for i, name in enumerate(info.class_names)))""",
    ),
]


def build(cells) -> nbformat.NotebookNode:
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [v4.new_markdown_cell(src) if kind == "markdown" else v4.new_code_cell(src) for kind, src in cells]
    return nb


NOTEBOOKS = {"operators_tour.ipynb": OPERATORS_TOUR, "inspect_run.ipynb": INSPECT_RUN}


def main():
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
