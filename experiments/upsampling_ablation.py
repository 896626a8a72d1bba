"""The upsampling ablation's command line: python -m experiments.upsampling_ablation --preset=NAME.

The presets (pilot_cpu, cpu, gpu, smoke_cpu), the U-Net hypotheses H1-H5 and their description are the ablation
study's, experiments/studies/ablation.py; the options are experiments.command's.
"""

from __future__ import annotations

import sys

from experiments import command, studies

PRESETS = studies.presets("ablation")

if __name__ == "__main__":
    sys.exit(command.main(PRESETS, prog="experiments.upsampling_ablation"))
