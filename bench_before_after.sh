#!/usr/bin/env bash
# Issue 25 item 1: the training-step benchmark before and after the move to Python 3.12 and JAX 0.12, on this
# machine, one run per version: main's .venv (Python 3.11, jax 0.10.2) at /work/main, then this branch's .venv
# (Python 3.12, jax 0.12.0.1) at /work/py312. Each run interleaves torch and segjax steps itself (--rounds), so
# its ratio column is measured under the same load; compare segjax img/s across the two runs. PAIRS=2 runs
# old, new, new, old (about twice as long). Needs torch in both venvs (pip install -e ".[bench]"); the py312 one
# is PyPI's torch 2.13.0 (a CUDA build run on the CPU), main's the CPU build.
# About 3 minutes per pair on 2 cores; holds /tmp/segjax-cpu.lock throughout.
#   bash bench_before_after.sh 2>&1 | tee bench_before_after.log
set -euo pipefail
OLD=${OLD:-/work/main}
NEW=${NEW:-/work/py312}
PAIRS=${PAIRS:-1}
ARGS=(--sizes 64,128 --rounds 5 --steps 2)

run() {
    echo "== $1: $("$1/.venv/bin/python" --version)"
    (cd "$1" && env -u JAX_COMPILATION_CACHE_DIR .venv/bin/python experiments/benchmarks/train_step.py "${ARGS[@]}")
}

lscpu | grep 'Model name'
nproc
exec 9>>/tmp/segjax-cpu.lock
flock 9
for ((i = 0; i < PAIRS; i++)); do
    if ((i % 2 == 0)); then run "$OLD"; run "$NEW"; else run "$NEW"; run "$OLD"; fi
done
