"""wavar's modules depend on each other one way: no import cycle, not even inside functions.

The graph is read from the source with :mod:`ast` (nothing is imported): one node per module of
the package (``wavar/x/__init__.py`` is the node ``wavar.x``), and an edge for every ``import``
and ``from ... import`` anywhere in a module: at module level, inside functions and methods,
under ``if`` or ``try``. A function-level import does not run at import time, so it cannot
fail as a half-initialised module would; but it is a dependency all the same, and a cycle of
dependencies is a design that no longer has layers. Relative imports are resolved against the
importing module's package. Where an edge goes:

* ``import wavar.a.b``, and ``from wavar.a import b`` where ``b`` is a submodule: to
  ``wavar.a.b``. Not to the parent packages that Python initialises on the way: a parent's
  ``__init__`` runs to completion before the submodule's body starts, so it cannot be the
  half-initialised module of a cycle. (Counting those edges would report every package whose
  ``__init__`` re-exports from a submodule that imports a sibling, e.g. ``wavar.codec`` ->
  ``wavar.codec.codec`` -> ``wavar.codec.grammar`` -> ``wavar.codec``, which is no cycle.)
* ``from wavar.a import name`` where ``name`` is not a submodule (a name defined in, or
  re-exported by, ``wavar/a/__init__.py``): to ``wavar.a``, the package's ``__init__``, and not
  to the module that defines ``name``. Such an import needs the ``__init__`` to have run up to
  the line that binds ``name``, so a module the ``__init__`` loads (directly or not) must not
  import from the package by name: this rule reports that cycle, where an edge to the defining
  module would hide it. It reports nothing spurious on wavar, whose modules below a package
  ``__init__`` import their siblings as submodules (``from wavar.codec import grammar``).
* Imports of other packages are left out, and so are dynamic ones (``importlib.import_module``
  in ``wavar.cli.main``, which picks a subcommand module by name).
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wavar"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under the package directory ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(top: str, module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    edges = []
    for node in ast.walk(tree):  # every node: module level and the bodies of functions alike
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == top or alias.name.startswith(top + "."):
                    edges.append(Edge(module, alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # from . import x: the package itself is the base of a package's __init__, the
                # containing package otherwise; each further dot goes one package up
                base = module.split(".")[: len(module.split(".")) - (not is_package)]
                base = base[: len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not (base == top or base.startswith(top + ".")):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.append(Edge(module, sub if sub in modules else base, node.lineno))
    return edges


def import_graph(root: Path = PACKAGE) -> dict[str, list[Edge]]:
    """Module -> its edges to the package's modules (see the module docstring for the rules)."""
    modules = module_names(root)
    graph = {}
    for module, path in modules.items():
        edges = _imports(root.name, module, path, modules)
        unknown = [e for e in edges if e.target not in modules]
        assert not unknown, f"imports of modules that do not exist: {unknown}"
        graph[module] = edges
    return graph


def cycles(graph: dict[str, list[Edge]]) -> list[tuple[set[str], list[Edge]]]:
    """Each strongly connected component that has a cycle (Tarjan's algorithm), with one of
    its shortest cycles: the component's modules all lie on cycles, the cycle names edges."""
    succ = {m: sorted({e.target for e in edges}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in succ[v]:
                components.append(comp)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    out = []
    for comp in components:
        # breadth-first from the component's first module back to itself, inside the component
        start = min(comp)
        prev: dict[str, Edge] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            edge = next((e for e in graph[v] if e.target == start), None)
            if edge is not None:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, prev[path[0].source])
                out.append((comp, path))
                break
            for e in graph[v]:
                if e.target in comp and e.target not in prev and e.target != start:
                    prev[e.target] = e
                    queue.append(e.target)
    return out


def describe(component: set[str], cycle: list[Edge], modules: dict[str, Path]) -> str:
    names = " -> ".join([cycle[0].source] + [e.target for e in cycle])
    where = "; ".join(f"{modules[e.source].relative_to(PACKAGE.parent)}:{e.line} imports "
                      f"{e.target}" for e in cycle)
    others = sorted(component - {e.source for e in cycle})
    more = f"; on other cycles with them: {', '.join(others)}" if others else ""
    return f"{names}  ({where}{more})"


# ---------------------------------------------------------------------------- wavar itself


def test_wavar_has_no_import_cycle() -> None:
    modules = module_names(PACKAGE)
    found = [describe(comp, cycle, modules) for comp, cycle in cycles(import_graph())]
    for line in found:
        print("import cycle:", line)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_the_graph_holds_the_edges_it_should() -> None:
    # A builder that found nothing would pass the test above: check edges of each kind.
    graph = {m: {e.target for e in edges} for m, edges in import_graph().items()}
    assert "wavar.codec.bitstream" in graph["wavar.codec.codec"]  # module level
    assert "wavar.codec" in graph["wavar.data.shards"]  # from wavar.codec import Codec: the package
    assert "wavar.codec.coder" in graph["wavar.data.shards"]  # ... import coder: the submodule
    assert "wavar.model.transformer" in graph["wavar"]  # inside wavar.__getattr__
    assert not graph["wavar.errors"]
    assert "wavar.codec.codec" not in graph["wavar.codec.bitstream"]  # the cycle issue 16 ended
    assert "wavar.eval.fid_parts" not in graph["wavar.eval.fid"]  # and the other


# ---------------------------------------------------------------------------- the rules


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def edges_of(graph: dict[str, list[Edge]]) -> set[tuple[str, str]]:
    return {(e.source, e.target) for edges in graph.values() for e in edges}


def test_rules_relative_function_level_and_reexports(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.a.x import X\n",
        "pkg/a/__init__.py": "from .x import X\nfrom . import y\n",
        "pkg/a/x.py": "import os\nfrom pkg.a import y\nX = 1\n",
        "pkg/a/y.py": "def f():\n    from ..b import z\n    import pkg.b.z\n",
        "pkg/b/__init__.py": "",
        "pkg/b/z.py": "from pkg.a import X\nfrom pkg import a\n",
    })
    got = edges_of(import_graph(pkg))
    assert got == {
        ("pkg", "pkg.a.x"),
        ("pkg.a", "pkg.a.x"), ("pkg.a", "pkg.a.y"),
        ("pkg.a.x", "pkg.a.y"),  # a submodule: no edge to the package pkg.a
        ("pkg.a.y", "pkg.b.z"),  # inside a function, relative (two dots) and absolute alike
        ("pkg.b.z", "pkg.a"),  # a re-exported name: the package's __init__, not pkg.a.x
    }


def test_cycles_are_found_and_named(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def f():\n    from pkg.c import g\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from pkg import a\n",  # into the cycle, not part of it
    })
    graph = import_graph(pkg)
    ((comp, cycle),) = cycles(graph)
    assert comp == {"pkg.a", "pkg.b", "pkg.c"}
    assert [(e.source, e.target, e.line) for e in cycle] == [
        ("pkg.a", "pkg.b", 1), ("pkg.b", "pkg.c", 2), ("pkg.c", "pkg.a", 1)]
    text = describe(comp, cycle, {m: PACKAGE / "x.py" for m in graph})
    assert text.startswith("pkg.a -> pkg.b -> pkg.c -> pkg.a  (wavar/x.py:1 imports pkg.b; ")
    # a second, longer way round the same modules: one component, its shortest cycle first
    (pkg / "b.py").write_text("from pkg import a\ndef f():\n    from pkg.c import g\n")
    ((comp, cycle),) = cycles(import_graph(pkg))
    text = describe(comp, cycle, {m: PACKAGE / "x.py" for m in graph})
    assert text.startswith("pkg.a -> pkg.b -> pkg.a  (") and text.endswith("with them: pkg.c)")


@pytest.mark.parametrize("init, cyclic", [
    ("from pkg.impl import Name\n", False),  # a sibling by its own module: no cycle
    ("from pkg.impl import Name\nfrom pkg.user import use\n", True),
])
def test_a_module_below_init_importing_from_the_package_by_name(tmp_path, init, cyclic) -> None:
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": init,
        "pkg/impl.py": "Name = 1\n",
        "pkg/user.py": "from pkg import Name\nuse = Name\n",  # needs __init__ past its line 1
    })
    assert bool(cycles(import_graph(pkg))) == cyclic
