"""R-GAP on CNN6 at 32x32: our matrix-free LSQR solver vs the dense formulation, per layer.

Each convolution's input x is the least-squares solution of its gradient rows
(dW = conv2d_weight(x, k)) and forward rows (conv2d(x, W) = z). The original R-GAP code
writes these rows out as one dense Toeplitz-style matrix per layer and solves it with a
dense least-squares routine; `invert_conv_input` never forms the matrix. Both sides here
solve the identical system (same rows, gradient rows divided by max|k|) from the true
k, z and dW of each layer, in float64, one thread.

Every (method, layer) runs in a fresh subprocess so that its peak resident memory is its
own: the peak is VmHWM after the solve minus VmRSS before it, with the high-water mark
reset just before the solve (/proc/self/clear_refs), i.e. after imports and setup. The
dense side's clock and peak cover building the matrix and solving it (torch.linalg.lstsq,
driver gelsd); ours covers the `invert_conv_input` call. Timings are the best of --repeat.

    python benchmarks/bench_rgap.py                  # about 5.5 minutes; writes benchmarks/results_rgap.jsonl
    python benchmarks/bench_rgap.py --layers 0,5 --repeat 1 --out /tmp/rgap.jsonl
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # set before numpy loads BLAS: LSQR's vector work stays on one thread too

import argparse
import datetime
import gc
import json
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse.linalg  # noqa: F401  rgap imports it lazily: load it before the baseline, off clock and peak
import torch
import torch.nn.functional as F

from gradleak.attacks.rgap import invert_conv_input, invert_network
from gradleak.models import build_model

OUT = Path(__file__).with_name("results_rgap.jsonl")
SHAPE = (3, 32, 32)
DENSE_LIMIT = 6 * 2**30  # bytes: skip a dense layer whose matrix (and lstsq's copy of it) would exceed this
MiB = 2**20


def case(seed: int = 0):
    """CNN6 in float64, a misclassified random image, and per conv layer its true x, z, dW and k."""
    model = build_model("cnn6", num_classes=1, input_shape=SHAPE, seed=seed).double()
    image = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    seen = {}

    def keep(module, inputs, output):
        output.retain_grad()  # k = dloss/dz, z the pre-activation
        seen[module] = (inputs[0], output)

    hooks = [conv.register_forward_hook(keep) for conv in convs]
    logit = model(image)
    for hook in hooks:
        hook.remove()
    label = -1 if float(logit.detach()) > 0 else 1  # y * logit < 0: R-GAP's top step needs a misclassified sample
    F.softplus(-label * logit).sum().backward()  # logistic loss log(1 + e^{-y u})
    layers = [dict(conv=conv, x=seen[conv][0].detach()[0], z=seen[conv][1].detach()[0],
                   grad=conv.weight.grad.detach().clone(), k=seen[conv][1].grad[0].detach()) for conv in convs]
    grads = [p.grad.detach().clone() for p in model.parameters()]
    return model, image[0], label, layers, grads


def dense_system(conv, grad, k, z, in_shape):
    """R-GAP's explicit system: a dense float64 (rows, C*H*W) matrix and its right-hand side.

    Scattered from the convolution's index pattern, independently of the conv2d calls our
    solver uses, so agreement between the two solutions also checks our operator.
    """
    w = conv.weight.detach().double()
    n_out, n_in, kh, kw = w.shape
    _, height, width = in_shape
    _, h_out, w_out = z.shape
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    scale = float(k.abs().max())
    k, grad = k / scale, grad / scale  # the same row balance as invert_conv_input
    # every tap: kernel entry (a, b) of filter o at output (i, j) meets input (c, h, w)
    o, c, a, b, i, j = torch.meshgrid(*(torch.arange(s) for s in (n_out, n_in, kh, kw, h_out, w_out)), indexing="ij")
    h, v = sh * i + a - ph, sw * j + b - pw
    inside = (h >= 0) & (h < height) & (v >= 0) & (v < width)  # taps on padding multiply zeros, not unknowns
    o, c, a, b, i, j, h, v = (t[inside] for t in (o, c, a, b, i, j, h, v))
    col = (c * height + h) * width + v
    n_grad = w.numel()
    matrix = torch.zeros(n_grad + z.numel(), n_in * height * width, dtype=torch.float64)
    # gradient rows: dW[o, c, a, b] = sum_(i, j) k[o, i, j] x[c, h, w]
    matrix.index_put_((((o * n_in + c) * kh + a) * kw + b, col), k[o, i, j], accumulate=True)
    # forward rows: z[o, i, j] = sum_(c, a, b) W[o, c, a, b] x[c, h, w]
    matrix.index_put_((n_grad + (o * h_out + i) * w_out + j, col), w[o, c, a, b], accumulate=True)
    return matrix, torch.cat([grad.reshape(-1), z.reshape(-1)])


def _status(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def measure(solve, repeat: int):
    """(solutions' last, best seconds, all seconds, peak MiB over the resident baseline, how measured)."""
    gc.collect()
    base = _status("VmRSS")
    try:  # "5" resets VmHWM to the current RSS, so the peak is the solve's own
        Path("/proc/self/clear_refs").write_text("5")
        how = "VmHWM after - VmRSS before, HWM reset via clear_refs"
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; may hide a peak below setup's
        how = "ru_maxrss after - before"
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = solve()
        times.append(time.perf_counter() - start)
    peak = _status("VmHWM") if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, min(times), times, (peak - base) / 1024, how


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def worker(method: str, layer: int, repeat: int, save: str) -> dict:
    """One (method, layer) measurement in this process; prints nothing, returns the row."""
    torch.set_num_threads(1)
    model, image, label, layers, grads = case()
    row = dict(method=method, layer=layer)
    if method == "network":
        x, best, times, peak, how = measure(lambda: invert_network(model, grads, label, SHAPE), repeat)
        row.update(kind="network", unknowns=image.numel(), rel_err_truth=rel(x, image))
    else:
        lay = layers[layer]
        conv, truth = lay["conv"], lay["x"]
        args = (lay["grad"], lay["k"], lay["z"], tuple(truth.shape))
        parts = []

        def dense():
            start = time.perf_counter()
            matrix, rhs = dense_system(conv, *args)
            built = time.perf_counter()
            x = torch.linalg.lstsq(matrix, rhs[:, None], driver="gelsd").solution
            parts.append((built - start, time.perf_counter() - built))
            return x.reshape(truth.shape)

        def ours():
            return invert_conv_input(conv.weight, *args, stride=conv.stride, padding=conv.padding)

        x, best, times, peak, how = measure(dense if method == "dense" else ours, repeat)
        row.update(kind="layer", unknowns=truth.numel(), grad_rows=conv.weight.numel(), fwd_rows=lay["z"].numel(),
                   rel_err_truth=rel(x, truth))
        row["rows"] = row["grad_rows"] + row["fwd_rows"]
        if method == "dense":
            best_part = parts[times.index(best)]
            matrix, rhs = dense_system(conv, *args)  # off the clock: does the explicit matrix hold the truth?
            row.update(build_s=best_part[0], lstsq_s=best_part[1], matrix_mib=matrix.numel() * 8 / MiB,
                       residual_at_truth=float((matrix @ truth.reshape(-1) - rhs).norm() / rhs.norm()))
    np.save(save, x.detach().numpy())
    row.update(time_s=best, times_s=times, peak_mib=peak, peak_method=how)
    return row


def machine() -> dict:
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    git = ["git", "-C", str(Path(__file__).parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", ":/src"], capture_output=True, text=True).stdout.strip()
    return dict(torch=torch.__version__, numpy=np.__version__, scipy=scipy.__version__,
                python=platform.python_version(), commit=commit, src_modified=bool(dirty),
                threads=torch.get_num_threads(),
                cpu=cpu.group(1) if cpu else platform.processor(), cores=os.cpu_count(),
                timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def spawn(method: str, layer: int, repeat: int, save: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(layer), "--repeat", str(repeat), "--save", str(save)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{method} layer {layer} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_layers(text: str, count: int) -> list[int]:
    picked = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        picked += range(int(low), int(high or low) + 1)
    if not all(0 <= i < count for i in picked):
        raise SystemExit(f"--layers must lie in 0-{count - 1}")
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="0-5", help="conv layers of CNN6, e.g. 0-5 or 0,3,5")
    parser.add_argument("--repeat", type=int, default=3, help="timed solves per (method, layer); the best counts")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "LAYER"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        print(json.dumps(worker(opts.worker[0], int(opts.worker[1]), opts.repeat, opts.save)))
        return

    torch.set_num_threads(1)
    _, _, _, layers, _ = case()
    facts = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in parse_layers(opts.layers, len(layers)):
            lay = layers[layer]
            n_rows, n_cols = lay["conv"].weight.numel() + lay["z"].numel(), lay["x"].numel()
            got = {"ours": spawn("ours", layer, opts.repeat, Path(tmp) / f"ours{layer}.npy")}
            if 2 * n_rows * n_cols * 8 > DENSE_LIMIT:  # the matrix plus the column-major copy lstsq makes
                got["dense"] = dict(method="dense", layer=layer, kind="layer", rows=n_rows, unknowns=n_cols,
                                    skipped=f"dense matrix {n_rows}x{n_cols} over {DENSE_LIMIT / 2**30:.0f} GiB")
            else:
                got["dense"] = spawn("dense", layer, opts.repeat, Path(tmp) / f"dense{layer}.npy")
                ours, dense = (torch.from_numpy(np.load(Path(tmp) / f"{m}{layer}.npy")) for m in ("ours", "dense"))
                for m in got:
                    got[m]["rel_err_ours_vs_dense"] = rel(ours, dense)
                ratio = got["dense"]["peak_mib"] / max(got["ours"]["peak_mib"], 1e-9)
                got["ours"]["peak_ratio_dense_over_ours"] = ratio
            rows += [got["ours"], got["dense"]]
            print(f"layer {layer} done", file=sys.stderr)
        net = spawn("network", -1, opts.repeat, Path(tmp) / "net.npy")
    dense_rows = [r for r in rows if r["method"] == "dense" and "skipped" not in r]
    rows.append(net)
    if len(dense_rows) == len(layers):  # the dense recursion's equivalent: its per-layer solves one after another
        rows.append(dict(kind="network", method="dense",
                         derived="the 6 conv layers only: sum of per-layer times, max of per-layer peaks",
                         time_s=sum(r["time_s"] for r in dense_rows), peak_mib=max(r["peak_mib"] for r in dense_rows)))
    command = "python benchmarks/bench_rgap.py " + " ".join(sys.argv[1:])
    with opts.out.open("w") as out:
        for row in rows:
            out.write(json.dumps({**row, **facts, "repeat": opts.repeat, "command": command.strip()}) + "\n")
    print(f"{facts['cpu']}, torch {facts['torch']}, {facts['threads']} thread, commit {facts['commit']}"
          f"{' (src modified)' if facts['src_modified'] else ''}")
    table(rows)


def table(rows: list[dict]) -> None:
    by = {(r["method"], r.get("layer")): r for r in rows}
    print(f"{'layer':>5} {'unknowns':>8} {'rows':>6} | {'ours s':>7} {'dense s':>7} | {'ours MiB':>8} "
          f"{'dense MiB':>9} {'ratio':>6} {'matrix MiB':>10} | {'err ours':>8} {'err dense':>9} {'ours~dense':>10}")
    for (method, layer), ours in by.items():
        if method != "ours":
            continue
        dense = by[("dense", layer)]
        if "skipped" in dense:
            print(f"{layer:>5} {ours['unknowns']:>8} {ours['rows']:>6} | {ours['time_s']:7.2f} {'skipped':>7} | "
                  f"{ours['peak_mib']:8.1f} {dense['skipped']}")
            continue
        print(f"{layer:>5} {ours['unknowns']:>8} {ours['rows']:>6} | {ours['time_s']:7.2f} {dense['time_s']:7.2f} | "
              f"{ours['peak_mib']:8.1f} {dense['peak_mib']:9.1f} {ours['peak_ratio_dense_over_ours']:6.0f} "
              f"{dense['matrix_mib']:10.1f} | "
              f"{ours['rel_err_truth']:8.1e} {dense['rel_err_truth']:9.1e} {ours['rel_err_ours_vs_dense']:10.1e}")
    for method in ("network", "dense"):
        row = next((r for r in rows if r["kind"] == "network" and r["method"] == method), None)
        if row:
            label = ("whole network, ours (invert_network)" if method == "network"
                     else "whole network, dense (6 conv layers, derived)")
            err = f", rel. error {row['rel_err_truth']:.1e}" if "rel_err_truth" in row else ""
            print(f"{label}: {row['time_s']:.2f} s, peak {row['peak_mib']:.1f} MiB{err}")


if __name__ == "__main__":
    main()
