#!/usr/bin/env bash
# Device check for a machine with an NVIDIA GPU: installs the cuda12 extra into .venv-gpu, then
#   1. the tests that do not assume 4 simulated CPU devices (operators, losses, metrics, models) on the GPU;
#   2. the quickstart, timed;
#   3. training throughput and model FLOP utilisation of the paper U-Net and SegNet at 256 px;
#   4. the ablation slice (experiments/benchmarks/sweep_throughput.py: 2 arms x 3 seeds of the 'cpu' preset) trained
#      at 1 and at 3 seeds per program (segjax.multiseed), runs/hour of each and their ratio (issue 25).
# None of it has run on a GPU yet: steps 1-3 were estimated at about 8 minutes; step 4 (2 sweeps of 6 runs of 2000
# steps, each run measured after training) is not estimated, and SWEEP_STEPS=N shortens its runs to N steps.
# CI never runs it; check the first run's log. Usage: bash experiments/benchmarks/device_check.sh [PEAK_TFLOPS_PER_DEVICE]
# (H200 dense bfloat16: 989; without the argument MFU is not printed). Output: device_check.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
PEAK=${1:-}
LOG=device_check.log
exec > >(tee "$LOG") 2>&1

# segjax needs Python >= 3.12: python3.12 where there is one, else python3 (PYTHON=... names another).
PYTHON=${PYTHON:-$(command -v python3.12 || command -v python3)}
"$PYTHON" -m venv .venv-gpu
.venv-gpu/bin/python -m pip install --quiet --upgrade pip
.venv-gpu/bin/pip install --quiet -c constraints.txt -e ".[dev,cuda12]" || .venv-gpu/bin/pip install --quiet -e ".[dev,cuda12]"
.venv-gpu/bin/python -c "import jax; print('devices:', jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== 1. tests on the GPU"
# The parallel, training and distributed tests assume 4 simulated CPU devices; these do not.
time .venv-gpu/bin/python -m pytest -q tests/test_ops_*.py tests/test_losses.py tests/test_metrics.py tests/test_models.py

echo "== 2. quickstart"
time .venv-gpu/bin/segjax-train --config=configs/quickstart.py --workdir="$(mktemp -d)/quickstart" \
  --config.progress_bar=False --config.data.data_dir="$(mktemp -d)/tfds"

echo "== 3. throughput (paper presets, 256 px)"
for dtype in float32 bfloat16; do
  .venv-gpu/bin/python -m experiments.benchmarks.throughput --models=unet,segnet --size=256 --batch=32 \
    --dtype=$dtype --steps=10 --rounds=3 ${PEAK:+--peak-tflops=$PEAK}
done
echo "== 4. ablation slice at 1 and 3 seeds per program"
# Each sweep trains into its own temporary OUT on its own new data folder: both build the data set and compile.
declare -A RUNS_PER_HOUR
for k in 1 3; do
  printed=$(.venv-gpu/bin/python -m experiments.benchmarks.sweep_throughput --seeds-per-program=$k \
    --data-dir="$(mktemp -d)/tfds" ${SWEEP_STEPS:+--steps=$SWEEP_STEPS} | tee /dev/stderr)
  RUNS_PER_HOUR[$k]=$(awk '/^finished runs:/ {print $(NF-1)}' <<<"$printed")
done
awk -v one="${RUNS_PER_HOUR[1]}" -v three="${RUNS_PER_HOUR[3]}" 'BEGIN {
  printf "runs/hour: %s at 1 seed per program, %s at 3 seeds per program: ratio %.2f\n", one, three, three / one }'
echo "device check done; the log is $LOG"
