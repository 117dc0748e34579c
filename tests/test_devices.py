"""Devices: naming them, refusing the ones this machine lacks, running every attack, defense
and metric on an explicit device, reading losses back less often, and what mixed precision
does to the attacker's double backward."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_invariants import ATTACK_CASES, DEFENSE_CASES, _attack_problem

import gradleak
from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.adam import run_adam
from gradleak.cli import main
from gradleak.client import simulate_client
from gradleak.defenses import ClientBatch, parse_defense
from gradleak.devices import Speed, available_devices, check_device_spec, resolve_device
from gradleak.errors import GradleakError
from gradleak.metrics import METRICS
from gradleak.models import build_model
from gradleak.pipelines import AuditConfig, run_audit
from gradleak.records import LocalTraining

EXPLICIT = ["cpu", torch.device("cpu")]
NO_GPU = not torch.cuda.is_available()


def test_names_resolve_and_missing_devices_are_refused_with_what_exists():
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert check_device_spec("cuda:3") == "cuda:3"
    for bad in ("tpu", "cuda:x", 3, None):
        with pytest.raises(GradleakError, match="device must be one of auto, cpu, cuda, cuda:N, mps"):
            check_device_spec(bad)
    if NO_GPU:
        with pytest.raises(GradleakError, match=r"device 'cuda' is not on this machine; it has cpu"):
            resolve_device("cuda")
    with pytest.raises(GradleakError, match="is not on this machine; it has " + ", ".join(available_devices())):
        resolve_device("cuda:7")


@pytest.mark.parametrize("device", EXPLICIT, ids=str)
@pytest.mark.parametrize("name", sorted(ATTACK_CASES))
def test_every_attack_runs_on_an_explicit_device(name, device):
    _, options = ATTACK_CASES[name]
    model, update, knowledge = _attack_problem(name)
    plain = ATTACKS.create(name, options).reconstruct(model, update, knowledge, seed=2)
    moved = ATTACKS.create(name, options).reconstruct(model.to(device), update, knowledge, seed=2)
    assert moved.data.device.type == "cpu" and torch.equal(plain.data, moved.data)


@pytest.mark.parametrize("device", EXPLICIT, ids=str)
def test_the_api_takes_a_device(device):
    model, update, knowledge = _attack_problem("ig")
    a = gradleak.reconstruct(model, update, input_shape=(3, 8, 8), labels=[2], attack="ig", iterations=5,
                             device=device)
    b = gradleak.reconstruct(model, update, input_shape=(3, 8, 8), labels=[2], attack="ig", iterations=5)
    assert torch.equal(a.data, b.data) and a.data.device.type == "cpu"


@pytest.mark.parametrize("device", EXPLICIT, ids=str)
@pytest.mark.parametrize("name", sorted(DEFENSE_CASES))
def test_every_defense_runs_on_an_explicit_device(name, device):
    from conftest import tiny_lenet

    model = tiny_lenet(channels=3, size=8, classes=4).to(device)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)).to(device)
    labels = torch.tensor([0, 3], device=device)
    update = simulate_client(model, images, labels)
    client = ClientBatch(model, images, labels, LocalTraining(), "eval", seed=1)
    out = parse_defense(DEFENSE_CASES[name]).transform(update, seed=3, client=client)
    assert all(t.device == torch.device(device) for t in out.tensors)


@pytest.mark.parametrize("device", EXPLICIT, ids=str)
@pytest.mark.parametrize("name", ["mse", "psnr", "ssim", "stlpips"])
def test_metrics_run_on_an_explicit_device(name, device):
    metric = METRICS.get(name)
    try:
        metric.check()
    except GradleakError:
        pytest.skip("weights missing here")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    assert metric.per_sample(x, x.flip(0)).device == torch.device(device)


def test_audits_on_an_explicit_device_match_and_record_it():
    base = dict(model="mlp", dataset="digits", attack="ig", attack_options={"iterations": 5})
    a = run_audit(AuditConfig(**base, device="cpu"))
    b = run_audit(AuditConfig(**base, device="auto"))
    assert a.result.settings["device_used"] == "cpu"
    if b.result.settings["device_used"] == "cpu":
        assert a.result.metrics.values == b.result.metrics.values
    with pytest.raises(GradleakError, match="device must be one of"):
        AuditConfig(device="gpu")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("argv", [
    ["attack", "-m", "mlp", "-d", "digits", "--iterations", "2", "-q"],
    ["rank", "-m", "fcn3", "--counts-only"],
    ["rgap", "-m", "FCN3", "-d", "MNIST"],
    ["utility", "-m", "mlp", "--clients", "2", "--rounds", "1"],
    ["igsa", "-m", "mlp", "-d", "digits", "-n", "1", "--samples", "1"],
], ids=lambda a: a[0])
def test_cli_refuses_a_gpu_this_machine_lacks(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--device", "cuda"]) == 2
    assert "device 'cuda' is not on this machine; it has cpu" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_reading_losses_back_less_often_keeps_the_best_iterate_honest():
    torch.manual_seed(0)
    target = torch.randn(3, 10)

    def objective(rows):
        return ((rows - target) ** 2).sum(1) + 0.1 * rows.abs().sum(1)

    start = torch.zeros(3, 10)
    every = run_adam(objective, start, iterations=40, lr=0.1, signed=False)
    deferred = run_adam(objective, start, iterations=40, lr=0.1, signed=False, sync_every=7)
    # the same steps (nothing stops early here), so the same result exactly
    assert torch.equal(every.best, deferred.best) and every.losses == deferred.losses
    assert deferred.iterations == (40, 40, 40)
    kept = objective(deferred.best)  # the reported loss is the objective of the kept iterate
    assert list(deferred.losses) == pytest.approx(kept.tolist(), rel=1e-5)
    # a converging row stops at the next read-back, at most sync_every - 1 steps late
    stop = run_adam(objective, start, iterations=40, lr=0.1, signed=False, tol=float(objective(start).min()) * 0.5)
    late = run_adam(objective, start, iterations=40, lr=0.1, signed=False, tol=float(objective(start).min()) * 0.5,
                    sync_every=7)
    assert "converged" in stop.statuses and "converged" in late.statuses
    assert max(stop.iterations) <= max(late.iterations) < max(stop.iterations) + 7


def test_speed_settings_set_and_reset_the_backends():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        Speed(tf32=True, cudnn_benchmark=True).apply()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark
        Speed().apply()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = before


def test_bfloat16_breaks_the_double_backward_near_convergence():
    """Why gradleak offers no mixed precision: under bf16 autocast the gradient of the cosine
    objective wrt the image, which the attack follows, is off by about half its norm near
    convergence (fp32 loss 7e-4), where 1 - cos needs more digits than bf16 holds."""
    model = build_model("convnet", num_classes=10, input_shape=(3, 32, 32), seed=0, width=16)
    params = list(model.parameters())
    x, y = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([3])
    target = torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def image_gradient(dtype):
        z = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            g = torch.autograd.grad(F.cross_entropy(model(z), y), params, create_graph=True)
            dot = sum((a.float() * b).sum() for a, b in zip(g, target))
            loss = 1 - dot / (sum((a.float() ** 2).sum() for a in g).sqrt() * sum((b ** 2).sum() for b in target).sqrt())
        return torch.autograd.grad(loss, z)[0].float()

    exact, coarse = image_gradient(None), image_gradient(torch.bfloat16)
    assert float((coarse - exact).norm() / exact.norm()) > 0.2


def test_doctor_reports_devices_and_extras(capsys):
    assert main(["doctor", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["devices"][0]["device"] == "cpu" and "flwr" in found["extras"]
    assert set(found["metric_weights"]) == {"lpips", "lpips-vgg", "stlpips", "stlpips-vgg"}


def test_sweep_workers_take_one_gpu_each(monkeypatch):
    import os
    import queue

    from gradleak.sweep.cell import init_worker
    from gradleak.sweep.executors import make_executor

    slots = queue.Queue()
    for gpu in (3, 5):
        slots.put(gpu)
    seen = []
    for _ in range(2):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        init_worker(1, None, slots)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["3", "5"]
    torch.set_num_threads(1)
    assert make_executor("local", gpus=[0, 1]).workers == 2
    assert make_executor("local", workers=4, gpus=[0, 1]).workers == 4
    assert make_executor("ray", gpus_per_cell=0.25).gpus_per_cell == 0.25 if _has_ray() else True
    with pytest.raises(GradleakError, match="--gpus-per-cell is for --executor ray"):
        make_executor("local", gpus_per_cell=0.5)


def _has_ray() -> bool:
    from importlib.util import find_spec

    return find_spec("ray") is not None
