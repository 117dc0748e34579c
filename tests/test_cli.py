import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradleak.cli import main


def run_cli(*args):
    return main([*args])


def test_restart_options_pass_through_the_cli(tmp_path):
    out = tmp_path / "run"
    code = run_cli("attack", "-a", "ig", "--iterations", "8", "--restarts", "4", "--attack-opt",
                   "halving=[0.25, 0.5]", "-q", "-o", str(out), "--image-size", "16")
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["restart_statuses"].count("halved") == 3 and report["timings"]["attack_iterations"] == 16


def test_analytic_fc_through_the_cli_reports_units(tmp_path):
    out = tmp_path / "run"
    assert run_cli("attack", "-a", "analytic-fc", "-m", "mlp", "-b", "2", "-q", "-o", str(out),
                   "--image-size", "8") == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["metrics"]["psnr"] > 60 and len(report["units"]) == 2 and all(report["units"])


def test_attack_writes_report_and_refuses_existing_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli("attack", "--iterations", "30", "--restarts", "1", "-q", "-o", str(out), "--image-size", "16")
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.yaml", "metrics.json", "reconstruction.png"]
    report = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim", "mse", "label_accuracy"} <= set(report["metrics"])
    assert report["knowledge"]["assumption_levels"] == [0]
    assert report["knowledge"]["labels"] == "inferred"
    assert report["seed"] == 0 and "torch" in report["versions"]
    assert report["settings"]["model"] == "lenet" and report["settings"]["indices"] == [0]
    assert report["restart_mode"] == "stacked" and report["peak_memory_bytes"] > 0
    capsys.readouterr()
    code = run_cli("attack", "--iterations", "1", "-q", "-o", str(out))
    assert code == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    code = run_cli("attack", "--iterations", "2", "--restarts", "1", "-q", "-o", str(out), "--overwrite",
                   "--image-size", "16")
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["timings"]["attack_iterations"] <= 2
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folders left behind


def test_yaml_config_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: digits\nattack: ig\nattack_options: {iterations: 3, tv: 0.01}\nbatch_size: 2\n")
    out = tmp_path / "run"
    assert run_cli("attack", "--config", str(cfg), "--iterations", "4", "-q", "-o", str(out), "-m", "mlp") == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["dataset"] == "digits" and settings["attack_options"] == {"iterations": 4, "tv": 0.01}
    assert len(settings["indices"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["-a", "nope"], "unknown attack 'nope'; known attacks: analytic-fc, bayes, cosine, dlg, "),
        (["-m", "nope"], "unknown model 'nope'"),
        (["-d", "nope"], "unknown dataset 'nope'"),
        (["-i", "100000"], "indices"),
        (["-b", "100000"], "batch_size"),
        (["-d", "cifar10", "--data-root", "/nonexistent"], "--download"),
        (["--attack-opt", "bogus=1"], "does not take ['bogus']"),
        (["-p", "/nonexistent.pt"], "/nonexistent.pt"),
    ],
)
def test_user_errors_are_one_line_with_exit_2_and_no_output(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = run_cli("attack", "-q", "-o", str(out), "--iterations", "1", *args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_yaml_key_is_named(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("datset: photos\n")
    assert run_cli("attack", "--config", str(cfg), "-o", str(tmp_path / "r")) == 2
    assert "unknown keys ['datset']" in capsys.readouterr().err


def test_list_shows_every_registry(capsys):
    assert run_cli("list") == 0
    text = capsys.readouterr().out
    for name in ("dlg", "idlg", "ig", "lenet", "convnet", "resnet18", "cnn6", "photos", "faces", "digits", "psnr",
                 "ssim"):
        assert name in text


def test_console_script_entry_point_runs(tmp_path):
    script = Path(sys.executable).with_name("gradleak")
    assert script.is_file(), f"console script not installed next to {sys.executable}"
    proc = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "attacks" in proc.stdout
    proc = subprocess.run([str(script), "attack", "--seed", "-1", "-o", str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "seed must be an integer >= 0, got -1" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_fedavg_attacker_that_knows_the_local_training_records_level_3(tmp_path):
    out = tmp_path / "run"
    code = run_cli("attack", "--protocol", "fedavg", "--epochs", "2", "--local-batch-size", "2", "-b", "4",
                   "--lr", "0.1", "-a", "ig", "--iterations", "3", "--knows-training", "--labels", "given", "-q",
                   "-o", str(out), "--image-size", "16", "-m", "convnet", "--model-opt", "width=4")
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["knowledge"]["assumption_levels"] == [0, 1, 3]
    assert report["knowledge"]["labels"] == "given" and report["metrics"]["label_accuracy"] == 1.0
    assert report["settings"]["local_steps"] == 4
