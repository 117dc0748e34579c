"""The code's shape: floors that import only downward, and no import loop.

Every module's imports are read from its source (those inside functions too, where
lazy imports hide loops), resolved to gradleak modules, and checked against the floors
below: a module may import its own floor or lower ones, never a higher one, and the
imports between modules must not close a loop. README's "How the code is laid out"
describes the same floors.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module belongs to the first (longest) prefix that names it
FLOORS: tuple[tuple[str, ...], ...] = (
    ("gradleak.errors",),
    ("gradleak.checks",),
    ("gradleak.registry", "gradleak.io", "gradleak.memory", "gradleak.devices"),
    ("gradleak.records", "gradleak.text", "gradleak.text.records"),
    ("gradleak.client", "gradleak.text.client"),
    ("gradleak.server",),
    ("gradleak.models", "gradleak.text.models"),
    ("gradleak.data", "gradleak.text.corpus", "gradleak.text.tokenizer"),
    ("gradleak.metrics", "gradleak.text.metrics"),
    ("gradleak.generators",),
    ("gradleak.defenses",),
    ("gradleak.attacks",),
    ("gradleak.analysis",),
    ("gradleak.api",),
    ("gradleak.pipelines",),
    ("gradleak.sweep", "gradleak.flower"),
    ("gradleak.cli",),
)
TOP = "gradleak"  # the package's face (lazy exports) sits above everything


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "gradleak").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def floor(module: str) -> int:
    if module == TOP:
        return len(FLOORS)
    best, level = -1, None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    if level is None:
        raise AssertionError(f"module {module} sits on no floor: add it to FLOORS")
    return level


def imports(module: str) -> set[str]:
    """The gradleak modules `module` imports anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports pkg, and pkg.sub when that is a module
            names = [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("gradleak") and name != module:
                found.add(name)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_sits_on_a_floor():
    for module in MODULES:
        floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_floors(module):
    up = sorted(m for m in GRAPH[module] if floor(m) > floor(module))
    assert not up, f"{module} (floor {floor(module)}) imports from higher floors: {up}"


def cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `graph`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_loop():
    loop = cycle_from(GRAPH)
    assert loop is None, "import loop: " + " -> ".join(loop)


def test_the_checks_can_fail():
    # an upward import and a loop, planted in a copy of the graph, are caught
    graph = {m: set(v) for m, v in GRAPH.items()}
    graph["gradleak.records"].add("gradleak.defenses")
    graph["gradleak.defenses"].add("gradleak.records")
    assert floor("gradleak.defenses") > floor("gradleak.records")
    assert cycle_from(graph) is not None
    assert imports("gradleak.cli.main") >= {"gradleak.cli.attack", "gradleak.errors"}
    # imports inside functions count
    assert "gradleak.pipelines.audit" in GRAPH["gradleak.cli.attack"]
