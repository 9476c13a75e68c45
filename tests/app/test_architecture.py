"""The package map of the README holds: no room imports a room below it in the list, and no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import lgfn

ROOMS = ["common", "protocol", "ops", "models", "metrics", "data", "checkpoints", "training", "cluster", "results",
         "inference", "app"]
SRC = Path(lgfn.__file__).resolve().parent


def module_name(path: Path) -> str:
    return ".".join(("lgfn", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


def lgfn_imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lgfn"):
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # relative: resolve against this package
            base = module_name(path).split(".")[: -node.level] if path.name != "__init__.py" else \
                module_name(path).split(".")[: len(module_name(path).split(".")) - node.level + 1]
            found.append((".".join([*base, *(node.module.split(".") if node.module else [])]), node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("lgfn")]
    return found


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_room_is_on_the_map():
    rooms = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    rooms |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert rooms == set(ROOMS)


def test_no_room_imports_a_room_below_it():
    upward = []
    for path in SRC.rglob("*.py"):
        here = room(module_name(path))
        for target, line in lgfn_imports(path):
            there = room(target)
            if here in ROOMS and there in ROOMS and ROOMS.index(there) > ROOMS.index(here):
                upward.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not upward, upward


def test_no_import_cycle_between_modules():
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target, _ in lgfn_imports(path, top_level_only=True):
            while target and target not in modules:  # `from lgfn.x import name` -> module lgfn.x
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                deps.add(target)
        graph[name] = deps
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack, node, dep]
            if dep not in state:
                cycle = visit(dep, [*stack, node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            assert cycle is None, " -> ".join(cycle)
