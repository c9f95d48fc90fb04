"""The package's layering, read from the source: libraries never reach up into the pipeline or
the CLI, commands never import each other, and no module imports itself through others."""

import ast
from pathlib import Path

import compressor

PACKAGE = Path(compressor.__file__).parent
LIBRARIES = ("pruning", "distill", "training", "runtime", "sparsity", "models", "data", "report", "tasks")
ABOVE_LIBRARIES = ("pipeline", "cli", "commands", "passes", "recipe", "runs", "state")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the compressor modules it imports, at the top or inside a function."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compressor"):
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("compressor"))
        found[module_name(path)] = names
    modules = set(found)
    return {m: {n for n in names if n in modules and n != m} for m, names in found.items()}


def test_libraries_do_not_import_the_pipeline_the_cli_or_passes():
    wrong = {m: sorted(n for n in names if n.split(".")[1:2] and n.split(".")[1] in ABOVE_LIBRARIES)
             for m, names in imports().items() if m.split(".")[1:2] and m.split(".")[1] in LIBRARIES}
    wrong = {m: n for m, n in wrong.items() if n}
    assert not wrong, f"libraries importing upwards: {wrong}"


def test_commands_do_not_import_each_other():
    wrong = {m: sorted(n for n in names if n.startswith("compressor.commands."))
             for m, names in imports().items() if m.startswith("compressor.commands.")}
    wrong = {m: n for m, n in wrong.items() if n}
    assert not wrong, f"commands importing other commands: {wrong}"


def test_no_import_cycle():
    graph = imports()
    # A package imports its own modules to register them; that is not a cycle of layers.
    graph = {m: {n for n in names if not n.startswith(m + ".")} for m, names in graph.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(target):] + [target])}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
