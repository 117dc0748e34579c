"""Server behaviours, registered by name: what the server sends the client.

`honest` sends the global model (the threat levels 0-4 of every other attack); the
others are malicious servers (the SoK's level 5) that build or modify the model so that
the unchanged client's update leaks; each has a read-out attack in `gradleak.attacks`.
`parse_server("imprint:bins=128,measure=random")` builds one from its CLI spec, in the
style of `gradleak.defenses.parse_defense`.
"""

from __future__ import annotations

from gradleak.registry import Registry
from gradleak.server.base import Honest, ServerBehaviour, ServerModel, first_layer
from gradleak.server.expectation import Expectation, expected_recovery
from gradleak.server.fishing import Fishing
from gradleak.server.imprint import Imprint, ImprintBlock, Imprinted
from gradleak.server.loki import Loki
from gradleak.server.trap import Trap, trap_expected

SERVERS: Registry[type[ServerBehaviour]] = Registry("server")
SERVERS.add("honest", Honest, "sends the global model unchanged (honest-but-curious, levels 0-4)")
SERVERS.add("imprint", Imprint, "Robbing the Fed: a linear imprint block of k bins in front of the model "
            "(Fowl et al., ICLR 2022)")
SERVERS.add("trap", Trap, "trap weights: first FC layer units that each fire for few inputs "
            "(Boenisch et al., EuroS&P 2023)")
SERVERS.add("fishing", Fishing, "class fishing: a last layer that lets one target class's gradient through "
            "(Wen et al., ICML 2022)")
SERVERS.add("loki", Loki, "LOKI: each client its own imprint bins, through secure aggregation (Zhao et al., S&P 2024)")


def parse_server(spec: "str | ServerBehaviour") -> ServerBehaviour:
    """A server behaviour from `name` or `name:key=value,key=value` (values read as YAML scalars)."""
    if isinstance(spec, ServerBehaviour):
        return spec
    return SERVERS.from_spec(spec, "imprint:bins=128")


__all__ = ["Expectation", "Fishing", "Honest", "Imprint", "ImprintBlock", "Imprinted", "Loki", "SERVERS", "ServerBehaviour",
           "ServerModel", "Trap", "expected_recovery", "first_layer", "parse_server", "trap_expected"]
