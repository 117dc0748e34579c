"""What a federated-learning client computes and shares: FedSGD gradients or FedAvg deltas.

`simulate_client` produces the `ClientUpdate` of one round; `local_training` runs the
client's local SGD (also for an attacker who simulates it); `client_loss` is the loss.
"""

from gradleak.client.aggregate import Aggregate, Holdings, aggregate_clients, sum_updates
from gradleak.client.check import CheckThresholds, ModelCheck, check_model, model_digest
from gradleak.client.losses import client_loss, has_regularization, model_regularization
from gradleak.client.simulate import (
           check_batch,
           local_training,
           minibatch_order,
           simulate_client,
)

__all__ = ["CheckThresholds", "ModelCheck", "check_model", "model_digest", "Aggregate", "Holdings", "aggregate_clients", "sum_updates", "check_batch", "client_loss", "has_regularization", "local_training", "minibatch_order",
           "model_regularization", "simulate_client"]
