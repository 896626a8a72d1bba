"""DeconvNet's study measurement: each seed's FCN-8s and DeconvNet runs and their ensemble (EDeconvNet) on the same
validation pixels, restored from the two finished runs' checkpoints."""

from __future__ import annotations

import functools

import numpy as np

from experiments import layout
from experiments.analysis import apply_inference, initial_and_trained_variables, probabilities
from experiments.split import add_boundary_statistics, boundary_f1, validation_batches
from experiments.studies.deconvnet import MEMBERS, MODEL
from segjax import metrics
from segjax.run import stored_config
from segjax.task import Task


def ensemble_measurements(members: dict[str, tuple]) -> dict[str, dict]:
    """Each member run and their ensemble on the same validation pixels: members maps a name to (config, workdir) of a
    finished run (same dataset); the ensemble averages the members' softmax probabilities (DeconvNet's EDeconvNet
    with FCN-8s). Per name and for 'ensemble': mIoU, pixel and class accuracy, per-class IoU by class name, and
    boundary F1 at BF_TOLERANCES px."""
    networks = {}
    for name, (config, workdir) in members.items():
        task = Task(config, str(workdir))
        networks[name] = (functools.partial(apply_inference, task.model), initial_and_trained_variables(task)[1])
    info = task.info
    names = [*networks, "ensemble"]
    confusion = {n: np.zeros((info.num_classes,) * 2, np.int64) for n in names}
    boundary = dict.fromkeys(names)
    for images, labels in validation_batches(config, info):
        probs = {n: np.asarray(probabilities(apply, v, images)) for n, (apply, v) in networks.items()}
        probs["ensemble"] = np.mean(list(probs.values()), axis=0)
        for n, p in probs.items():
            predictions = p.argmax(-1)
            confusion[n] += np.asarray(
                metrics.confusion_matrix(labels, predictions, info.num_classes, info.ignore_index)
            )
            boundary[n] = add_boundary_statistics(boundary[n], labels, predictions, info.num_classes, info.ignore_index)
    out = {}
    for n in names:
        scores = metrics.compute_scores(confusion[n])
        out[n] = {
            "mean_iou": float(scores["mean_iou"]),
            "pixel_accuracy": float(scores["pixel_accuracy"]),
            "class_accuracy": float(scores["mean_pixel_accuracy"]),
            "iou": {c: float(v) for c, v in zip(info.class_names, np.asarray(scores["per_class_iou"]), strict=True)},
            "boundary_f1": boundary_f1(boundary[n]),
        }
    return out


def measure(out, runs, previous: dict | None) -> dict | None:
    """The ensemble of every seed whose two member runs finished; a seed measured before from the same two runs (same
    config hashes) is kept. None when nothing is new."""
    finished = {
        (r.arm.label, r.seed): r for r in runs if r.arm.model == MODEL and (r.workdir(out) / layout.DONE).exists()
    }
    seeds = sorted(
        {s for label, s in finished if label == MEMBERS[0]} & {s for label, s in finished if label == MEMBERS[1]}
    )
    kept = dict((previous or {}).get("seeds", {}))
    changed = False
    for seed in seeds:
        pair = {label: finished[label, seed] for label in MEMBERS}
        hashes = {label: run.config_hash for label, run in pair.items()}
        if kept.get(str(seed), {}).get("runs") == hashes:
            continue
        members = {label: (stored_config(str(run.workdir(out))), run.workdir(out)) for label, run in pair.items()}
        kept[str(seed)] = {"runs": hashes, "measured": ensemble_measurements(members)}
        changed = True
    return {"seeds": kept} if changed else None
