"""The upsampling ablation's command line: python -m experiments.upsampling_ablation --preset=NAME.

The presets are the exploratory ablation's (pilot_cpu, cpu, gpu, smoke_cpu: experiments/studies/ablation.py, the
U-Net hypotheses H1-H5) and the confirmatory study's (pilot_before, pilot_after, confirmatory_cpu:
experiments/studies/confirmatory.py, the preregistered contrasts C1-C5); the options are experiments.command's.
"""

from __future__ import annotations

import sys

from experiments import command, studies

PRESETS = studies.presets("ablation", "confirmatory")

if __name__ == "__main__":
    sys.exit(command.main(PRESETS, prog="experiments.upsampling_ablation"))
