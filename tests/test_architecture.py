"""The package's layers point one way (docs/architecture.md): no module imports a higher layer or a sibling package of
its own layer, and no import cycle exists. Imports are read from the source (function-level ones included)."""
import ast
from pathlib import Path

import pytest

PACKAGE = "edgestylegan"
# Rank of each top-level module or package: an import must go to a strictly lower rank or stay inside its package.
RANKS = {
    "errors": 0, "allocator": 0,
    "config": 1, "paths": 1, "cli": 1,
    "models": 2,
    "io": 3,
    "imaging": 4, "runtimes": 4, "artifacts": 4,
    "compress": 5, "distill": 5, "metrics": 5, "report": 5,
    "pipeline": 6,
    "generate": 7,
}


def _modules(src: Path) -> dict[str, Path]:
    out = {}
    for path in (src / PACKAGE).rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Fully qualified edgestylegan modules imported anywhere in the file."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = ".".join(base[:len(base) - node.level + 1])
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                continue
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(src: Path) -> dict[str, set[str]]:
    modules = _modules(src)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, targets in graph.items():
        if name == PACKAGE:
            continue
        mine = _top(name)
        assert mine in RANKS, f"{name}: top-level module {mine!r} has no layer in RANKS (docs/architecture.md)"
        for target in targets:
            theirs = _top(target)
            if target == PACKAGE or theirs == mine:
                continue
            if RANKS[theirs] >= RANKS[mine]:
                bad.append(f"{name} (layer {RANKS[mine]}) imports {target} (layer {RANKS[theirs]})")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_layers_point_one_way(root):
    assert layer_violations(import_graph(root / "src")) == []


def test_no_import_cycles(root):
    assert cycles(import_graph(root / "src")) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / PACKAGE
    for sub in ("models", "compress"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "net.py").write_text("from ..compress import prune\n")
    (pkg / "compress" / "prune.py").write_text("def f():\n    from ..models import net\n")
    graph = import_graph(tmp_path)
    assert layer_violations(graph) == [f"{PACKAGE}.models.net (layer 2) imports {PACKAGE}.compress.prune (layer 5)"]
    assert cycles(graph) == [[f"{PACKAGE}.compress.prune", f"{PACKAGE}.models.net", f"{PACKAGE}.compress.prune"]]


@pytest.mark.parametrize("script", sorted(p.name for p in (Path(__file__).parents[1] / "stages").glob("*.py")))
def test_stage_scripts_are_thin(root, script):
    lines = (root / "stages" / script).read_text().splitlines()
    assert len(lines) <= 60, f"stages/{script} has {len(lines)} lines; move the logic into edgestylegan.pipeline"
