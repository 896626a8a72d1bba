"""segjax.cli: the CPU speed flag is set where a process starts, never on import, and only when jaxlib knows it;
every command takes --debug, which turns its one-line user errors back into the original exception."""

import importlib
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from segjax import cli, evaluate, export, predict, summary, train
from segjax.config import ConfigError
from segjax.data import prepare
from segjax.data.prepare import PrepareError
from segjax.run import RunError

REPO = pathlib.Path(__file__).resolve().parents[1]


YNN, ONEDNN = "--xla_cpu_experimental_ynn_fusion_type=dot", "--xla_cpu_experimental_onednn_custom_call=true"
SWITCHES = ("XLA_FLAGS", "SEGJAX_XLA_CPU_YNN", "SEGJAX_XLA_CPU_ONEDNN")


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, YNN),
        ({"SEGJAX_XLA_CPU_ONEDNN": "1"}, f"{YNN} {ONEDNN}"),
        ({"SEGJAX_XLA_CPU_YNN": "0"}, ""),
        ({"SEGJAX_XLA_CPU_YNN": "0", "SEGJAX_XLA_CPU_ONEDNN": "1"}, ONEDNN),
        (
            {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=eltwise", "SEGJAX_XLA_CPU_ONEDNN": "1"},
            f"--xla_cpu_experimental_ynn_fusion_type=eltwise {ONEDNN}",
        ),
        (
            {"XLA_FLAGS": "--xla_cpu_experimental_onednn_custom_call=false", "SEGJAX_XLA_CPU_ONEDNN": "1"},
            f"--xla_cpu_experimental_onednn_custom_call=false {YNN}",
        ),
    ],
)
def test_commands_add_the_kernel_flags_their_switches_turn_on(env, expected):
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
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
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    code = "import os, segjax, segjax.train, segjax.models; print(repr(os.environ.get('XLA_FLAGS')))"
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"


def test_a_flag_unknown_to_jaxlib_is_not_added(monkeypatch):
    assert cli.jaxlib_knows("xla_cpu_experimental_ynn_fusion_type")
    assert not cli.jaxlib_knows("xla_cpu_no_such_flag_anywhere")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    monkeypatch.delenv("SEGJAX_XLA_CPU_YNN", raising=False)
    monkeypatch.setenv("SEGJAX_XLA_CPU_ONEDNN", "1")
    monkeypatch.setattr(cli, "jaxlib_knows", lambda flag: False)
    assert not cli.use_fast_cpu_kernels()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


def _commands():
    """{console script: its entry point} from pyproject.toml's [project.scripts]."""
    with open(REPO / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    return {name: target for name, target in sorted(scripts.items())}


@pytest.mark.parametrize("command, target", _commands().items())
def test_every_command_takes_debug(command, target, capsys):
    module, _, function = target.partition(":")
    with pytest.raises(SystemExit) as exit_info:
        getattr(importlib.import_module(module), function)(["--help"])
    assert exit_info.value.code == 0
    assert "--debug" in capsys.readouterr().out, f"{command} ({target}) does not take --debug"


# A user error of each command (command, entry point, argv given tmp_path, exception --debug raises, message).
USER_ERRORS = [
    ("segjax-train", train.main, lambda tmp: [f"--config={REPO}/configs/no_such.py", f"--workdir={tmp}/run"],
     ConfigError, "no_such.py' does not exist"),
    ("segjax-eval", evaluate.main, lambda tmp: [f"--workdir={tmp}/nope"], RunError, "does not exist"),
    ("segjax-predict", predict.main, lambda tmp: ["a.png", f"--workdir={tmp}/nope", f"--out={tmp}/out"],
     RunError, "does not exist"),
    ("segjax-export", export.main, lambda tmp: [f"--workdir={tmp}/nope", f"--out={tmp}/out"], RunError,
     "does not exist"),
    ("segjax-prepare", prepare.main, lambda tmp: ["voc", f"{tmp}/elsewhere", f"{tmp}/dest"],
     PrepareError, "VOCdevkit/VOC2012"),
    ("segjax-models", summary.main, lambda tmp: ["--size=big"], ValueError, "--size must be N or HxW"),
]  # fmt: skip


@pytest.fixture
def restore_debug(monkeypatch):
    """Puts cli's --debug state back after the test, so the commands' in-process calls do not leak it."""
    monkeypatch.setattr(cli, "_debug", False)


@pytest.mark.parametrize("command, main, argv, error, message", USER_ERRORS, ids=[e[0] for e in USER_ERRORS])
def test_debug_raises_the_error_a_user_otherwise_sees_in_one_line(
    command, main, argv, error, message, tmp_path, capsys, restore_debug
):
    with pytest.raises(SystemExit) as exit_info:
        main(argv(tmp_path))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"{command}: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(error) as raised:
        main([*argv(tmp_path), "--debug"])
    assert raised.type is error and raised.traceback[-1].name != "fail"  # the original, raised where it happened
    assert capsys.readouterr().err == ""
    assert os.listdir(tmp_path) == []  # nothing written either way
    with pytest.raises(SystemExit):  # the next command line without --debug is one line again
        main(argv(tmp_path))


def test_debug_leaves_command_line_mistakes_in_one_line(capsys, restore_debug):
    """A syntax error has no traceback worth showing; neither has a check that raised nothing."""
    for argv in (["--debug", "--num-classes=many"], ["--debug", "--models=unet,foo"]):
        with pytest.raises(SystemExit) as exit_info:
            summary.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_fail_reraises_only_with_debug(restore_debug, capsys):
    parser = cli.ArgumentParser(prog="test")
    for argv, outcome in (([], SystemExit), (["--debug"], KeyError)):
        parser.parse_args(argv)
        with pytest.raises(outcome):
            try:
                {}["missing"]
            except KeyError:
                cli.fail("test", "missing is not there")
    assert capsys.readouterr().err == "test: error: missing is not there\n"
