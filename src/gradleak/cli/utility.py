"""`gradleak utility`: what a defense costs in test accuracy (federated training with and without it)."""

from __future__ import annotations

import json

from gradleak.cli.args import (
    add_device,
    add_seed,
    deprecated,
    kv,
    options,
    output_file,
    warn_deprecated,
)
from gradleak.errors import GradleakError


def add_parser(sub) -> None:
    p = sub.add_parser("utility", help="federated training with and without a defense: its cost in test accuracy",
                       description="Train a model federatedly on built-in data with and without the defense and "
                                   "report the test accuracy of both.")
    p.add_argument("-d", "--dataset", default="digits", help="dataset (default digits)")
    p.add_argument("--data-root", help="folder holding the dataset files (file-based datasets)")
    p.add_argument("--image-size", type=int, help="resize images to this square size")
    p.add_argument("-m", "--model", default="lenet", help="model (default lenet with ReLU and torch's init)")
    p.add_argument("--model-opt", dest="model_options", type=kv, action="append", metavar="KEY=VALUE")
    p.add_argument("--defense", dest="defenses", action="append", metavar="SPEC", default=[],
                   help="defense applied by every client, repeatable, in order (e.g. dpsgd:noise_multiplier=1, "
                        "qsgd:bits=4; a training defense, dpsgd or ats, first)")
    p.add_argument("--dp-noise", type=float, help=deprecated("--dp-noise", "--defense dpsgd:noise_multiplier=X"))
    p.add_argument("--dp-clip", type=float, help=deprecated("--dp-clip", "--defense dpsgd:...,max_grad_norm=C"))
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--protocol", choices=["fedavg", "fedsgd"], default="fedavg")
    p.add_argument("--lr", type=float, default=0.05, help="client learning rate")
    p.add_argument("--epochs", type=int, default=1, help="local epochs (fedavg)")
    p.add_argument("--local-batch-size", type=int, default=32, help="local mini-batch size (fedavg)")
    add_seed(p, help="seed of the model, the client shares and the clients' randomness")
    add_device(p, what="the clients and the server")
    p.add_argument("-o", "--out", help="write the result as JSON to this file")
    p.set_defaults(func=cmd_utility)


def cmd_utility(args) -> int:
    import torch

    from gradleak.cli.render import utility_table
    from gradleak.defenses.dpsgd import dp_spec
    from gradleak.io import atomic_write_text
    from gradleak.pipelines.federated import FederatedTraining
    from gradleak.pipelines.utility import UtilityConfig, run_utility
    from gradleak.records import LocalTraining

    torch.set_num_threads(1)
    out = output_file(args.out, exists_ok=False)
    training = LocalTraining(protocol=args.protocol, lr=args.lr, epochs=args.epochs,
                             batch_size=None if args.protocol == "fedsgd" else args.local_batch_size,
                             shuffle=args.protocol == "fedavg")
    model_options = {"activation": "relu", "init": "default"} if args.model == "lenet" else {}
    model_options.update(options(args.model_options, "--model-opt"))
    defenses = list(args.defenses)
    if args.dp_noise is not None or args.dp_clip is not None:
        warn_deprecated("--dp-noise/--dp-clip", "--defense dpsgd:noise_multiplier=X,max_grad_norm=C")
        if args.dp_noise is None:
            raise GradleakError("--dp-clip needs --dp-noise (better: --defense dpsgd:...)")
        defenses.insert(0, dp_spec(args.dp_noise, 1.0 if args.dp_clip is None else args.dp_clip))
    config = UtilityConfig(dataset=args.dataset, data_root=args.data_root, image_size=args.image_size,
                           model=args.model, model_options=model_options,
                           federated=FederatedTraining(args.clients, args.rounds, training, seed=args.seed),
                           defenses=tuple(defenses), seed=args.seed, device=args.device)
    result = run_utility(config)
    utility_table(result, config)
    if out is not None:
        atomic_write_text(out, json.dumps(result.to_json(), indent=2))
    return 0
