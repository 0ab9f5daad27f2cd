"""The shape of `messenger`: modules a few hundred lines long, and no import circle.

The import graph is read from the source with `ast`, and every import statement counts,
wherever it stands: at the top, inside a function, or under `if TYPE_CHECKING:`. A type-only
import is still a dependency a reader has to follow, and a string annotation (`"Services"`) can
only name what such an import brought in, so counting the imports counts those too. Importing
`messenger.db.pool` is an edge to that module only, not to the package `messenger.db` that
Python initialises first: otherwise every package that re-exports its modules would be a circle
with each of them.
"""

import ast
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import messenger

PACKAGE = Path(messenger.__file__).parent
Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The modules of `known` that the module `name` imports, each import statement anywhere."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 packages
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:  # `from messenger import db`
                    yield submodule
                elif base in known:  # `from messenger.db import Pool`
                    yield base


def import_graph() -> Graph:
    found = modules()
    known = set(found)
    graph: Graph = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = imported(tree, name, path.name == "__init__.py", known)
        graph[name] = {target for target in targets if target != name}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One circle through each group of modules that import each other (Tarjan's SCC)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [circle(graph, group) for group in groups]


def circle(graph: Mapping[str, set[str]], group: list[str]) -> list[str]:
    """A path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in sorted(graph.get(node, set()) & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                frontier.append(target)
    return group


MAX_LINES = 400
MAX_OPENAPI_LINES = 250  # a generator over the declared shapes (issue 14), not a hand-kept copy


def test_every_module_stays_under_400_lines() -> None:
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    too_long = {name: n for name, n in lengths.items() if n >= MAX_LINES}
    assert too_long == {}, f"split by concept: {too_long}"


def test_the_openapi_generator_is_at_most_250_lines() -> None:
    assert len(modules()["messenger.openapi"].read_text().splitlines()) <= MAX_OPENAPI_LINES


def test_no_module_of_messenger_imports_itself_through_others() -> None:
    found = cycles(import_graph())
    assert found == [], "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "messenger.db.pool" in graph["messenger.db"]  # from messenger.db.pool import ...
    assert "messenger.db" in graph["messenger.handlers"]  # from messenger import db
    assert "messenger.relay" in graph["messenger.cli"]  # an import inside a function


def test_a_circle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]


def test_a_type_checking_import_counts() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from messenger import app\n"
    known = {"messenger.app", "messenger.metrics"}
    assert list(imported(ast.parse(source), "messenger.metrics", False, known)) == ["messenger.app"]


def test_metrics_reads_dependencies_without_the_services_bag() -> None:
    assert "messenger.services" not in import_graph()["messenger.metrics"]


def test_the_serving_process_does_not_load_the_migration_tools() -> None:
    """alembic and SQLAlchemy take about 20 MB of resident memory; only the jobs use them."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, messenger.cli, messenger.app, messenger.relay;"
            " print(sorted({'alembic', 'sqlalchemy'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
