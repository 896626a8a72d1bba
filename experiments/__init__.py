"""Experiments: studies (declared arms, hypotheses and presets), the runner that executes them, and the report.

Run from the repository root, e.g. ``python -m experiments.upsampling_ablation --preset=cpu`` or
``python -m experiments.reproductions --preset=odena_2x2_cpu``.

Layout, one way from top to bottom (no module imports one above it):

    upsampling_ablation.py, reproductions.py   command lines: the presets of the registered studies
    command.py        the options; records the sweeps (OUT/sweep.json), runs them, measures, writes the report
    report.py         REPORT.md, the CSVs and figures: the generic parts, then every study's sections    (no JAX)
    measure/          a study's own measurements (not one run's), after training -> OUT/studies/<study>.json
    studies/          one module per study: arms, hypotheses, presets, sections(results, report_dir);
                      studies.STUDIES is the registry                                               (no JAX)
    sweep.py          the runner: expand (arm, seed) into configs, train, skip finished runs, resume the rest
    tables.py         number formats, CSV, verdict lines, the section skeleton (open_section)       (no JAX)
    results.py        a sweep folder read back: runs, arms over seeds, hypotheses tested (Results) (no JAX)
    analysis.py       one run's measurements (analysis.json); split.py: those over the validation split
    definitions.py    Arm, Hypothesis, Sweep, the operator table, the budgets                       (no JAX)
    stats.py, figures.py, layout.py   paired statistics, the figures, the file names of a sweep folder

Adding a study: a module in studies/ and its line in studies.STUDIES; if it measures something beyond its runs, a
module in measure/ and its line in measure.MEASURES. The sections only read: what they show was measured by the
runner. Importing report, results, tables or a study imports neither JAX nor segjax.models
(tests/test_studies.py checks it).
"""
