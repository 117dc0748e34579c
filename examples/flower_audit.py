"""Audit your own Flower app: wrap its strategy in `LeakageAudit`.

    pip install -e ".[flower]"
    python examples/flower_audit.py          # 2 clients, 2 rounds, client "alice" audited; about 30 s

The ClientApp and the ServerApp below are an ordinary Flower 1.41 app (message API) on
built-in digits. Three things make it auditable:

1. The strategy is wrapped: `LeakageAudit(FedAvg(...), model, ...)`. It trains exactly as the
   wrapped strategy; it only reads copies of the replies it aggregates.
2. Each client names itself in its reply (`ConfigRecord({"client-id": "alice"})`), and the audit
   is told where (`client_key="client-id"`): attack seeds and the choice of audited clients
   follow that stable name, so identical runs give identical audits (Flower's node ids
   change every run).
3. In a simulation the auditor knows each client's data: `truth(server_round, reply)` returns a
   `ClientData` (the images behind this update in [0, 1] pixels, their labels, the client's
   whole partition and the positions of the images in it), and the audit scores the
   reconstruction, gives a verdict and identifies it among the client's images. A curious
   server has no truth; without it the audit keeps the reconstruction and the update norm.

The attack is any gradleak attack instance, with its options: `InvertingGradients(iterations=300)`.
"""

from __future__ import annotations

import copy

import torch

from gradleak.attacks import InvertingGradients
from gradleak.client import local_training
from gradleak.data import load_dataset
from gradleak.flower import AuditSchedule, ClientData, LeakageAudit, TrainingKeys
from gradleak.models import build_model

CLIENTS = ("alice", "bob")
data = load_dataset("digits")
norm = data.normalization
model = build_model("mlp", num_classes=10, input_shape=data.image_shape, seed=0, hidden=(64,))
shares = {name: list(range(i, len(data), len(CLIENTS))) for i, name in enumerate(CLIENTS)}


def round_batch(client: str, server_round: int) -> list[int]:
    """Positions (in the client's share) of the 2 images it trains on this round."""
    gen = torch.Generator().manual_seed(1000 * server_round + CLIENTS.index(client))
    return torch.randperm(len(shares[client]), generator=gen)[:2].tolist()


def client_app():
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        name = CLIENTS[int(context.node_config["partition-id"])]
        server_round = int(msg.content["config"]["server-round"])
        local = copy.deepcopy(model)
        local.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        images, labels = data.batch([shares[name][p] for p in round_batch(name, server_round)])
        params = {n: p.detach().clone().requires_grad_(True) for n, p in local.named_parameters()}
        training = TrainingKeys().read(msg.content["config"])
        final = local_training(local, params, {}, norm.normalize(images), labels, training)
        return Message(RecordDict({
            "arrays": ArrayRecord({n: t.detach() for n, t in final.items()}),
            "metrics": MetricRecord({"num-examples": len(labels)}),
            "client": ConfigRecord({"client-id": name}),
        }), reply_to=msg)

    return app


def truth(server_round: int, reply) -> ClientData:
    """The auditor's ground truth for one reply (a simulation knows every client's data)."""
    name = str(reply.content["client"]["client-id"])
    positions = round_batch(name, server_round)
    images, labels = data.batch([shares[name][p] for p in positions])
    partition, _ = data.batch(shares[name])
    return ClientData(client=name, images=images, labels=labels, partition=partition,
                      positions=tuple(positions))


def main() -> None:
    from flwr.app import ArrayRecord, ConfigRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    audit = LeakageAudit(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=2, min_train_nodes=2),
        model, input_shape=data.image_shape, attack=InvertingGradients(iterations=300),
        schedule=AuditSchedule(every=1, max_clients=1, clients={"alice"}), normalization=norm, truth=truth,
        client_key="client-id", igsa_samples=0,
        on_audit=lambda a: print(f"round {a.server_round}, client {a.client}: {a.verdict.summary_line()}"))
    server = ServerApp()

    @server.main()
    def run(grid: Grid, context: Context) -> None:
        audit.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=2,
                    train_config=ConfigRecord({"lr": 0.1, "local-epochs": 1, "batch-size": 2}))

    run_simulation(server_app=server, client_app=client_app(), num_supernodes=len(CLIENTS),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})


if __name__ == "__main__":
    main()
