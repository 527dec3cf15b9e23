"""The package's shape: no import circle (module-level or deferred), and the public imports users rely on."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import upt_lightning

PACKAGE = Path(upt_lightning.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["upt_lightning", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: modules of this package it imports anywhere in its body, deferred imports included}."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(owner(alias.name) for alias in node.names if alias.name.startswith("upt_lightning"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parent + ([base] if base else []))
                if base.startswith("upt_lightning"):
                    deps.update(owner(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else owner(base)
                                for a in node.names)
        deps.discard(name)
        deps.discard(None)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert "upt_lightning.errors" in graph and len(graph) > 100
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_errors_import_nothing_from_the_rest_of_the_package():
    assert import_graph()["upt_lightning.errors"] == set()


def test_every_module_imports_and_the_public_imports_still_work():
    for info in pkgutil.walk_packages(upt_lightning.__path__, "upt_lightning."):
        importlib.import_module(info.name)
    from upt_lightning.losses import OperatorLoss, compute_operator_loss_bundle, inverse_encoding_loss  # noqa: F401
    from upt_lightning.models import AnyPointDecoder, GridEncoder, LatentOperator  # noqa: F401
    from upt_lightning.modules import AutoencoderModule, OperatorModule  # noqa: F401
    from upt_lightning.query_sampling import apply_query_sampling  # noqa: F401
    from upt_lightning.data import DataError, GridDataModule  # noqa: F401
    from upt_lightning.cli import main  # noqa: F401  (the `upt` command)


def test_the_top_level_shows_the_architecture():
    entries = sorted(p.stem for p in PACKAGE.iterdir() if not p.name.startswith("_") and p.suffix in ("", ".py")
                     and p.name != "__pycache__")
    assert "runtime" in entries
    for moved in ("checkpoint_io", "rng_state", "faults", "process_group", "console"):
        assert moved not in entries, f"{moved} belongs in runtime/"
