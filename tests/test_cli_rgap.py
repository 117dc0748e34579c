"""`gradleak rgap` (the R-GAP paper's three command lines, on tiny data) and `gradleak rank`."""

import json
import pickle

import numpy as np
import pytest

from gradleak.cli import main


def _write_cifar10(root):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2))
    return root


def _files(out):
    return sorted(p.name for p in out.iterdir())


def test_rgap_index_0_uses_local_cifar10_files(tmp_path, capsys):
    root = _write_cifar10(tmp_path / "data")
    out = tmp_path / "a"
    assert main(["rgap", "-i", "0", "--data-root", str(root), "--image-size", "16", "-o", str(out)]) == 0
    assert _files(out) == ["metrics.json", "origin.png", "reconstructed.png", "rescale_reconstructed.png", "rgap.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["indices"] == [0] and metrics["fallback"] is None and "cifar10 python format" in metrics["dataset_source"]
    assert metrics["metrics"]["psnr"] >= 40 and metrics["recovered_labels"] == metrics["labels"]
    assert "PSNR" in capsys.readouterr().out


def test_rgap_cnn6_d_on_a_random_builtin_image_says_so_and_fails_as_the_paper_shows(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["rgap", "-m", "CNN6-d", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "using the built-in photos set instead" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["psnr"] < 20  # rank deficient: the paper's point


def test_rgap_fcn3_mnist_batch_of_5_falls_back_to_digits(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["rgap", "-m", "FCN3", "-d", "MNIST", "-b", "5", "-o", str(out)]) == 0
    assert "built-in digits" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "combination" and len(metrics["indices"]) == 5 and len(metrics["psnr"]) == 5


def test_rgap_loads_a_checkpoint_and_refuses_bad_flags(tmp_path, capsys):
    import torch

    from gradleak.models import build_model

    ckpt = tmp_path / "fcn3.pt"
    torch.save(build_model("fcn3", num_classes=1, input_shape=(1, 28, 28), seed=7).state_dict(), ckpt)
    assert main(["rgap", "-m", "FCN3", "-d", "MNIST", "-p", str(ckpt), "-i", "3", "-o", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["metrics"]["psnr"] >= 40
    assert main(["rgap", "-m", "LeNet", "-o", str(tmp_path / "e")]) == 2
    assert main(["rgap", "-d", "SVHN", "-o", str(tmp_path / "f")]) == 2
    assert main(["rgap", "-b", "999", "-o", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "model must be one of CNN6, CNN6-d, FCN3" in err and "unknown dataset 'SVHN'; known datasets:" in err
    assert "batch size 999 exceeds the 125 images of photos" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "fcn3.pt"]  # refusals write nothing


def test_a_failing_writer_leaves_the_old_folder_and_no_temporary(tmp_path):
    from gradleak.io import write_folder

    out = tmp_path / "out"
    write_folder(out, lambda tmp: (tmp / "a.txt").write_text("old"))

    def broken(tmp):
        (tmp / "a.txt").write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(out, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "a.txt").read_text() == "old"


def test_rank_json_and_table(capsys):
    assert main(["rank", "-m", "fcn3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recoverable"] and [layer["unknowns"] for layer in report["layers"]] == [784, 1000, 100]
    assert main(["rank", "-m", "cnn6-d", "--input-shape", "3,16,16"]) == 0
    assert "risk index" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["convnet", "resnet18"])
def test_relu_convnet_and_resnet_exit_2_with_one_line(model, tmp_path, capsys):
    assert main(["attack", "--attack", "rgap", "-m", model, "-q", "-o", str(tmp_path / "r")]) == 2
    assert main(["rank", "-m", model]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 2 and all(line.startswith("gradleak: error: R-GAP cannot invert this model") for line in lines)
