"""segjax: semantic segmentation in JAX/Flax, built around a library of upsampling operators."""
import os

__version__ = "0.1.0"

# XLA:CPU hands convolutions and matrix products to YNNPACK only when this flag asks for it. On the 2-core
# CPU it makes the three convolution kernels of a training step (forward, input and kernel gradient) as
# fast as PyTorch's oneDNN ones; the kernel gradient is 2.4-8x faster than XLA's default path (the larger
# factors on the large, few-channel maps; see experiments/benchmarks/train_step.py and ops.py). XLA reads XLA_FLAGS when JAX creates its CPU backend,
# so the flag takes effect when segjax is imported before the first JAX computation. A value the user set
# wins; SEGJAX_XLA_CPU_YNN=0 leaves XLA_FLAGS alone. GPUs and TPUs ignore it.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
if (os.environ.get("SEGJAX_XLA_CPU_YNN", "1") != "0"
    and "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}".strip()
