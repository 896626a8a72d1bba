"""Test setup: several simulated CPU devices (set before jax is imported) and shared fixtures.

`--xla_backend_optimization_level=0` skips LLVM's optimisation of the generated CPU code: the tests run tiny
shapes, where compilation dominates, and it halves the suite's time (measured: the model grid test 56 -> 33
CPU-s). It changes no numbers the tests check; benchmarks and training runs keep XLA's default.
"""
import os

os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""),
    "--xla_force_host_platform_device_count=4",
    "--xla_backend_optimization_level=0",
]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
