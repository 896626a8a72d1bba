"""segjax: semantic segmentation in JAX/Flax, built around a library of upsampling operators."""

import os

__version__ = "0.1.0"

# XLA:CPU hands convolutions and matrix products to YNNPACK only when this flag asks for it. On the 2-core
# CPU it makes a U-Net or SegNet training step about 3x faster (128 px: 0.35 and 0.29x PyTorch without it,
# 1.07 and 0.98x with it; `SEGJAX_XLA_CPU_YNN=0 python experiments/benchmarks/train_step.py --sizes 128`).
# XLA reads XLA_FLAGS when JAX creates its CPU backend, so the flag takes effect when segjax is imported
# before the first JAX computation. A value the user set wins; SEGJAX_XLA_CPU_YNN=0 leaves XLA_FLAGS alone.
# GPUs and TPUs ignore it.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
if os.environ.get("SEGJAX_XLA_CPU_YNN", "1") != "0" and "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}".strip()
