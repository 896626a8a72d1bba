"""experiments.preregistration: a frozen plan is written once, committed, and checked; any change after the commit
that froze it, or a study that declares another plan, is refused."""

import json
import subprocess

import pytest

from experiments import command, definitions, layout, preregistration, studies
from experiments.gates import Collapse, Gate


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _sweep(seeds=(10, 11)):
    arms = (definitions.operator_arm("unet", "bilinear"), definitions.operator_arm("unet", "transposed_k2_default"))
    hypothesis = definitions.Hypothesis("C", "?", "unet", "bilinear", "transposed_k2_default", claim="equivalent")
    return definitions.Sweep(
        "s", arms, seeds, {"num_train_steps": 5}, "", (hypothesis,), gate=Gate(), collapse=Collapse()
    )


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "README").write_text("x\n")
    _git(tmp_path, "add", "README")
    _git(tmp_path, "commit", "-qm", "start")
    return tmp_path


def test_a_committed_plan_checks_and_any_change_is_refused(repo):
    plan = preregistration.plan(_sweep())
    path = preregistration.write("study", plan, repo)
    assert json.loads(path.read_text())["sweep"]["hypotheses"][0]["statement"].startswith("|bilinear")
    with pytest.raises(preregistration.PreregistrationChanged, match="is not committed"):
        preregistration.check("study", plan, repo)
    _git(repo, "add", path.name)
    _git(repo, "commit", "-qm", "freeze the plan")
    frozen = preregistration.check("study", plan, repo)
    assert len(frozen) >= 7
    # The code now declares other seeds: refused, naming the commit.
    with pytest.raises(
        preregistration.PreregistrationChanged, match=f"no longer declares the plan frozen .* at {frozen}"
    ):
        preregistration.check("study", preregistration.plan(_sweep((10, 12))), repo)
    # A committed plan is never rewritten ...
    with pytest.raises(preregistration.PreregistrationChanged, match="committed already"):
        preregistration.write("study", plan, repo)
    # ... and an edit of the file, committed or not, is refused.
    path.write_text(path.read_text().replace("Holm", "Bonferroni"))
    with pytest.raises(
        preregistration.PreregistrationChanged, match=f"changed after the commit that froze it \\({frozen}\\)"
    ):
        preregistration.check("study", plan, repo)
    _git(repo, "commit", "-qam", "edit the plan")
    with pytest.raises(preregistration.PreregistrationChanged, match="changed after the commit"):
        preregistration.check("study", plan, repo)


def test_a_missing_plan_is_refused(repo):
    with pytest.raises(preregistration.PreregistrationChanged, match="does not exist"):
        preregistration.check("nothing", {}, repo)


def test_the_runner_runs_part_of_a_preregistered_sweep_but_not_other_seeds(tmp_path):
    """--only runs some arms of the committed plan (checked whole, so the committed confirmatory plan must still be
    what its study declares); --seeds would replace the planned seeds and is refused before anything is written."""
    presets = studies.presets("confirmatory")
    argv = ["--preset=confirmatory_cpu", "--only=k2_default", f"--out={tmp_path / 'out'}", "--report-only"]
    assert command.main(presets, [*argv, "--no-report"]) == 0
    (recorded,) = json.loads((tmp_path / "out" / layout.SWEEP_FILE).read_text())
    assert [arm["label"] for arm in recorded["arms"]] == ["transposed_k2_default"]
    with pytest.raises(SystemExit) as refused:
        command.main(presets, [*argv, "--seeds=2", f"--out={tmp_path / 'other'}"])
    assert refused.value.code == 2 and not (tmp_path / "other").exists()
