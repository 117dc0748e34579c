"""Server behaviours, registered by name: what the server sends the client.

`honest` sends the global model (the threat levels 0-4 of every other attack); the
others are malicious servers (the SoK's level 5) that build or modify the model so that
the unchanged client's update leaks; each has a read-out attack in `gradleak.attacks`.
`parse_server("imprint:bins=128,measure=random")` builds one from its CLI spec, in the
style of `gradleak.defenses.parse_defense`.
"""

from __future__ import annotations

from gradleak.errors import GradleakError
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
    import yaml

    if isinstance(spec, ServerBehaviour):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise GradleakError(f"a server spec must be a non-empty string like 'imprint:bins=128', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    SERVERS.entry(name.strip())
    options: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise GradleakError(f"server spec {spec!r}: expected key=value, got {item!r}")
        key = key.strip().replace("-", "_")
        if key in options:
            raise GradleakError(f"server spec {spec!r}: option {key!r} is given twice")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str):  # YAML 1.1 reads "1e-05" as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        options[key] = parsed
    return SERVERS.create(name.strip(), options)


__all__ = ["Expectation", "Fishing", "Honest", "Imprint", "ImprintBlock", "Imprinted", "Loki", "SERVERS", "ServerBehaviour",
           "ServerModel", "Trap", "expected_recovery", "first_layer", "parse_server", "trap_expected"]
