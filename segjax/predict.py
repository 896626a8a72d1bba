"""`segjax-predict`: segment image files with a checkpoint of a run; no labels needed.

  segjax-predict --workdir=runs/quickstart photo.png more_images/ --out=predictions
  segjax-predict --workdir=runs/x --step=best --config.eval.mode=slide --config.eval.flip=True images/ --out=out

For every input image (files, or folders of .png/.jpg/.jpeg) it writes `<name>.png`, the class-index mask as a
palette PNG at the image's own size, and `<name>_overlay.png`, the classes' colours over the image. The run's
config decides the network and the inference mode (config.eval: whole / slide, scales, flip), overridable with
--config.KEY=VALUE except for the model. Images are padded to multiples of BUCKET pixels, so images of many sizes
share a few compilations. User errors (no workdir, no checkpoint, no image, an unreadable file) print one line and
exit with status 2; every file is written whole or not at all.
"""

from __future__ import annotations

import functools
import io
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from PIL import Image

from segjax import cli, config_utils, steps
from segjax.data import transforms
from segjax.data.folder import IMAGE_SUFFIXES
from segjax.evaluate import EvalError, restore_run, run_config
from segjax.logging_utils import quiet_libraries, write_atomic
from segjax.models import create_model

BUCKET = 64
OVERLAY_ALPHA = 0.5


def image_paths(inputs) -> list[str]:
    """The image files named by `inputs` (files or folders, sorted within a folder); EvalError when there are
    none or an input does not exist."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(f for f in os.listdir(item) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
            paths += [os.path.join(item, f) for f in found]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise EvalError(f"{item} is neither an image file nor a folder.")
    if not paths:
        raise EvalError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}.")
    return paths


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 class colours (matplotlib's tab20, as segjax-eval's figures)."""
    cmap = matplotlib.colormaps["tab20"]
    return np.array([np.round(np.array(cmap(i % 20)[:3]) * 255) for i in range(num_classes)], np.uint8)


def predict_files(workdir: str, inputs, out: str, *, step="latest", config=None) -> list[str]:
    """Writes the mask and the overlay of every image of `inputs` into `out`; returns the masks' paths."""
    paths = image_paths(inputs)
    task, state, _ = restore_run(workdir, step, config)
    # Outside a wrapped step: the same parameters, batch norm without the data-parallel axis.
    model = create_model(task.config.model, task.num_classes, dtype=task.dtype)
    variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
    variables = jax.tree.map(jnp.asarray, variables)
    spec = task.inference_spec()
    data = task.config.data
    colours = palette(task.num_classes)
    os.makedirs(out, exist_ok=True)
    written = []
    for path in paths:
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except OSError as e:
            raise EvalError(f"{path}: unreadable image ({e}).") from None
        h, w = rgb.shape[:2]
        size = (-(-h // BUCKET) * BUCKET, -(-w // BUCKET) * BUCKET)
        padded = np.zeros((*size, 3), np.uint8)
        padded[:h, :w] = rgb
        x = transforms.normalize(padded, tuple(data.mean), tuple(data.std))[None]
        mask = np.asarray(_predict(model, spec, variables, jnp.asarray(x)))[0, :h, :w].astype(np.uint8)
        stem = os.path.join(out, os.path.splitext(os.path.basename(path))[0])
        indexed = Image.fromarray(mask, mode="P")
        indexed.putpalette(colours.reshape(-1).tolist())
        blended = ((1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colours[mask]).astype(np.uint8)
        write_atomic(stem + ".png", _png(indexed))
        write_atomic(stem + "_overlay.png", _png(Image.fromarray(blended)))
        written.append(stem + ".png")
    return written


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict(model, spec: steps.InferenceSpec, variables, images):
    return jnp.argmax(steps.predict_scores(model, variables, images, spec), axis=-1)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv=None):
    """Entry point of `segjax-predict`."""
    parser = cli.ArgumentParser(prog="segjax-predict", description="Segment images with a checkpoint of a run.")
    parser.add_argument("inputs", nargs="+", help="image files or folders of images")
    parser.add_argument("--workdir", required=True, help="workdir of a segjax-train run")
    parser.add_argument("--out", required=True, help="folder for the masks and overlays")
    parser.add_argument("--step", default="latest", help="checkpoint: latest, best (validation mIoU) or a step")
    parser.add_argument("--config", default=None, help="a config replacing the workdir's (must build the same model)")
    args, config = config_utils.parse_with_config(parser, argv, base_config=lambda args: run_config(args.workdir))
    quiet_libraries()
    try:
        written = predict_files(args.workdir, args.inputs, args.out, step=args.step, config=config)
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    print(f"wrote {len(written)} masks and overlays to {args.out}")


if __name__ == "__main__":
    main()
