"""The studies' own measurements: what a study reports that is not one run's analysis.json (JAX).

Each module here has `measure(out, runs, previous) -> dict | None`: given the sweep folder, the sweep's runs
(`experiments.sweep.Run`) and what it measured before (None after `--reanalyze`), it returns the study's
measurements, or None to keep the file as it is (nothing new to measure). `measure_studies` runs every one after
training and writes OUT/studies/<study>.json, which the study's section (experiments/studies/) reads. A study without
measurements of its own has no module here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from experiments import layout
from experiments.measure import deconvnet, odena, segnet
from segjax.files import write_json

# Study name (experiments.studies.STUDIES) -> its measurement.
MEASURES = {
    "odena": odena.measure,
    "segnet": segnet.measure,
    "deconvnet": deconvnet.measure,
}


def measure_studies(
    out: str | os.PathLike, runs: Sequence, *, again: bool = False, log: Callable[[str], None] = print
) -> list[str]:
    """Measure what the studies need that is not measured yet (everything when `again`); returns the studies whose
    measurements were written."""
    written = []
    for name, measure in MEASURES.items():
        path = layout.study_file(out, name)
        previous = None if again or not path.exists() else layout.read_json(path)
        measured = measure(out, runs, previous)
        if measured is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, measured)
            written.append(name)
            log(f"[sweep] measured study {name}: {path}")
    return written
