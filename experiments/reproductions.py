"""The paper reproductions' command line: python -m experiments.reproductions --preset=NAME.

Each preset belongs to one study of experiments/studies/ (whose docstring describes it): odena_cpu, odena_2x2_cpu and
odena_trajectory_cpu (Odena et al.), fcn_128_cpu, fcn_staged_128_cpu and fcn_cpu (Long et al.), segnet_table1_cpu and
segnet_cpu (Badrinarayanan et al.), deconvnet_128_cpu (Noh et al.); all_cpu runs fcn_cpu, odena_cpu and segnet_cpu
together. fcn_128_cpu, fcn_staged_128_cpu and deconvnet_128_cpu train on FCN's 128 px budget, segnet_table1_cpu,
odena_2x2_cpu and odena_trajectory_cpu on the ablation's CPU budget (chosen from a U-Net pilot); each report's
convergence table says how close every arm came. The others use the smoke-test budget of experiments.definitions
(200 steps, 3 seeds: far from converged) and reuse the smoke_cpu ablation's finished runs when pointed at the same
--out.
"""

from __future__ import annotations

import sys

from experiments import command, studies

PRESETS = studies.presets("odena", "fcn", "segnet", "deconvnet")

if __name__ == "__main__":
    sys.exit(command.main(PRESETS, prog="experiments.reproductions"))
