"""The service reads top-down: a module imports its own package and the layers below it, never
one above, and no import circle closes anywhere (imports for type checking and inside functions
count too). The layer order lives here, once; the README's Layout section draws it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parent.parent / "service"

LAYERS: list[tuple[str, ...]] = [
    ("service.__main__", "service.app"),  # the process and the app object
    ("service.http", "service.grpc"),  # the adapters: peers, neither imports the other
    ("service.nnserve",),  # the app's state: settings, metrics, the data plane, the budgets
    ("service.explain",),  # why a model answered as it did
    ("service.dataplane",),  # find a model, pick its version, run it; the protocol's documents
    ("service.models",),  # card -> session -> runner, the repository, traffic and shadow
    ("service.v2",),  # the Open Inference Protocol's tensors (a card's example is written in it)
    ("service.card",),  # the contract between training and serving
    ("service.features",),  # preprocessing shared with training
    ("service.observability", "service.admission"),  # metrics, logs, traces; keys, budgets, drain
    ("service.config", "service.errors", "service.deadline"),  # the bottom: import nothing of ours
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p for p in sorted(SERVICE.rglob("*.py")) if not p.name.startswith("inference_pb2")
    }


MODULES = _modules()


def _unit(module: str) -> tuple[int, str]:
    """The layer index and the package of a module: the longest listed prefix it falls under."""
    for index, layer in enumerate(LAYERS):
        for unit in layer:
            if module == unit or module.startswith(unit + "."):
                return index, unit
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    # `from service.x import y` may name the submodule service.x.y: count it when it is one.
    return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]


def imports_of(module: str) -> set[str]:
    """Every module of the service this module imports, wherever the import statement stands."""
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names = _resolve(module, path.name == "__init__.py", node)
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES and n not in (module, "service"))
    return found


def test_every_import_points_down_a_layer() -> None:
    upward = []
    for module in MODULES:
        if module == "service":
            continue  # the package itself: the version and the environment, importable by all
        layer, unit = _unit(module)
        for imported in imports_of(module):
            imported_layer, imported_unit = _unit(imported)
            if imported_unit != unit and imported_layer <= layer:
                upward.append(f"{module} -> {imported}")
    assert not upward, "imports that point up or across a layer:\n" + "\n".join(sorted(upward))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle_among_the_modules() -> None:
    cycle = _cycle({m: imports_of(m) for m in MODULES})
    assert cycle is None, "an import circle: " + " -> ".join(cycle or [])


def test_the_root_holds_at_most_ten_modules() -> None:
    root = sorted(p.name for p in SERVICE.glob("*.py"))
    assert len(root) <= 10, root


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_each_package_says_what_it_owns(package: str) -> None:
    assert ast.get_docstring(ast.parse(MODULES[package].read_text())), f"{package} has no docstring"


def test_the_checker_sees_an_upward_import() -> None:
    """The check itself: config importing the models would be caught, and so would a circle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _unit("service.models.runner") == (LAYERS.index(("service.models",)), "service.models")
    assert _unit("service.config.traffic")[0] > _unit("service.models.traffic")[0]
