"""`gradleak flower`: an audited Flower federation on built-in data, one command."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from gradleak.cli.args import add_device, kv, options, output_folder

# flags that map one to one onto FederationConfig fields; unset ones keep its defaults
FLAGS = ("dataset", "model", "clients", "rounds", "partition", "alpha", "samples_per_round", "local_epochs",
         "local_batch_size", "lr", "model_mode", "audit_every", "attack", "igsa_samples", "seed", "device")


def _defaults() -> str:
    from gradleak.flower.federation import FederationConfig

    c = FederationConfig()
    return ", ".join(f"{name.replace('_', '-')} {getattr(c, name)}" for name in FLAGS) + \
        f", audit-clients {' '.join(map(str, c.audit_clients))}."


def add_parser(sub) -> None:
    p = sub.add_parser("flower", help="run a Flower federation and audit chosen clients' updates round by round",
                       description="N simulated Flower clients on built-in data, FedAvg for R rounds; every "
                                   "--audit-every rounds the server attacks the audited clients' weight deltas. "
                                   "Writes audits.jsonl, federation.json, leakage.png and reconstruction grids. "
                                   "Needs the flower extra: pip install 'gradleak[flower]'. Unset flags keep the "
                                   "defaults: " + _defaults())
    g = p.add_argument_group("federation")
    g.add_argument("-d", "--dataset", help="built-in dataset (default faces)")
    g.add_argument("-m", "--model", help="model (default mlp)")
    g.add_argument("--model-opt", dest="model_options", type=kv, action="append", metavar="KEY=VALUE")
    g.add_argument("--clients", type=int)
    g.add_argument("--rounds", type=int)
    g.add_argument("--partition", choices=["iid", "dirichlet"])
    g.add_argument("--alpha", type=float, help="Dirichlet concentration (non-IID; smaller: more skew)")
    g.add_argument("--samples-per-round", type=int, help="fresh samples each client trains on per round")
    g.add_argument("--local-epochs", type=int)
    g.add_argument("--local-batch-size", type=int)
    g.add_argument("--lr", type=float, help="client learning rate")
    g.add_argument("--mode", dest="model_mode", choices=["eval", "train"], help="model mode clients train in")
    g = p.add_argument_group("audit")
    g.add_argument("--audit-clients", type=int, nargs="+", metavar="ID",
                   help="partition ids of the audited clients (default 0)")
    g.add_argument("--audit-every", type=int, help="audit every k-th round (1, 1+k, ...)")
    g.add_argument("-a", "--attack", help="attack (default ig: cosine + TV)")
    g.add_argument("--iterations", type=int, help="the attack's optimization steps")
    g.add_argument("--attack-opt", dest="attack_options", type=kv, action="append", metavar="KEY=VALUE",
                   help="attack option, repeatable (e.g. tv=0.01)")
    g.add_argument("--knows-training", action="store_true",
                   help="the attacker simulates the local steps it configured (SoK level 3)")
    g.add_argument("--igsa-samples", type=int, help="IGSA perturbations per image (0: off)")
    p.add_argument("--seed", type=int, help="seed of the federation: model, shares, draws, attacks")
    add_device(p, default=None, what="the server's audits (the simulated clients train on the CPU)")
    p.add_argument("-o", "--out", help="output folder (default runs/flower-<dataset>-<model>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-round lines")
    p.set_defaults(func=cmd_flower)


def cmd_flower(args: argparse.Namespace) -> int:
    import torch

    from gradleak.cli.render import console, flower_table
    from gradleak.flower import FederationConfig, run_federation
    from gradleak.flower.report import identified_rate, summarize, write_federation

    torch.set_num_threads(1)
    # torch.func's forward-mode AD (IGSA) triggers torch's own jit deprecation notice; not the user's concern
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
    attack_options = options(args.attack_options, "--attack-opt")
    if args.iterations is not None:
        attack_options["iterations"] = args.iterations
    given = {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}
    if args.audit_clients is not None:
        given["audit_clients"] = tuple(args.audit_clients)
    config = FederationConfig(**given, model_options=options(args.model_options, "--model-opt"),
                              attack_options=attack_options, knows_training=args.knows_training)
    out = output_folder(args.out, Path("runs") / f"flower-{config.dataset}-{config.model}", overwrite=args.overwrite)

    def on_audit(a) -> None:
        if not args.quiet:
            psnr = "-" if a.psnr is None else f"{a.psnr:.1f} dB"
            ident = identified_rate(a)
            verdict = "-" if a.verdict is None else a.verdict.overall.value
            console.print(f"round {a.server_round:>3}  client {a.client}: {verdict}, PSNR {psnr}, identified "
                          f"{'-' if ident is None else f'{ident:.0%}'}, IGSA "
                          f"{'-' if a.igsa is None else f'{a.igsa:.3f}'}, attack {a.attack_seconds:.1f} s")

    def on_round(r: int, acc: float) -> None:
        if not args.quiet:
            console.print(f"round {r:>3}  test accuracy {acc:.3f}")

    if not args.quiet:
        console.print(f"starting the Flower simulation: {config.clients} clients, {config.rounds} rounds (Ray)")
    result = run_federation(config, on_audit=on_audit, on_round=on_round)
    write_federation(result, out)
    flower_table(result, summarize(result), out)
    return 0

