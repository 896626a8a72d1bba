"""`segjax-export`: a checkpoint of a run as one serialized inference function, callable without segjax.

  segjax-export --workdir=runs/quickstart --out=exported
  segjax-export --workdir=runs/x --step=best --platforms=cpu,cuda --out=exported

It writes two files into the new (or empty) folder --out:

  model.jax_export     `jax.export` of the network in inference mode with its weights inside: float32 NHWC images
                       (batch, height, width, 3), normalised as the run's data config says, -> float32 logits
                       (batch, height, width, classes) at the input's size. Batch, height and width are symbolic:
                       any sizes, one artifact. Height and width are padded with zeros inside the function up to
                       multiples of the network's stride and the scores cropped back, as segjax-predict pads.
  preprocessing.json   what a consumer needs besides: normalisation (mean, std), the stride and padding rule, class
                       names, palette, the source run (workdir, checkpoint step, weights, config.json's SHA-256),
                       and how to load it:

  import jax, numpy as np
  exported = jax.export.deserialize(bytearray(open("exported/model.jax_export", "rb").read()))
  images = (rgb_uint8[None].astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)   # (1, H, W, 3)
  logits = exported.call(images)
  mask = np.argmax(logits, -1)

The weights are those segjax-eval and segjax-predict apply (`steps.inference_variables`: the moving average where
the run keeps one); --step picks the checkpoint as they do (latest, best, or a step). The function is whole-image
inference (config.eval.mode 'whole', no test-time scales or flip): the logits segjax-predict argmaxes for a run
that evaluates so. User errors (no workdir or checkpoint, an --out that exists with files in it or lies in the
workdir, an unknown platform) print one line and exit with status 2, and nothing is written; the folder appears
whole or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid

import jax
import jax.numpy as jnp

from segjax import cli, steps
from segjax import run as run_lib
from segjax.files import absolute, as_path, is_local, write_atomic, write_json
from segjax.logging_utils import quiet_libraries
from segjax.plots import palette

log = logging.getLogger("segjax.export")

PROG = "segjax-export"
MODEL_FILE = "model.jax_export"
PREPROCESSING_FILE = "preprocessing.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
DEFAULT_PLATFORMS = ("cpu", "cuda")
INPUT_SHAPE = "batch, height, width, 3"  # jax.export.symbolic_shape: batch, height and width are free


def inference_function(model, variables, stride: int):
    """images (N, H, W, 3) float32, normalised -> logits (N, H, W, C) float32 of `model` applied with `variables` in
    inference mode. H and W are padded with zeros (after normalisation, as `DataSpec.eval_transform` pads) up to
    multiples of `stride`, the network's (`Task.canvases`: the canvas segjax-predict gives a lone image), and the
    logits cropped back; written for symbolic sizes (jax.export) as well as concrete ones."""

    def infer(images):
        n, h, w, c = images.shape
        canvas = (n, -(-h // stride) * stride, -(-w // stride) * stride, c)
        padded = jax.lax.dynamic_update_slice(jnp.zeros(canvas, images.dtype), images, (0, 0, 0, 0))
        return model.apply(variables, padded, train=False).astype(jnp.float32)[:, :h, :w]

    return infer


def export_inference(model, variables, stride: int, platforms=DEFAULT_PLATFORMS) -> jax.export.Exported:
    """`inference_function` exported for `platforms` with a symbolic batch, height and width (`INPUT_SHAPE`)."""
    images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(INPUT_SHAPE), jnp.float32)
    function = jax.jit(inference_function(model, variables, stride))
    try:
        return jax.export.export(function, platforms=tuple(platforms))(images)
    except (ValueError, TypeError, jax.errors.InconclusiveDimensionOperation) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise run_lib.RunError(
            f"The network {type(model).__name__} cannot be exported for any image size yet: one of its operations "
            f"needs concrete sizes ({cause}); export a network that can, e.g. unet or fcn (--debug shows where)."
        ) from e


def parse_platforms(value: str) -> tuple[str, ...]:
    """'cpu,cuda' -> ('cpu', 'cuda'); RunError naming the choices for an empty or unknown name."""
    names = tuple(dict.fromkeys(p.strip().lower() for p in value.split(",") if p.strip()))
    unknown = [p for p in names if p not in PLATFORMS]
    if not names or unknown:
        raise run_lib.RunError(
            f"--platforms={value!r}: {'unknown ' + ', '.join(unknown) if unknown else 'none named'}; name one or "
            f"more of {', '.join(PLATFORMS)}, comma-separated (e.g. --platforms=cpu,cuda)."
        )
    return names


def check_out(out: str, workdir: str) -> str:
    """--out as an absolute path; RunError if it holds anything (nothing is overwritten) or is or lies inside the
    run's workdir (whose files are the run's record)."""
    if not str(out).strip():
        raise run_lib.RunError("--out is empty; pass a new folder for the export (e.g. --out=exported).")
    out = absolute(out)
    if as_path(out).exists() and not as_path(out).is_dir():
        raise run_lib.RunError(f"--out {out} is a file; pass a new (or empty) folder for the export.")
    real, run = out, run_lib.check_workdir(workdir)
    if is_local(out) and is_local(run):
        real, run = os.path.realpath(out), os.path.realpath(run)
    if real == run or real.startswith(run.rstrip(os.sep) + os.sep):
        raise run_lib.RunError(
            f"--out {out} is inside the run's workdir {run}, which holds the run's record; pass an --out outside it."
        )
    if as_path(out).is_dir() and any(as_path(out).iterdir()):
        raise run_lib.RunError(
            f"--out {out} already exists and is not empty; pass a new folder (nothing is overwritten)."
        )
    return out


def export_run(workdir: str, out: str, *, step="latest", platforms=DEFAULT_PLATFORMS) -> dict:
    """Exports checkpoint `step` of the run in `workdir` into the new folder `out` (see the module docstring);
    returns what preprocessing.json holds. Everything that can be refused is checked before the first write, and
    the folder is written beside `out` and renamed into place, so it appears whole or not at all."""
    platforms = tuple(platforms)
    out = check_out(out, workdir)
    task, state, resolved = run_lib.restore(workdir, step)
    variables = steps.inference_variables(state)
    exported = export_inference(task.model, variables, task.model.stride, platforms)
    record = _record(task, resolved, exported)
    if task.eval.inference.mode != "whole" or task.eval.inference.averages:
        log.warning(
            "The run evaluates with config.eval mode=%s, scales=%s, flip=%s; the export predicts whole images without "
            "test-time scales or flip, as segjax-predict --config.eval.mode=whole --config.eval.scales='(1.0,)' "
            "--config.eval.flip=False does.",
            task.eval.inference.mode,
            task.eval.inference.scales,
            task.eval.inference.flip,
        )
    parent = as_path(out).parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{as_path(out).name}.partial-{uuid.uuid4().hex}"
    tmp.mkdir()  # not mkdtemp: the folder gets open()'s mode, not a private 0700
    try:
        write_atomic(tmp / MODEL_FILE, bytes(exported.serialize()))
        write_json(tmp / PREPROCESSING_FILE, record)
        if is_local(out):
            os.replace(tmp, out)  # an empty --out is replaced whole; one that gained files meanwhile is refused
        else:
            tmp.rename(out)  # an object store: a copy and a delete, refused if --out exists
    except BaseException:
        if is_local(out):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rmtree(missing_ok=True)
        raise
    return record


def _record(task, step: int, exported: jax.export.Exported) -> dict:
    """preprocessing.json: what a consumer of MODEL_FILE needs besides it."""
    data, info = task.data, task.info
    config_file = os.path.join(task.workdir, run_lib.CONFIG_FILE)
    config_sha256 = hashlib.sha256(as_path(config_file).read_bytes()).hexdigest()
    inference = task.eval.inference
    return {
        "file": MODEL_FILE,
        "format": "jax.export (StableHLO), serialized by Exported.serialize()",
        "load": (
            f"exported = jax.export.deserialize(bytearray(open({MODEL_FILE!r}, 'rb').read())); "
            "logits = exported.call(images)  # needs jax and flatbuffers"
        ),
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "platforms": list(exported.platforms),
        "input": {
            "shape": f"({INPUT_SHAPE})",
            "dtype": "float32",
            "layout": "NHWC, RGB",
            "normalisation": "(rgb_uint8 / 255 - mean) / std, per channel",
            "mean": list(data.mean),
            "std": list(data.std),
        },
        "stride": task.model.stride,
        "padding": (
            "inside the function: height and width padded with zeros (after normalisation) up to multiples of "
            "stride, the scores cropped back; any input size works"
        ),
        "output": {
            "shape": "(batch, height, width, num_classes)",
            "dtype": "float32",
            "scores": "logits; the prediction is their argmax over the last axis",
        },
        "inference": "whole image, no test-time scales or flip",
        "run_eval": {"mode": inference.mode, "scales": list(inference.scales), "flip": inference.flip},
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "palette": palette(info.num_classes, info.name),
        "ignore_index": info.ignore_index,
        "dataset": info.name,
        "model": task.config.model.name,
        "source": {
            "workdir": task.workdir,
            "step": step,
            "weights": "ema" if task.optimizer.ema_decay else "trained",  # steps.inference_variables
            "config_sha256": config_sha256,
        },
    }


def main(argv=None):
    """Entry point of `segjax-export`."""
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = cli.ArgumentParser(
        prog=PROG, description="Export a checkpoint of a run as a serialized jax.export inference function."
    )
    parser.add_argument("--workdir", required=True, help="workdir of a segjax-train run")
    parser.add_argument(
        "--out", required=True, help=f"a new (or empty) folder for {MODEL_FILE} and {PREPROCESSING_FILE}"
    )
    parser.add_argument("--step", default="latest", help="checkpoint: latest, best (validation mIoU) or a step")
    parser.add_argument(
        "--platforms",
        default=",".join(DEFAULT_PLATFORMS),
        help=f"where the export may run, comma-separated from {', '.join(PLATFORMS)} (default "
        f"{','.join(DEFAULT_PLATFORMS)})",
    )
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        record = export_run(args.workdir, args.out, step=args.step, platforms=parse_platforms(args.platforms))
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    print(
        f"exported step {record['source']['step']} of {record['source']['workdir']} ({record['source']['weights']} "
        f"weights, {', '.join(record['platforms'])}) to {os.path.abspath(args.out)}"
    )


if __name__ == "__main__":
    main()
