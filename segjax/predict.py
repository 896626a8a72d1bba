"""`segjax-predict`: segment image files with a checkpoint of a run; no labels needed.

  segjax-predict --workdir=runs/quickstart photo.png more_images/ --out=predictions
  segjax-predict --workdir=runs/x --step=best --config.eval.mode=slide --config.eval.flip=True images/ --out=out

For every input image (files, or folders of .png/.jpg/.jpeg) it writes `<name>.png`, the class-index mask as a
palette PNG at the image's own size, and `<name>_overlay.png`, the classes' colours over the image. The run's
config decides the network and the inference mode (config.eval: whole / slide, scales, flip), overridable with
--config.KEY=VALUE except for the model. Images are prepared and grouped by size as segjax-eval does (normalised,
padded with zeros to their size rounded up to the network's stride, at most eval.max_buckets sizes: one compilation
each) and predicted eval_batch_size at a time, so a mask is the prediction segjax-eval scores ('resize' mode, an
evaluation shortcut, predicts at the image's own size like 'whole'). A progress bar goes to stderr. User errors
(no workdir, no checkpoint, no image, an unreadable file) print one line and exit with status 2; every file is
written whole or not at all.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import tqdm
from PIL import Image

from segjax import cli
from segjax import config as config_lib
from segjax import run as run_lib
from segjax.data.folder import IMAGE_SUFFIXES
from segjax.files import write_atomic
from segjax.logging_utils import quiet_libraries
from segjax.plots import palette

OVERLAY_ALPHA = 0.5


def image_paths(inputs) -> list[str]:
    """The image files named by `inputs` (files or folders, sorted within a folder); run_lib.RunError when there are
    none or an input does not exist."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(f for f in os.listdir(item) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
            paths += [os.path.join(item, f) for f in found]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise run_lib.RunError(f"{item} is neither an image file nor a folder.")
    if not paths:
        raise run_lib.RunError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}.")
    return paths


def predict_files(workdir: str, inputs, out: str, *, step="latest", config=None) -> list[str]:
    """Writes the mask and the overlay of every image of `inputs` into `out`; returns the masks' paths (in the order
    of the inputs).

    Images are prepared as evaluation prepares them (`DataSpec.eval_transform`: normalised, then padded with zeros
    to their canvas) and grouped by canvas as evaluation groups them (`Task.canvases`), eval_batch_size at a time,
    through the run's wrapped predict step: a mask here is the prediction segjax-eval scores for the same image.
    """
    paths = image_paths(inputs)
    sizes = np.array([_size(path) for path in paths], np.int64).reshape(-1, 2)  # headers only: no decoding yet
    task, state, _ = run_lib.restore(workdir, step, config)
    state = task.layout.replicate(state)
    colours = palette(task.num_classes, task.info.name)
    batch_size = task.config.eval_batch_size
    os.makedirs(out, exist_ok=True)
    written = [""] * len(paths)
    with tqdm.tqdm(total=len(paths), unit="image", desc="predict", file=sys.stderr, disable=None) as bar:
        for canvas, indices in task.canvases(sizes):  # one compilation per canvas
            prepare = task.data.eval_transform(canvas)
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                rgbs = [_read(paths[i]) for i in chunk]
                images = np.stack(
                    [prepare({"image": x, "label": np.zeros(x.shape[:2], np.uint8)})["image"] for x in rgbs]
                )
                for i, rgb, mask in zip(chunk, rgbs, task.predict(state, images), strict=True):
                    h, w = rgb.shape[:2]
                    written[i] = _write(paths[i], out, rgb, mask[:h, :w].astype(np.uint8), colours)
                bar.update(len(chunk))
    return written


def _size(path: str) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError as e:
        raise run_lib.RunError(f"{path}: unreadable image ({e}).") from None


def _read(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as e:
        raise run_lib.RunError(f"{path}: unreadable image ({e}).") from None


def _write(path: str, out: str, rgb: np.ndarray, mask: np.ndarray, colours: np.ndarray) -> str:
    """Writes `<out>/<name>.png` (the mask, a palette PNG) and `<name>_overlay.png`; returns the mask's path."""
    stem = os.path.join(out, os.path.splitext(os.path.basename(path))[0])
    indexed = Image.fromarray(mask, mode="P")
    indexed.putpalette(colours.reshape(-1).tolist())
    blended = ((1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colours[mask]).astype(np.uint8)
    write_atomic(stem + ".png", _png(indexed))
    write_atomic(stem + "_overlay.png", _png(Image.fromarray(blended)))
    return stem + ".png"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv=None):
    """Entry point of `segjax-predict`."""
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = cli.ArgumentParser(prog="segjax-predict", description="Segment images with a checkpoint of a run.")
    parser.add_argument("inputs", nargs="+", help="image files or folders of images")
    parser.add_argument("--workdir", required=True, help="workdir of a segjax-train run")
    parser.add_argument("--out", required=True, help="folder for the masks and overlays")
    parser.add_argument("--step", default="latest", help="checkpoint: latest, best (validation mIoU) or a step")
    parser.add_argument("--config", default=None, help="a config replacing the workdir's (must build the same model)")
    args, config = config_lib.parse_with_config(
        parser, argv, base_config=lambda args: run_lib.stored_config(args.workdir)
    )
    quiet_libraries()
    try:
        written = predict_files(args.workdir, args.inputs, args.out, step=args.step, config=config)
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    print(f"wrote {len(written)} masks and overlays to {args.out}")


if __name__ == "__main__":
    main()
