"""`segjax-predict`: segment image files with a checkpoint of a run; no labels needed.

  segjax-predict --workdir=runs/quickstart photo.png more_images/ --out=predictions
  segjax-predict --workdir=runs/x --step=best --config.eval.mode=slide --config.eval.flip=True images/ --out=out

For every input image (files, or folders of .png/.jpg/.jpeg, searched recursively) it writes `<name>.png`, the
class-index mask as a palette PNG at the image's own size, and `<name>_overlay.png`, the classes' colours over the
image. Outputs never replace inputs or each other (`plan_outputs`): <name> keeps the image's path under its input
folder, becomes the path under the inputs' common folder when two inputs share one, and keeps the extension
(`photo.jpg.png`) when two images share a stem; an --out that is or lies inside an input folder is refused, and so
are existing outputs unless --overwrite is given. Images above --max-pixels (default 50 MP) are refused from their
header, before anything is decoded; then every image is decoded whole once, so a damaged one (a body cut short) is
refused by name before the first output is written. The run's
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
from segjax.files import as_path, is_local, write_atomic
from segjax.logging_utils import quiet_libraries
from segjax.plots import palette

OVERLAY_ALPHA = 0.5
MAX_PIXELS = 50_000_000  # an image above this (about 7000x7000) needs many GB of host and device memory


def image_paths(inputs) -> list[str]:
    """The image files named by `inputs` (files, or folders searched recursively, sorted), each once;
    run_lib.RunError when there are none or an input does not exist."""
    return [path for path, _, _ in _found(inputs)]


def _found(inputs) -> list[tuple[str, str, str]]:
    """(path, the input folder it was found in (a file's own folder), its path under that folder) per image."""
    found, seen = [], set()
    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES:
                        path = os.path.join(folder, f)
                        found.append((path, item, os.path.relpath(path, item)))
        elif os.path.isfile(item):
            found.append((item, os.path.dirname(item) or ".", os.path.basename(item)))
        else:
            raise run_lib.RunError(f"{item} is neither an image file nor a folder.")
    unique = []
    for entry in found:  # an image named twice (a file and its folder) is predicted once
        real = os.path.realpath(entry[0])
        if real not in seen:
            seen.add(real)
            unique.append(entry)
    if not unique:
        raise run_lib.RunError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}.")
    return unique


def plan_outputs(inputs, out: str, *, overwrite: bool = False) -> list[tuple[str, str]]:
    """(image path, output stem under `out`) per image of `inputs`, such that no output replaces an input or another
    output; run_lib.RunError, before anything is written, for an --out that is or lies inside an input folder, an
    output that would be an input, and existing outputs without `overwrite`."""
    found = _found(inputs)
    out_real = os.path.realpath(out)
    if as_path(out).exists() and not as_path(out).is_dir():
        raise run_lib.RunError(f"--out {out} is a file; pass a folder for the masks.")
    for item in inputs:
        real = os.path.realpath(item)
        if os.path.isdir(item) and (out_real == real or out_real.startswith(real.rstrip(os.sep) + os.sep)):
            raise run_lib.RunError(
                f"--out {out} is inside the input folder {item}: the masks would mix with (and could replace) the "
                "images; pass an --out outside the inputs."
            )
    names = [rel for _, _, rel in found]
    if len(set(names)) < len(names):  # equal names under different inputs: keep the inputs' own folders
        common = os.path.commonpath([os.path.realpath(root) for _, root, _ in found])
        names = [os.path.relpath(os.path.realpath(path), common) for path, _, _ in found]
    stems = [os.path.splitext(name)[0] for name in names]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    stems = [name if stem in shared else stem for name, stem in zip(names, stems, strict=True)]
    inputs_real = {os.path.realpath(path): path for path, _, _ in found}
    owners: dict[str, str] = {}
    existing = []
    for (path, _, _), stem in zip(found, stems, strict=True):
        for target in (stem + ".png", stem + "_overlay.png"):
            target = os.path.join(out, target)
            real = os.path.realpath(target)
            if real in owners:
                raise run_lib.RunError(
                    f"The outputs of {owners[real]} and {path} would both be {target}; rename one of them."
                )
            if real in inputs_real:
                raise run_lib.RunError(
                    f"The output {target} would replace the input {inputs_real[real]}; pass another --out."
                )
            owners[real] = path
            if os.path.lexists(target) if is_local(target) else as_path(target).exists():
                existing.append(target)
    if existing and not overwrite:
        raise run_lib.RunError(
            f"{len(existing)} output file(s) exist already (e.g. {existing[0]}); pass --overwrite to replace them, or "
            "another --out."
        )
    return [(path, os.path.join(out, stem)) for (path, _, _), stem in zip(found, stems, strict=True)]


def predict_files(
    workdir: str,
    inputs,
    out: str,
    *,
    step="latest",
    config=None,
    overwrite: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> list[str]:
    """Writes the mask and the overlay of every image of `inputs` into `out` (named by `plan_outputs`); returns the
    masks' paths (in the order of the inputs). Everything that can be refused (inputs, outputs, image sizes above
    `max_pixels`, the run and its checkpoint) is checked before the first write.

    Images are prepared as evaluation prepares them (`DataSpec.eval_transform`: normalised, then padded with zeros
    to their canvas) and grouped by canvas as evaluation groups them (`Task.canvases`), eval_batch_size at a time,
    through the run's wrapped predict step: a mask here is the prediction segjax-eval scores for the same image.
    """
    plan = plan_outputs(inputs, out, overwrite=overwrite)
    paths = [path for path, _ in plan]
    sizes = np.array([_size(path, max_pixels) for path in paths], np.int64).reshape(-1, 2)  # every image checked
    task, state, _ = run_lib.restore(workdir, step, config)
    state = task.layout.replicate(state)
    colours = palette(task.num_classes, task.info.name)
    batch_size = task.config.eval_batch_size
    as_path(out).mkdir(parents=True, exist_ok=True)
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
                    written[i] = _write(plan[i][1], rgb, mask[:h, :w].astype(np.uint8), colours)
                bar.update(len(chunk))
    return written


def _size(path: str, max_pixels: int) -> tuple[int, int]:
    """(height, width) of an image file, which is decoded whole to check it (a damaged file is refused before any
    output is written); RunError above `max_pixels`, from the header, before decoding.

    The pixels are dropped and decoded again when the image is predicted: twice the decoding, but memory stays at
    one image, however many there are."""
    try:
        with Image.open(path) as image:
            h, w = image.height, image.width
            if h * w <= max_pixels:
                image.load()  # decoded whole, not only the header
    except (OSError, Image.DecompressionBombError) as e:
        raise run_lib.RunError(f"{path}: unreadable image ({e}); fix or remove it.") from None
    if h * w > max_pixels:
        raise run_lib.RunError(
            f"{path} is {w}x{h} = {h * w} pixels, above the limit of {max_pixels} (--max-pixels): predicting it needs "
            f"about {h * w * 300 / 1e9:.0f} GB of memory; shrink or tile it, or raise --max-pixels."
        )
    return h, w


def _read(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as e:
        raise run_lib.RunError(f"{path}: unreadable image ({e}); fix or remove it.") from None


def _write(stem: str, rgb: np.ndarray, mask: np.ndarray, colours: np.ndarray) -> str:
    """Writes `<stem>.png` (the mask, a palette PNG) and `<stem>_overlay.png`; returns the mask's path."""
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
    parser.add_argument("--overwrite", action="store_true", help="replace masks and overlays that exist already")
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"refuse images above this many pixels ({MAX_PIXELS})"
    )
    args, config = config_lib.parse_with_config(
        parser, argv, base_config=lambda args: run_lib.stored_config(args.workdir)
    )
    quiet_libraries()
    try:
        written = predict_files(
            args.workdir,
            args.inputs,
            args.out,
            step=args.step,
            config=config,
            overwrite=args.overwrite,
            max_pixels=args.max_pixels,
        )
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    print(f"wrote {len(written)} masks and overlays to {args.out}")


if __name__ == "__main__":
    main()
