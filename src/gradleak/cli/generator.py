"""`gradleak generator train`: a DCGAN for the latent-space attacks (gias, ggl)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradleak.cli.args import add_device, add_seed, output_folder


def class_list(text: str) -> tuple[int, ...]:
    """'0-4' or '0,2,5' (or both: '0-2,7') as class indices."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                out.extend(range(low, high + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class indices like 0-4 or 0,2,5, got {text!r}") from None
    return tuple(dict.fromkeys(out))


def add_parser(sub) -> None:
    p = sub.add_parser("generator", help="train a generator for the latent-space attacks (gias, ggl)",
                       description="Generators for attacks in a generator's latent space (the SoK's GIA-L).")
    verbs = p.add_subparsers(dest="verb", required=True)
    t = verbs.add_parser("train", help="train a DCGAN on a registered data set",
                         description="Train a DCGAN on a registered data set (a class subset for out-of-"
                                     "distribution studies) and write OUT/generator.pt (load it with "
                                     "weights_only=True, or pass it to gias/ggl as generator=PATH), "
                                     "OUT/samples.png and OUT/quality.json.")
    t.add_argument("-d", "--dataset", default="digits", help="dataset (default digits)")
    t.add_argument("--data-root", help="folder holding the dataset files (file-based datasets)")
    t.add_argument("--image-size", type=int, default=32, help="8, 16, 32 or 64 (default 32)")
    t.add_argument("--classes", type=class_list, help="class indices kept, e.g. 0-4 (default all)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--latent-dim", type=int, default=64)
    t.add_argument("--width", type=int, default=32, help="base channel width of both networks")
    add_seed(t, help="seed of the initialization, shuffling and latents (default 0)")
    add_device(t, what="the training")
    t.add_argument("-o", "--out", help="output folder (default runs/generator-DATASET)")
    t.add_argument("--overwrite", action="store_true", help="write into an existing output folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from gradleak.cli.render import console
    from gradleak.devices import resolve_device
    from gradleak.generators import GeneratorTraining
    from gradleak.pipelines.generator import GeneratorRunConfig, generator_data, run_generator

    torch.set_num_threads(1)
    out = output_folder(args.out, Path("runs") / f"generator-{args.dataset}", overwrite=args.overwrite)
    training = GeneratorTraining(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 latent_dim=args.latent_dim, width=args.width, seed=args.seed)
    config = GeneratorRunConfig(dataset=args.dataset, data_root=args.data_root, image_size=args.image_size,
                                classes=args.classes, training=training, device=str(resolve_device(args.device)))
    data = generator_data(config)  # a bad data set or class list fails before the progress bar starts
    progress = Progress(TextColumn("generator"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                        TextColumn("D {task.fields[d]} G {task.fields[g]}"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, disable=args.no_progress)
    with progress:
        task = progress.add_task("train", total=args.epochs, d="-", g="-")

        def on_epoch(row) -> None:
            progress.update(task, completed=row.epoch, d=f"{row.discriminator:.3f}", g=f"{row.generator:.3f}")

        run = run_generator(config, out, data=data, on_epoch=on_epoch)
    console.print(f"{run.images} training images, {run.trained.seconds:.0f} s; wrote {run.checkpoint}, {run.grid}, "
                  f"{out / 'quality.json'}", highlight=False)
    if run.quality is not None:
        q = run.quality
        console.print(f"quality: nearest-training PSNR {q.nn_psnr:.1f} dB (held-out real {q.real_nn_psnr:.1f} dB); "
                      f"classifier confidence on samples {q.sample_confidence:.2f} (real {q.real_confidence:.2f}, "
                      f"accuracy {q.classifier_accuracy:.2f}); class coverage {q.class_coverage:.2f}",
                      highlight=False)
    return 0
