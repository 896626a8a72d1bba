"""Experiment definitions (sweeps), the runner that executes them, and the report that summarises them.

Run from the repository root, e.g. ``python -m experiments.upsampling_ablation --preset=cpu``.
"""
