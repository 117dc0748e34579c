"""`gradleak generator train`: checkpoint, grid and quality written; the checkpoint loads
with weights_only=True and drives an attack."""

from __future__ import annotations

import json

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.cli.main import main
from gradleak.client import simulate_client
from gradleak.generators import checkpoint_data, load_generator
from gradleak.models import build_model
from gradleak.records import AttackerKnowledge, LabelKnowledge


def test_generator_train_writes_a_checkpoint_that_round_trips(tmp_path):
    out = tmp_path / "g"
    code = main(["generator", "train", "-d", "digits", "--image-size", "8", "--classes", "0-1", "--epochs", "1",
                 "--width", "4", "--latent-dim", "4", "--device", "cpu", "--no-progress", "-o", str(out)])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"generator.pt", "samples.png", "quality.json"}
    state = torch.load(out / "generator.pt", weights_only=True)
    assert state["data"] == checkpoint_data(out / "generator.pt") and state["data"]["classes"] == [0, 1]
    report = json.loads((out / "quality.json").read_text())
    assert report["images"] > 100 and len(report["history"]) == 1 and report["quality"]["samples"] == 256
    gen = load_generator(out / "generator.pt")
    assert gen.image_size == 8 and not gen.training
    again = load_generator(out / "generator.pt")
    z = torch.randn(2, 4)
    assert torch.equal(gen(z), again(z))
    # the file drives an attack as generator=PATH
    model = build_model("lenet", num_classes=10, input_shape=(1, 8, 8), seed=0)
    images = gen(z).detach()
    update = simulate_client(model, images[:1], torch.tensor([1]))
    knowledge = AttackerKnowledge(num_samples=1, input_shape=(1, 8, 8), num_classes=10, bounds=((0.0,), (1.0,)),
                                  label_knowledge=LabelKnowledge.GIVEN, labels=torch.tensor([1]))
    result = ATTACKS.create("ggl", {"generator": str(out / "generator.pt"), "budget": 10}).reconstruct(
        model, update, knowledge)
    assert result.data.shape == (1, 1, 8, 8)
    # and `gradleak attack` reports the generator's nearest training image beside the reconstruction
    report = tmp_path / "attack"
    code = main(["attack", "-a", "ggl", "-d", "digits", "--split", "test", "--image-size", "8", "-m", "mlp",
                 "--attack-opt", f"generator={out / 'generator.pt'}", "--attack-opt", "budget=10", "--device", "cpu",
                 "-q", "-o", str(report)])
    assert code == 0
    evidence = json.loads((report / "latent_evidence.json").read_text())
    assert evidence["training_data"]["classes"] == [0, 1] and len(evidence["nearest_training"]["nearest"]) == 1
    assert evidence["client"]["identified"] == [True]  # one image in the batch: trivially itself
    assert (report / "nearest_training.png").is_file()


def test_bad_classes_exit_2(tmp_path, capsys):
    code = main(["generator", "train", "-d", "digits", "--image-size", "8", "--classes", "12", "--epochs", "1",
                 "--no-progress", "--device", "cpu", "-o", str(tmp_path / "g")])
    assert code == 2 and "classes must be class indices" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["-d", "nope"], "unknown dataset 'nope'"),
    (["-d", "digits", "--classes", "42"], "classes must be class indices in [0, 9]"),
])
def test_bad_data_is_one_line_before_any_progress_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "g"
    code = main(["generator", "train", *args, "--epochs", "1", "-o", str(out)])
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not out.exists()
