"""The studies: one module each, with its arms, hypotheses, presets and report sections (no JAX).

A study module holds `PRESETS` (preset name -> a function returning a Sweep or a list of Sweeps) and
`sections(results, report_dir) -> list[str]`, the markdown of its report sections, written from
`experiments.results.Results` alone: the runs' metrics and analysis.json, and the study's measurements in
OUT/studies/<study>.json, which `experiments.measure` computed after training. Adding a study: one module here and
its line in STUDIES (and, if it measures something beyond the runs, a module in experiments/measure/ and its line in
experiments.measure.MEASURES).
"""

from __future__ import annotations

from experiments.studies import ablation, confirmatory, deconvnet, fcn, odena, segnet

# Study name -> module, in the order of the report's sections.
STUDIES = {
    "ablation": ablation,
    "confirmatory": confirmatory,
    "odena": odena,
    "fcn": fcn,
    "segnet": segnet,
    "deconvnet": deconvnet,
}
# Presets that run several studies' presets together.
COMBINED = {"all_cpu": ("fcn_cpu", "odena_cpu", "segnet_cpu")}


def presets(*studies: str) -> dict:
    """Preset name -> sweep function of the given studies (every study when none is named), and the combined
    presets whose parts are all among them."""
    found = {}
    for name in studies or STUDIES:
        found.update(STUDIES[name].PRESETS)
    for name, parts in COMBINED.items():
        if all(p in found for p in parts):
            found[name] = _combined(*(found[p] for p in parts))
    return found


def _combined(*makers):
    return lambda: [make() for make in makers]
