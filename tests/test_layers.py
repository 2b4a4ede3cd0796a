"""The floor plan of src/ (docs/design.md): stage packages import only from the layers below
them, and no module imports itself back through others. Function-local imports count too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import REPO_ROOT

SRC = REPO_ROOT / "src"

# Bottom to top; a module may import from its own layer's package and from the layers before.
LAYERS = [
    ["src.config", "src.library_internals", "src.utils", "src.plots", "src.cli"],
    ["src.experiments", "src.experiment_files"],
    ["src.runs"],
    ["src.data"],
    ["src.augment"],
    ["src.models"],
    ["src.training"],
    ["src.prediction"],
    ["src.tools", "src.tagger"],
    ["src.kaggle"],
]


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/design.md")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def project_modules() -> dict[str, Path]:
    # src/__init__.py is empty: the package itself is no layer.
    return {
        module_name(p): p
        for p in sorted(SRC.rglob("*.py"))
        if "templates" not in p.parts and p != SRC / "__init__.py"
    }


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from src.x import y` imports src.x.y when y is a module, else src.x
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer():
    for module in project_modules():
        layer_of(module)


def test_no_module_imports_from_a_layer_above():
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    # A package's __init__ is imported by its own modules' imports; ignore that edge kind.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_an_upward_import(tmp_path):
    """The walker finds function-local imports (a cycle hidden in a function counts)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from src.tools.tagging import tag_files\n")
    assert imports_of(module, {"src.tools.tagging", "src.tools"}) == {"src.tools.tagging"}
    assert layer_of("src.tools.tagging") > layer_of("src.data.audio")


def test_every_test_file_is_grouped_by_stage_in_design_md():
    """docs/design.md's Tests table names the stage of every test file (the tests are flat)."""
    table = (REPO_ROOT / "docs" / "design.md").read_text(encoding="utf-8").split("## Tests", 1)
    assert len(table) == 2, "docs/design.md has no '## Tests' section"
    listed = set(re.findall(r"`(test_\w+\.py)`", table[1].split("\n## ", 1)[0]))
    present = {p.name for p in (REPO_ROOT / "tests").glob("test_*.py")}
    assert present - listed == set(), f"not grouped in docs/design.md: {sorted(present - listed)}"
    assert listed - present == set(), f"listed but missing: {sorted(listed - present)}"
