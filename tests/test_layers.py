"""The package's architecture, read from its own imports: layers that point one way, no circles, no module
over 600 lines, and imports of the package's own modules at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sschsr"
MAX_LINES = 600

# each part of the package and its layer: a part imports only parts of lower layers (or of its own, without
# a circle between parts)
LAYERS = {
    "errors": 0,
    "provenance": 0,
    "progress": 0,
    "ops": 1,
    "models": 2,
    "data": 2,
    "metrics": 2,
    "losses": 2,
    "viz": 2,
    "checkpoints": 3,
    "pipeline": 4,
    "inference": 4,
    "lit": 5,
    "loggers": 5,
    "cli": 6,
    "demo": 7,
    "train": 7,
}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def part_of(module: str) -> str:
    """``sschsr.data.io.geotiff`` -> ``data``; ``sschsr`` itself -> ``sschsr``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path) -> list[tuple[str, bool]]:
    """The package modules ``path`` imports, each with whether the import sits inside a function."""
    tree = ast.parse(path.read_text())
    local = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for sub in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sschsr"):
            found.append((node.module, id(node) in local))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in local) for a in node.names if a.name.startswith("sschsr")]
    return found


def name_of(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_every_part_has_a_layer():
    parts = {part_of(name_of(p)) for p in modules()} - {"sschsr"}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down_and_stay_at_module_level(path):
    mine = part_of(name_of(path))
    for module, local in imports(path):
        theirs = part_of(module)
        if theirs == "sschsr" or mine == "sschsr":
            continue  # the package's __init__ (its version)
        assert LAYERS[theirs] <= LAYERS[mine], f"{name_of(path)} imports {module}: a higher layer"
        assert not local, f"{name_of(path)} imports {module} inside a function"


def test_parts_import_each_other_without_a_circle():
    graph: dict[str, set[str]] = {}
    for path in modules():
        mine = part_of(name_of(path))
        graph.setdefault(mine, set()).update(
            part_of(m) for m, _ in imports(path) if part_of(m) not in (mine, "sschsr")
        )
    seen: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if seen.get(node) == 1:
            raise AssertionError("import circle: " + " -> ".join([*trail, node]))
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*trail, node])
        seen[node] = 2

    for node in sorted(graph):
        visit(node, [])


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_test_time_chain_is_built_in_one_place():
    """Only sschsr.pipeline wraps a network in the test-time steps; the tools call TestTime.build."""
    wrappers = (
        "with_tta(",
        "with_flow_refinement(",
        "with_back_projection(",
        "with_coarse_flow(",
        "on_lr_grid(",
    )
    root = SRC.parents[1]
    for path in [*modules(), *sorted((root / "experiments").glob("*.py"))]:
        if path.name == "pipeline.py":
            continue
        text = path.read_text()
        assert not [w for w in wrappers if w in text], f"{path.name} assembles the test-time chain itself"
