"""Does Flower 1.41's SecAgg+ workflow run in simulation here? A tiny federation, 1 round.

Run (from the repository root; Flower's Ray simulation):
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/secagg/secaggplus_try.py [--clients 3]
Writes experiments/secagg/secaggplus_try[_N].json; the findings are in secaggplus_try.md.

Federation: N NumPy clients (`secaggplus_mod` on each ClientApp), the server a ServerApp
running `DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))` with FedAvg, one round.
Client j replies with the fixed parameters p_j = j + 1 + 0.1 * k (k = 0..7) and num_examples
j + 1, so the exact FedAvg-weighted mean is known; we record the global parameters after the
round, their largest difference from that mean (SecAgg+ quantizes), what the strategy's
`aggregate_fit` was handed (SecAgg+ hands it one already-summed result, not N), and the time.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent
SIZE = 8


def client_params(j: int) -> np.ndarray:
    return (j + 1 + 0.1 * np.arange(SIZE)).astype(np.float32)


def run(clients: int) -> dict:
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    seen: dict = {"aggregate_fit_results": [], "final": None}

    class Client(NumPyClient):
        def __init__(self, j: int) -> None:
            self.j = j

        def fit(self, parameters, config):
            return [client_params(self.j)], self.j + 1, {}

        def evaluate(self, parameters, config):
            return 0.0, 1, {}

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    class Watching(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            seen["aggregate_fit_results"].append({"round": server_round, "results": len(results),
                                                  "failures": len(failures),
                                                  "num_examples": [r.num_examples for _, r in results],
                                                  "distinct_parameters": len({parameters_to_ndarrays(r.parameters)[0]
                                                                              .tobytes() for _, r in results}),
                                                  "equal_a_client_reply": any(
                                                      np.allclose(parameters_to_ndarrays(r.parameters)[0],
                                                                  client_params(j)) for _, r in results
                                                      for j in range(clients))})
            out = super().aggregate_fit(server_round, results, failures)
            if out[0] is not None:
                seen["final"] = parameters_to_ndarrays(out[0])[0].tolist()
            return out

    strategy = Watching(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                        min_available_clients=clients,
                        initial_parameters=ndarrays_to_parameters([np.zeros(SIZE, np.float32)]))
    server = ServerApp()

    @server.main()
    def main(grid, context: Context) -> None:
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=clients,
                                                                   reconstruction_threshold=max(2, clients - 1)))
        workflow(grid, legacy)

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    weights = np.arange(1, clients + 1, dtype=np.float64)
    exact = sum(w * client_params(j) for j, w in enumerate(weights)) / weights.sum()
    final = seen["final"]
    return {"aggregate_fit": seen["aggregate_fit_results"], "final": final, "exact_fedavg": exact.tolist(),
            "max_abs_error": None if final is None else float(np.abs(np.array(final) - exact).max())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args()
    import flwr

    t0 = time.perf_counter()
    record = {"flwr": flwr.__version__, "clients": args.clients, "rounds": 1}
    try:
        record |= run(args.clients)
        record["status"] = "ran" if record["final"] is not None else "ran, but no aggregate reached the strategy"
    except Exception as exc:  # record exactly what failed
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    record["seconds"] = time.perf_counter() - t0
    (OUT / ("secaggplus_try.json" if args.clients == 3 else f"secaggplus_try_{args.clients}.json")).write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "traceback"}, indent=2))


if __name__ == "__main__":
    main()
