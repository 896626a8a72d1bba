"""segjax.config: every family file builds a valid config and model; command-line overrides parse, typos and wrong
types are errors before anything runs (one line, exit 2)."""

import os

import pytest

from segjax import cli, evaluate, optim, summary, train
from segjax import config as config_lib
from segjax.config import load_sibling
from segjax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = [
    ("default.py", None),
    ("quickstart.py", None),
    ("unet.py", "small"),
    ("unet.py", "paper"),
    ("fcn.py", "32s"),
    ("fcn.py", "16s"),
    ("fcn.py", "8s"),
    ("segnet.py", None),
    ("deconvnet.py", None),
    ("segnet_basic.py", None),
    ("segnet_basic.py", "decoder=fcn"),
    ("segnet_basic.py", "decoder=fcn_noaddition"),
    ("segnet_basic.py", "decoder=bilinear,preset=paper"),
    ("pets_unet.py", None),
]


def _config(file_name, arg=None):
    module = load_sibling(os.path.join(REPO, "configs", file_name), file_name[:-3])
    return module.get_config(arg) if arg is not None else module.get_config()


@pytest.mark.parametrize("file_name,arg", FAMILIES)
def test_family_configs_are_valid(file_name, arg):
    config = _config(file_name, arg)
    config_lib.validate(config)
    optim.OptimizerSpec.from_config(config.optimizer), optim.ScheduleSpec.from_config(config)
    model = create_model(config.model, 6)
    if arg in ("32s", "16s", "8s"):
        assert config.model.name == f"fcn{arg}"
    assert model is not None
    # The default config lists every key the families use: no family adds a key of its own.
    assert set(_flat(config.to_dict())) == set(_flat(_config("default.py").to_dict()))


def _flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_config_arguments_are_parsed_by_one_helper():
    assert _config("unet.py", "preset=paper,depth=3").model.to_dict() == dict(
        _config("unet.py", "paper").model.to_dict(), depth=3
    )
    assert _config("fcn.py", "16s").model.name == "fcn16s" and _config("fcn.py").model.name == "fcn8s"
    assert _config("fcn.py", "stride=32s,preset=paper").model.preset == "paper"
    for file_name, arg, match in [
        ("fcn.py", "4s", r"fcn.py: stride='4s' is not one of 8s, 16s, 32s"),
        ("unet.py", "preset=small,dept=3", r"unknown option 'dept'; options: preset \(small\|paper\), depth"),
        ("unet.py", "small,3", "needs a name"),
        ("quickstart.py", "small", "needs a name"),
    ]:
        with pytest.raises(config_lib.ConfigError, match=match):
            _config(file_name, arg)


def test_deconvnet_config_derives_from_segnet():
    deconvnet, segnet = _config("deconvnet.py"), _config("segnet.py")
    keys = config_lib.flat_keys(deconvnet)
    assert keys == config_lib.flat_keys(segnet)
    changed = {k for k in keys if _get(deconvnet, k) != _get(segnet, k)}
    assert changed == {"model.name", "loss.class_weighting", "optimizer.learning_rate", "schedule.name"}


def _get(config, key):
    for part in key.split("."):
        config = config[part]
    return config


def _train_cli(capsys, *args):
    """segjax-train's main in this process: (exit status, stderr); parse errors exit before anything runs."""
    with pytest.raises(SystemExit) as exit_info:
        train.main(list(args))
    return exit_info.value.code, capsys.readouterr().err


def test_command_line_overrides():
    parser = cli.ArgumentParser(prog="test")
    parser.add_argument("--config")
    _, config = config_lib.parse_with_config(
        parser,
        [
            "--config=configs/unet.py:small",
            "--config.model.upsample.method=resize_conv",
            "--config.seed=3",
            "--config.model.base_width",  # the value may follow as the next argument
            "8",
            "--config.data.data_dir=/tmp/somewhere",
            "--config.optimizer.grad_clip_norm=1",
            "--config.data.crop_size=(48, 64)",
            "--config.progress_bar=false",
            "--config.loss.class_weighting=0.5,1,2",  # a str key keeps the text as it is
            "--config.data.scale_range=[0.5, 2.0]",  # a list for a tuple key
            "--config.model.upsample.init=icnr",
            "--config.model.upsample.init=None",  # a typed placeholder goes back to None
        ],
    )
    assert tuple(config.data.scale_range) == (0.5, 2.0) and config.model.upsample.init is None
    assert config.model.upsample.method == "resize_conv" and config.seed == 3
    assert config.model.base_width == 8 and config.data.data_dir == "/tmp/somewhere"
    assert config.optimizer.grad_clip_norm == 1.0 and tuple(config.data.crop_size) == (48, 64)
    assert config.progress_bar is False and config.loss.class_weighting == "0.5,1,2"
    assert config.model.name == "unet"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config.no_such_key=3"], "config has no key 'no_such_key'; keys there: batch_size, "),
        (["--config.model.upsampel.method=nearest"], "did you mean model.upsample.method"),
        (["--config.optimizer.learnig_rate=0.1"], "did you mean optimizer.learning_rate"),
        (["--config.seed=three"], "config.seed='three': seed takes a value of type int"),
        (["--config.model.base_width=wide"], "base_width='wide'"),
        (["--config.batch_size=1.5"], "config.batch_size='1.5'"),
        (["--config.progress_bar=maybe"], "progress_bar takes True or False"),
        (["--config.model=unet"], "config.model is a section, not a key; set one of: model.base_width"),
        (["--config.seed"], "--config.seed needs a value"),
        (["--no_such_flag=1"], "unrecognized arguments: --no_such_flag=1"),
    ],
)
def test_train_cli_errors_are_one_line_exit_2_and_write_nothing(capsys, tmp_path, args, message):
    workdir = tmp_path / "run"
    code, err = _train_cli(capsys, f"--config={REPO}/configs/quickstart.py", f"--workdir={workdir}", *args)
    assert code == 2 and err.startswith("segjax-train: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not workdir.exists()


def test_train_cli_reports_bad_config_files(capsys, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    raises = tmp_path / "raises.py"
    raises.write_text("def get_config(arg=None):\n    return {}['missing']\n")
    for config, message in [
        (f"{REPO}/configs/no_such_file.py", "no_such_file.py' does not exist; files there: deconvnet.py"),
        (f"{broken}", "could not be loaded: SyntaxError"),
        (f"{raises}", "get_config failed: KeyError: 'missing'"),
        (f"{REPO}/configs/unet.py:tiny", "unet.py: preset='tiny' is not one of small, paper"),
    ]:
        code, err = _train_cli(capsys, f"--config={config}", f"--workdir={tmp_path / 'run'}")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, err = _train_cli(capsys, f"--workdir={tmp_path / 'run'}")
    assert code == 2 and "the following arguments are required: --config" in err
    assert not (tmp_path / "run").exists()


def test_eval_and_models_cli_errors(capsys, tmp_path):
    for main, args, message in [
        (evaluate.main, [f"--workdir={tmp_path / 'nope'}"], "does not exist"),
        (evaluate.main, [f"--workdir={tmp_path}", "--bogus"], "unrecognized arguments: --bogus"),
        (evaluate.main, [f"--workdir={tmp_path}"], "config.json: it is not a segjax-train workdir"),
        (summary.main, ["--models=unet,foo"], "unknown models ['foo']"),
        (summary.main, ["--size=big"], "--size must be N or HxW"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == []


def test_validation_errors_name_the_key():
    config = _config("default.py")
    config.parallelism = "dp"
    with pytest.raises(ValueError, match="config.parallelism='dp'.*sharded, pmap"):
        config_lib.validate(config)
    config = _config("default.py")
    config.batch_size = 0
    with pytest.raises(ValueError, match="config.batch_size=0 must be a positive integer"):
        config_lib.validate(config)
    config = _config("default.py")
    config.optimizer.name = "lamb"
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'; valid choices: sgd, adam, adamw"):
        optim.OptimizerSpec.from_config(config.optimizer), optim.ScheduleSpec.from_config(config)
