"""segjax.cli: the CPU speed flag is set where a process starts, never on import, and only when jaxlib knows it."""

import os
import subprocess
import sys

import pytest

from segjax import cli


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "--xla_cpu_experimental_ynn_fusion_type=dot"),
        ({"SEGJAX_XLA_CPU_YNN": "0"}, ""),
        (
            {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=eltwise"},
            "--xla_cpu_experimental_ynn_fusion_type=eltwise",
        ),
    ],
)
def test_commands_add_the_ynn_flag_unless_told_otherwise(env, expected):
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SEGJAX_XLA_CPU_YNN")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, segjax.cli as c; c.use_fast_cpu_kernels(); print(os.environ.get('XLA_FLAGS', ''))",
        ],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == expected


def test_importing_segjax_sets_no_flag():
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SEGJAX_XLA_CPU_YNN")}
    code = "import os, segjax, segjax.train, segjax.models; print(repr(os.environ.get('XLA_FLAGS')))"
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"


def test_a_flag_unknown_to_jaxlib_is_not_added(monkeypatch):
    assert cli.jaxlib_knows("xla_cpu_experimental_ynn_fusion_type")
    assert not cli.jaxlib_knows("xla_cpu_no_such_flag_anywhere")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    monkeypatch.delenv("SEGJAX_XLA_CPU_YNN", raising=False)
    monkeypatch.setattr(cli, "jaxlib_knows", lambda flag: False)
    assert not cli.use_fast_cpu_kernels()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
