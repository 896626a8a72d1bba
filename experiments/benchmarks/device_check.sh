#!/usr/bin/env bash
# Device check for a machine with an NVIDIA GPU (about 8 minutes): installs the cuda12 extra into .venv-gpu, then
#   1. the tests that do not assume 4 simulated CPU devices (operators, losses, metrics, models) on the GPU;
#   2. the quickstart, timed;
#   3. training throughput and model FLOP utilisation of the paper U-Net and SegNet at 256 px.
# CI never runs it; written without a GPU to run it on (check the first run's log). Usage: bash experiments/benchmarks/device_check.sh [PEAK_TFLOPS_PER_DEVICE]
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
echo "device check done; the log is $LOG"
