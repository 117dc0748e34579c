"""Defenses and DP-SGD through `gradleak attack`: applied, reported, and refused early."""

import json

import pytest

from gradleak.cli import main
from gradleak.errors import GradleakError
from gradleak.pipelines.audit import AuditConfig

FAST = ("-a", "ig", "--iterations", "5", "-q", "--image-size", "16")


def _report(out):
    return json.loads((out / "metrics.json").read_text())


def test_defenses_are_applied_in_order_and_reported(tmp_path):
    out = tmp_path / "run"
    assert main(["attack", *FAST, "-o", str(out), "--defense", "topk:keep=0.5", "--defense", "gaussian:sigma=0.01"]) == 0
    report = _report(out)
    assert report["defenses"] == ["topk:keep=0.5,scope=tensor", "gaussian:sigma=0.01"]
    assert report["settings"]["defenses"] == ["topk:keep=0.5", "gaussian:sigma=0.01"]


def test_an_identity_defense_changes_nothing(tmp_path):
    plain, defended = tmp_path / "a", tmp_path / "b"
    assert main(["attack", *FAST, "-o", str(plain)]) == 0
    assert main(["attack", *FAST, "-o", str(defended), "--defense", "gaussian:sigma=0"]) == 0
    assert _report(plain)["per_sample"]["mse"] == _report(defended)["per_sample"]["mse"]


def test_the_bayes_attacker_that_knows_the_defense(tmp_path):
    out = tmp_path / "run"
    code = main(["attack", "-a", "bayes", "--iterations", "5", "-q", "--image-size", "16", "-o", str(out),
                 "--defense", "prune:rate=0.5", "--defense", "laplacian:b=0.01", "--knows-defense", "--knows-mask"])
    assert code == 0 and _report(out)["status"] == "ok"


def test_dp_sgd_client_reports_its_epsilon(tmp_path):
    out = tmp_path / "run"
    assert main(["attack", *FAST, "-o", str(out), "--dp-noise", "1.0", "--dp-clip", "0.5"]) == 0
    report = _report(out)
    assert report["defenses"] == ["dpsgd:noise_multiplier=1,max_grad_norm=0.5"]
    assert 0 < report["privacy"]["epsilon"] < 100 and report["privacy"]["delta"] == 1e-5


@pytest.mark.parametrize("args, message", [
    (["--defense", "topk:keep=2"], "keep must be a number in (0, 1], got 2"),
    (["--defense", "nope"], "unknown defense 'nope'; known defenses: ats, dpsgd, gaussian"),
    (["--defense", "qsgd:bitz=4"], "does not take ['bitz']"),
    (["--knows-defense"], "no defense is applied"),
    (["--defense", "gaussian:sigma=0.1", "--knows-mask"], "knows_mask needs knows_defense"),
    (["--dp-noise", "-1"], "noise_multiplier must be a finite number >= 0"),
    (["--dp-noise", "1", "-m", "convnet"], "BatchNorm"),
])
def test_bad_defense_settings_fail_before_any_output(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["attack", *FAST, "-o", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_config_parses_defenses_early():
    with pytest.raises(GradleakError, match="unknown defense"):
        AuditConfig(defenses=("gaussain:sigma=1",))
