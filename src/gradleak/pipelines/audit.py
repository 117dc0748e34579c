"""The audit pipeline, end to end, as one readable function.

case (data + model) -> client update -> defenses -> attack -> score. `AuditConfig` holds
every setting (the CLI and YAML files only fill it); `run_audit` returns the typed
`AuditResult` plus the images needed for reports (`pipelines.write` writes them).
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradleak.attacks import ProgressCallback
from gradleak.client import simulate_client
from gradleak.data import DataSource, load_case
from gradleak.defenses import ClientBatch
from gradleak.devices import resolve_device
from gradleak.errors import GradleakError
from gradleak.metrics import score_reconstruction
from gradleak.pipelines.config import AuditConfig
from gradleak.pipelines.secagg import observe_aggregate, per_client
from gradleak.records import (
    AttackerKnowledge,
    AuditResult,
    LabelKnowledge,
    Reconstruction,
    ServerOutcome,
)
from gradleak.server import ServerModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRun:
    """An audit's result with the images behind it (pixel space, matched order)."""

    result: AuditResult
    original: torch.Tensor
    reconstruction: torch.Tensor
    true_labels: torch.Tensor
    predicted_labels: torch.Tensor | None
    class_names: tuple[str, ...]
    reconstruction_record: Reconstruction


def choose_indices(config: AuditConfig, dataset_size: int) -> list[int]:
    if config.indices is not None:
        return [int(i) for i in config.indices]
    if config.batch_size > dataset_size:
        raise GradleakError(f"batch_size {config.batch_size} exceeds the dataset's {dataset_size} images")
    if config.batch_size == 1:
        return [0]
    gen = torch.Generator().manual_seed(config.seed)
    return torch.randperm(dataset_size, generator=gen)[: config.batch_size].tolist()


def versions() -> dict[str, str]:
    from gradleak.io import package_version

    return {"gradleak": package_version(), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def defense_seed_of(seed: int) -> int:
    """The defense's seed, independent of the client's and the attack's streams."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def build_server(config: AuditConfig, case) -> ServerModel:
    """The model the configured server sends, built from the case's model; a behaviour
    that estimates from a public data set gets its images in the case's model space (the
    case's own data set: its other split, never the client's)."""
    behaviour = config.server_behaviour()
    public = None
    if behaviour.public_data is not None:
        split = ("test" if config.split == "train" else "train") if behaviour.public_data == config.dataset else "train"
        data = DataSource(behaviour.public_data, config.data_root, config.download, case.input_shape[1]).load(split)
        if data.image_shape[1:] != case.input_shape[1:]:
            data = data.resized(case.input_shape[1])
        images = data.images
        channels = case.input_shape[0]
        if images.shape[1] != channels:  # gray repeated, colour averaged
            images = (images if images.shape[1] == 1 else images.mean(1, keepdim=True)).expand(-1, channels, -1, -1)
        public = case.normalization.normalize(images)
    device = next((p.device for p in case.model.parameters()), torch.device("cpu"))
    server = behaviour.build(case.model, case.input_shape, seed=config.seed,
                             public=None if public is None else public.to(device))
    expected = server.expected(config.samples_behind())
    if server.malicious:
        log.info("server %s: expected to recover %s", server.spec,
                 "no closed form" if expected is None else
                 f"{expected.expected:.1f} of {expected.num_samples} ({expected.fraction:.1%}), all with "
                 f"probability {expected.p_all:.2g}")
    return server


def server_outcome(server: ServerModel, psnr: tuple[float, ...]) -> ServerOutcome:
    expected = server.expected(len(psnr))
    return ServerOutcome(spec=server.spec, assumption=server.assumption,
                         expected_fraction=None if expected is None else expected.fraction,
                         p_all=None if expected is None else expected.p_all,
                         recovered_40=sum(p >= 40 for p in psnr) / len(psnr),
                         recovered_18=sum(p >= 18 for p in psnr) / len(psnr))


def run_audit(config: AuditConfig, callback: ProgressCallback | None = None,
              on_server: Callable[[ServerModel], None] | None = None) -> AuditRun:
    """Simulate the client, apply its defenses, attack its update, and measure the leak
    (`on_server` sees the model the server sends once it is built, before the client trains)."""
    t0 = time.perf_counter()
    device = resolve_device(config.device)  # a device this machine lacks fails before any work
    config.speed().apply()
    attack = config.build_attack()
    source = DataSource(config.dataset, config.data_root, config.download, config.image_size)
    case = load_case(source, config.model, split=config.split, model_options=config.model_options,
                     checkpoint=config.checkpoint, seed=config.seed, device=device)
    norm = case.normalization
    t1 = time.perf_counter()

    server = build_server(config, case)  # what the server sends; the client trains it unchanged
    if on_server is not None:
        on_server(server)
    model = server.model
    training = config.training()
    defense = config.defense()
    defense_seed = defense_seed_of(config.seed)
    observed = None
    if config.clients == 1:
        indices = choose_indices(config, len(case.data))
        images, labels = (t.to(device) for t in case.data.batch(indices))
        x = norm.normalize(images)
        update = simulate_client(model, x, labels, training, model_mode=config.model_mode, seed=config.seed)
        client = ClientBatch(model, x, labels, training, config.model_mode, config.seed)
        update = defense.transform(update, seed=defense_seed, client=client)
    else:  # the server observes only the secure aggregate of the clients' defended updates
        observed = observe_aggregate(config, case, model, training, defense, device, defense_seed_of)
        update, images, labels, indices = observed.update, observed.images, observed.labels, observed.indices
    t2 = time.perf_counter()

    knowledge = AttackerKnowledge(
        num_samples=len(indices),
        input_shape=case.input_shape,
        num_classes=case.outputs,
        label_knowledge=LabelKnowledge.GIVEN if config.give_labels else LabelKnowledge.UNKNOWN,
        labels=labels if config.give_labels else None,
        knows_training=config.knows_training,
        training=training if config.knows_training else None,
        bounds=norm.bounds(),
        defense=defense if config.knows_defense else None,
        defense_seed=defense_seed if config.knows_mask else None,
        server=server.spec if server.malicious else None,
    )
    attack_seed = config.seed if config.attack_seed is None else config.attack_seed
    recon = attack.reconstruct(model, update, knowledge, seed=attack_seed, callback=callback)
    t3 = time.perf_counter()

    scored = score_reconstruction(recon, images, normalization=norm, true_labels=labels, metrics=config.metrics,
                                  matching=config.matching)
    t4 = time.perf_counter()

    settings = config.to_dict() | {"indices": indices, "local_steps": update.local_steps,
                                   "dataset_source": case.data.source, "device_used": str(device)}
    notes = case.notes + server.notes + recon.notes
    if observed is not None:
        h = observed.holdings
        settings |= {"samples_behind_update": h.total, "client_sizes": list(h.sizes),
                     "client_of_sample": h.owner().tolist(),
                     "recovered_40_per_client": per_client(scored.metrics.psnr, h, 40.0),
                     "recovered_18_per_client": per_client(scored.metrics.psnr, h, 18.0)}
        notes += (f"secure aggregation: the server observed only the {h.weighting} sum of {h.clients} clients' "
                  f"updates ({h.total} samples: {' + '.join(map(str, h.sizes))}); metrics match the "
                  "reconstructions against all of them",)
    result = AuditResult(
        settings=settings,
        assumptions=recon.assumptions,
        label_knowledge=recon.label_knowledge,
        metrics=scored.metrics,
        timings={"setup_s": t1 - t0, "client_s": t2 - t1, "attack_s": t3 - t2, "metrics_s": t4 - t3,
                 "total_s": t4 - t0, "attack_iterations": recon.iterations,
                 "s_per_iteration": (t3 - t2) / max(recon.iterations, 1)},
        status=recon.status,
        seed=config.seed,
        versions=versions(),
        restart_losses=recon.restart_losses,
        restart_statuses=recon.restart_statuses,
        peak_memory_bytes=recon.peak_memory_bytes,
        restart_mode=recon.restart_mode,
        units=recon.units,
        model_mode=config.model_mode,
        defenses=update.defenses,
        privacy=update.privacy,
        gradient_mismatch=recon.gradient_mismatch,
        notes=notes,
        server=server_outcome(server, scored.metrics.psnr) if config.server is not None else None,
    )
    predicted = None if scored.predicted_labels is None else scored.predicted_labels.cpu()
    return AuditRun(result, images.cpu(), scored.reconstruction.cpu(), labels.cpu(), predicted, case.data.classes,
                    recon)


__all__ = ["AuditConfig", "AuditRun", "choose_indices", "defense_seed_of", "run_audit", "versions"]
