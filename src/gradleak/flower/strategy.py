"""`LeakageAudit`: wrap any Flower strategy and attack the updates of chosen clients.

Threat model: an honest-but-curious server (SoK level 0, plus the attack's priors). It
holds the global model it sent, the configuration it sent (lr, epochs, batch size) and
each client's returned weights and sample count; by default the attacker does not use
the local configuration and reads the weight delta as one gradient direction
(`knows_training=True` simulates the local steps, level 3). Training is untouched: the
wrapped strategy sees the same messages and its aggregate is returned as is; the audit
reads copies of the weights after the strategy has aggregated.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from gradleak.analysis.igsa import igsa
from gradleak.attacks import ATTACKS, Attack
from gradleak.checks import check_optional_str, check_seed
from gradleak.devices import resolve_device
from gradleak.errors import GradleakError
from gradleak.flower.records import AuditSchedule, ClientAudit, ClientData, TrainingKeys
from gradleak.metrics import METRICS, identify, score_reconstruction, test_accuracy
from gradleak.models import output_classes
from gradleak.records import AttackerKnowledge, ClientUpdate, Protocol, check_model_mode

log = logging.getLogger(__name__)

Truth = Callable[[int, Message], "ClientData | None"]


class LeakageAudit(Strategy):
    """A Flower strategy that trains exactly as `strategy` and audits client updates.

    Args:
        strategy: any message-based Flower strategy (`flwr.serverapp.strategy`).
        model: the architecture the arrays belong to (its weights are ignored; the
            global arrays of each round are loaded into a private copy).
        input_shape: one sample's shape in model space.
        attack: an `Attack` instance or a registered name (its default options).
        schedule: which rounds and clients to audit (`AuditSchedule`).
        knows_training: the attacker simulates the local steps it configured (level 3).
        training_keys: where lr/epochs/batch size live in the sent ConfigRecord.
        num_examples_key: the reply metric holding the client's sample count.
        normalization: maps pixels to model space and back (`gradleak.data`); None: identity.
        truth: `(round, reply) -> ClientData | None`, the auditor's ground truth in a
            simulation; without it only the update norm and the reconstruction are kept.
        test_data: (images in model space, labels) for the global model's accuracy.
        identify_by: metrics for identification (`gradleak.metrics.identify`).
        igsa_samples: perturbations per image for IGSA (0 turns it off).
        keep_images: keep each reconstruction (pixel space) in its `ClientAudit`.
        on_audit: called with each `ClientAudit` as soon as it exists.
        model_mode: the mode clients train in ("train": BatchNorm batch statistics).
        seed: the attacks' random starts derive from it, the round and the client's
            stable identity, so identical runs give identical audits.
        client_key: a reply entry (in any of its config or metric records) that holds a
            stable client id. The identity is the `truth` provider's `ClientData.client`
            when it gives one, else this entry, else (not reproducible across runs, and
            said once) Flower's node id, which changes every run. Clients are chosen
            for audit in the order of their identities.
        device: where the audit attacks and scores (auto, cpu, cuda, cuda:N, mps); the
            training is untouched, wherever it runs.
    """

    def __init__(self, strategy: Strategy, model: nn.Module, *, input_shape: tuple[int, ...],
                 attack: Attack | str = "ig", schedule: AuditSchedule = AuditSchedule(),
                 knows_training: bool = False, training_keys: TrainingKeys = TrainingKeys(),
                 num_examples_key: str = "num-examples", normalization: Any = None, truth: Truth | None = None,
                 test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                 identify_by: tuple[str, ...] = ("psnr", "ssim"), igsa_samples: int = 8,
                 keep_images: bool = True, on_audit: Callable[[ClientAudit], None] | None = None,
                 model_mode: str = "eval", seed: int = 0, client_key: str | None = None,
                 device: str | torch.device = "auto") -> None:
        if not isinstance(strategy, Strategy):
            raise GradleakError(f"strategy must be a flwr.serverapp.strategy.Strategy, got {type(strategy).__name__}")
        if not isinstance(model, nn.Module):
            raise GradleakError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_model_mode(model_mode)
        self.strategy = strategy
        self.model_mode = model_mode
        self.device = resolve_device(device)
        self.model = copy.deepcopy(model).eval().to(self.device)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = output_classes(self.model, self.input_shape)
        self.attack = ATTACKS.create(attack) if isinstance(attack, str) else attack
        if not isinstance(self.attack, Attack):
            raise GradleakError(f"attack must be a gradleak Attack or a registered name, got {type(attack).__name__}")
        self.attack_name = attack if isinstance(attack, str) else type(attack).__name__
        if not isinstance(schedule, AuditSchedule):
            raise GradleakError(f"schedule must be an AuditSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.knows_training = bool(knows_training)
        self.training_keys = training_keys
        self.num_examples_key = num_examples_key
        self.normalization = normalization
        self.truth = truth
        self.test_data = test_data
        for metric in identify_by:
            METRICS.get(metric)  # an unknown name fails here, not after round 1's aggregation
        if isinstance(igsa_samples, bool) or not isinstance(igsa_samples, int) or igsa_samples < 0:
            raise GradleakError(f"igsa_samples must be an integer >= 0 (0: no IGSA), got {igsa_samples!r}")
        self.identify_by = tuple(identify_by)
        self.igsa_samples = igsa_samples
        self.keep_images = keep_images
        self.on_audit = on_audit
        self.seed = check_seed(seed)
        self.client_key = check_optional_str("client_key", client_key)
        self._warned_unstable = False
        self.audits: list[ClientAudit] = []
        self._sent: dict[int, tuple[ArrayRecord, dict]] = {}

    # --- Flower's verbs: delegate, remembering what was sent ---------------------------

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._sent = {}
        if self.schedule.due(server_round):
            for m in messages:
                sent_arrays = next(iter(m.content.array_records.values()), arrays)
                sent_config = next(iter(m.content.config_records.values()), config)
                self._sent[m.metadata.dst_node_id] = (sent_arrays, dict(sent_config))
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        chosen = self._choose(server_round, replies) if self._sent else []
        # copies of the weights first: the audit must not depend on what aggregation does to them
        snapshots = [(reply, data, _state(next(iter(reply.content.array_records.values())))) for reply, data in chosen]
        aggregated = self.strategy.aggregate_train(server_round, replies)
        if snapshots:
            before_cache: dict[int, dict[str, torch.Tensor]] = {}
            accuracy_cache: dict[int, float | None] = {}
            for reply, data, after in snapshots:
                audit = self._audit(server_round, reply, data, after, before_cache, accuracy_cache)
                self.audits.append(audit)
                if self.on_audit is not None:
                    self.on_audit(audit)
        self._sent = {}
        return aggregated

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
        log.info("LeakageAudit: attack %s every %d round(s), at most %s client(s) per round, knows_training=%s",
                 self.attack_name, self.schedule.every, self.schedule.max_clients, self.knows_training)

    def __getattr__(self, name: str) -> Any:
        # the wrapped strategy's own settings (fraction_train, ...) stay reachable
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)

    # --- the audit ------------------------------------------------------------------------

    def _identity(self, reply: Message, data: ClientData | None) -> str | None:
        """The client's stable identity: the truth's client name, else the `client_key` entry."""
        if data is not None:
            return data.client
        if self.client_key is not None:
            for record in [*reply.content.config_records.values(), *reply.content.metric_records.values()]:
                if self.client_key in record:
                    return str(record[self.client_key])
        return None

    def _choose(self, server_round: int, replies: list[Message]) -> list[tuple[Message, ClientData | None]]:
        s = self.schedule
        candidates = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error() or not reply.has_content() or node not in self._sent:
                continue
            if s.nodes is not None and node not in s.nodes:
                continue
            data = self.truth(server_round, reply) if self.truth is not None else None
            identity = self._identity(reply, data)
            if s.clients is not None and identity not in s.clients:
                continue
            candidates.append((identity is None, identity or "", node, reply, data))
        # stable identities first, in their order: the same clients every run
        out = [(reply, data) for *_, reply, data in sorted(candidates, key=lambda c: c[:3])]
        return out if s.max_clients is None else out[: s.max_clients]

    def _attack_seed(self, server_round: int, reply: Message, data: ClientData | None) -> int:
        identity = self._identity(reply, data)
        if identity is None:
            if not self._warned_unstable:
                log.warning("LeakageAudit: no stable client identity (no truth, no client_key): attack seeds "
                            "follow Flower's node ids and change from run to run")
                self._warned_unstable = True
            key = reply.metadata.src_node_id % 2**32
        else:
            key = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:4], "big")
        return int(np.random.SeedSequence([self.seed, server_round, key]).generate_state(1)[0])

    def _audit(self, server_round: int, reply: Message, data: ClientData | None,
               after: dict[str, torch.Tensor], before_cache: dict[int, dict[str, torch.Tensor]],
               accuracy_cache: dict[int, float | None]) -> ClientAudit:
        start = time.perf_counter()
        node = reply.metadata.src_node_id
        sent_arrays, sent_config = self._sent[node]
        before = before_cache.setdefault(id(sent_arrays), _state(sent_arrays))
        model = copy.deepcopy(self.model)
        model.load_state_dict(before, strict=True)
        model.train(self.model_mode == "train")
        num_samples = self._num_samples(reply)
        training = self.training_keys.read(sent_config)
        names = tuple(n for n, p in model.named_parameters() if p.requires_grad)
        missing = [n for n in names if n not in after]
        if missing:
            raise GradleakError(f"client {node}'s reply lacks the model's parameters {missing[:5]}")
        update = ClientUpdate(protocol=Protocol.FEDAVG, names=names,
                              tensors=tuple((after[n].float() - before[n].float()).detach().to(self.device)
                                            for n in names),
                              num_samples=num_samples, training=training, local_steps=training.steps(num_samples),
                              model_mode=self.model_mode)
        knowledge = AttackerKnowledge(
            num_samples=num_samples, input_shape=self.input_shape, num_classes=self.num_classes,
            knows_training=self.knows_training, training=training if self.knows_training else None,
            bounds=None if self.normalization is None else self.normalization.bounds())
        seed = self._attack_seed(server_round, reply, data)
        t0 = time.perf_counter()
        recon = self.attack.reconstruct(model, update, knowledge, seed=seed)
        attack_s = time.perf_counter() - t0
        pixels = self._pixels(recon.data).clamp(0, 1)
        metrics, found, igsa_score = None, (), None
        if data is not None and data.images.shape[0] == num_samples:
            scored = score_reconstruction(recon, data.images, normalization=self.normalization,
                                          true_labels=data.labels)
            metrics, pixels = scored.metrics, scored.reconstruction
            found = tuple(identify(pixels, data.partition, true_index=data.positions, metric=m)
                          for m in self.identify_by)
            igsa_score = self._igsa(model, data)
        elif data is not None:
            log.warning("round %d client %s: the truth holds %d images but the reply says %d; not scored",
                        server_round, data.client, data.images.shape[0], num_samples)
        if id(sent_arrays) not in accuracy_cache:  # one evaluation per global model, however many clients
            accuracy_cache[id(sent_arrays)] = (None if self.test_data is None else
                                               test_accuracy(model, *(t.to(self.device) for t in self.test_data)))
        acc = accuracy_cache[id(sent_arrays)]
        return ClientAudit(server_round=server_round, node_id=node, client=None if data is None else data.client,
                           num_samples=num_samples, training=training, knows_training=self.knows_training,
                           attack=self.attack_name, status=recon.status, update_norm=update.norm(),
                           attack_seconds=attack_s, audit_seconds=time.perf_counter() - start, metrics=metrics,
                           identification=found, igsa=igsa_score, accuracy=acc,
                           reconstruction=pixels.detach().clone() if self.keep_images else None,
                           original=data.images.clone() if self.keep_images and metrics is not None else None)

    def _num_samples(self, reply: Message) -> int:
        for record in reply.content.metric_records.values():
            if self.num_examples_key in record:
                return int(record[self.num_examples_key])
        keys = sorted(k for r in reply.content.metric_records.values() for k in r)
        raise GradleakError(f"client {reply.metadata.src_node_id}'s reply has no {self.num_examples_key!r} metric "
                            f"(the sample count the attacker knows); its metrics are {keys}; set num_examples_key")

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.normalization is None else self.normalization.denormalize(x)

    def _model_space(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.normalization is None else self.normalization.normalize(x)

    def _igsa(self, model: nn.Module, data: ClientData) -> float | None:
        if self.igsa_samples < 1:
            return None
        return igsa(model, self._model_space(data.images).to(self.device), data.labels.to(self.device),
                    samples=self.igsa_samples,
                    seed=self.seed).score


def _state(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    """A private torch copy of an ArrayRecord (the record itself is left as it was)."""
    return {k: v.clone() for k, v in arrays.to_torch_state_dict(keep_input=True).items()}
