"""Client-side simulation: what a federated-learning client computes and shares."""

from gradleak.fl.client import local_training, simulate_client

__all__ = ["local_training", "simulate_client"]
