"""Test setup: several simulated CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

import segjax  # noqa: E402,F401  (before the first JAX computation: it adds its XLA:CPU flag)

jax.config.update("jax_default_matmul_precision", "highest")
