"""The package's import boundaries, read from the source (ast) of every module of companion/.

The rules, for each module's imports, wherever they stand (inside functions too), relative
ones resolved, ``importlib.import_module``/``__import__`` of a constant name included:

- companion imports nothing from train/ or bench/ (they import companion, never the
  reverse). One exception: the `companion bench` command, which companion/commands/cli.py
  hands to bench.cli from inside a function (without bench/ that is a one-line error).
- companion/encoding and companion/engine, the pure parts, do no MIDI or real-time I/O: no
  rtmidi, jack or mido (but encoding/phrases.py, which writes a call's notes as mido.Message
  data), nothing of companion.realtime, companion.midi, companion.ui or companion.commands
  (what the engine asks of a clock and a player is companion.engine.protocols).
- No import cycle between companion's packages: each subpackage (encoding, engine, ...) and
  each top-level module (config, packages, ...) is one node, every import one edge.
- Nothing in companion imports TensorFlow or Keras: the companion runs the exported ONNX.
- music21 is imported inside functions only, never at a module's top, so that `companion
  live` never loads it (test_cli runs the live path's imports and looks in sys.modules).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from support import ROOT

PURE = ("companion/encoding/", "companion/engine/")
IO = ("rtmidi", "jack", "mido", "companion.realtime", "companion.midi", "companion.ui",
      "companion.commands")
#: module (path from the root) -> I/O packages it may import: a call's notes as mido.Message
IO_ALLOWED = {"companion/encoding/phrases.py": {"mido"}}
OUTSIDE = ("train", "bench", "lab")
#: module -> what of OUTSIDE it may import, inside a function only
OUTSIDE_ALLOWED = {"companion/commands/cli.py": {"bench.cli"}}
TRAINING = ("tensorflow", "keras", "tf_keras")
LAZY = ("music21",)


@dataclass(frozen=True)
class Import:
    module: str  # the module named after `import` / `from`, made absolute
    names: tuple[str, ...]  # what `from module import ...` takes; () for `import module`
    line: int
    top: bool  # run when the module is imported (not inside a function)

    def targets(self) -> set[str]:
        """Every module this may load: the module, and each name taken as a submodule."""
        return {self.module} | {f"{self.module}.{n}" for n in self.names}


def within(name: str, packages: tuple[str, ...]) -> bool:
    """Whether ``name`` is one of ``packages`` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, rel: str) -> list[Import]:
    """Every import in one module, with whether it runs at import time."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(rel)
    package = name if rel.endswith("__init__.py") else name.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            top = False
        if isinstance(node, ast.Import):
            out.extend(Import(a.name, (), node.lineno, top) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            out.append(Import(base, tuple(a.name for a in node.names), node.lineno, top))
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "__import__"):
                out.append(Import(node.args[0].value, (), node.lineno, top))
        for child in ast.iter_child_nodes(node):
            visit(child, top)

    visit(tree, True)
    return out


def violations(root: Path) -> list[str]:
    """Each import under ``root``/companion that breaks a rule of this module's docstring,
    as ``path:line: what``."""
    found = []
    for path in sorted((root / "companion").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for imp in imports(path, rel):
            where = f"{rel}:{imp.line}: imports {imp.module}"
            targets = imp.targets()
            if any(within(t, OUTSIDE) for t in targets):
                allowed = OUTSIDE_ALLOWED.get(rel, set())
                if imp.top or not {t for t in targets if within(t, OUTSIDE)} & allowed:
                    found.append(f"{where}: companion imports nothing from train/ or bench/")
            if any(within(t, TRAINING) for t in targets):
                found.append(f"{where}: the companion runs ONNX, never TensorFlow")
            if imp.top and any(within(t, LAZY) for t in targets):
                found.append(f"{where}: music21 only inside functions (not on the live path)")
            if rel.startswith(PURE):
                io = {p for p in IO for t in targets if within(t, (p,))}
                if io - IO_ALLOWED.get(rel, set()):
                    found.append(f"{where}: encoding/engine do no MIDI or real-time I/O")
    return found


def part(root: Path, module: str) -> str | None:
    """The node of the package graph ``module`` belongs to: ``companion.X`` for a
    subpackage or top-level module X of companion under ``root``; None for anything else
    (another package, companion's own __init__, a name that is no module)."""
    parts = module.split(".")
    if parts[0] != "companion" or len(parts) < 2:
        return None
    top = root / "companion" / parts[1]
    return f"companion.{parts[1]}" if top.is_dir() or top.with_suffix(".py").is_file() else None


def package_graph(root: Path) -> dict[str, dict[str, str]]:
    """Node -> node it imports -> the first import that makes that edge (``path:line``),
    from every import of every module under ``root``/companion, inside functions too."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted((root / "companion").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        src = part(root, module_name(rel))
        if src is None:
            continue
        edges = graph.setdefault(src, {})
        for imp in imports(path, rel):
            for t in sorted(imp.targets()):
                dst = part(root, t)
                if dst is not None and dst != src:
                    edges.setdefault(dst, f"{rel}:{imp.line}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[str]:
    """The import cycles of ``graph`` as ``a -> b -> a (where, where)``: for each node, the
    shortest way back to it through nodes after it in sorted order, if there is one (so a
    cycle is said once, from its first node)."""
    found = []
    nodes = sorted(graph)
    for i, start in enumerate(nodes):
        after = set(nodes[i + 1:])
        way = {start: [start]}  # node -> a shortest way to it from start
        frontier, back = [start], None
        while frontier and back is None:
            nxt = []
            for n in frontier:
                for m in sorted(graph[n]):
                    if m == start and back is None:
                        back = [*way[n], start]
                    elif m in after and m not in way:
                        way[m] = [*way[n], m]
                        nxt.append(m)
            frontier = nxt
        if back is not None:
            where = ", ".join(graph[a][b] for a, b in zip(back, back[1:], strict=False))
            found.append(f"{' -> '.join(back)} ({where})")
    return found


def test_the_package_keeps_its_import_boundaries():
    modules = sorted((ROOT / "companion").rglob("*.py"))
    rels = {p.relative_to(ROOT).as_posix() for p in modules}
    # the rules cover the modules they name (a moved module must move its rule too)
    assert {"companion/engine/engine.py", "companion/encoding/curves.py",
            "companion/realtime/live.py", "companion/commands/cli.py"} <= rels
    assert set(IO_ALLOWED) | set(OUTSIDE_ALLOWED) <= rels
    assert violations(ROOT) == []


def test_no_import_cycle_between_the_packages():
    graph = package_graph(ROOT)
    assert {"companion.engine", "companion.realtime", "companion.config"} <= set(graph)
    assert "companion.engine" in graph["companion.realtime"]  # the graph has the edges
    assert cycles(graph) == []


BAD = {
    "companion/engine/bad.py": (
        "import mido\n"
        "from companion.realtime.scheduler import Scheduler\n"
        "def later():\n"
        "    from ..midi import ports\n"
        "    import tensorflow as tf\n"
        "    import importlib\n"
        "    importlib.import_module('rtmidi')\n"
    ),
    "companion/encoding/worse.py": (
        "from companion import commands\n"
        "from companion.realtime import live\n"
        "from companion.realtime.clock import Clock, RealClock\n"
        "from train.corpus import load_corpus\n"
    ),
    "companion/realtime/thing.py": (
        "import mido\n"  # allowed: the real-time parts do I/O
        "from music21 import converter\n"
        "from bench import bench\n"
        "def f():\n"
        "    import music21\n"  # allowed: inside a function
        "    from keras import layers\n"
    ),
    "companion/commands/cli.py": (
        "import bench.cli\n"  # at the top: not the allowed dispatch
        "def _bench():\n"
        "    import bench.cli as bench_cli\n"  # allowed
        "    from train import corpus\n"
    ),
    "companion/encoding/phrases.py": "import mido\nimport rtmidi\n",
}


def test_a_forbidden_import_is_found(tmp_path):
    for rel, text in BAD.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = violations(tmp_path)
    where = sorted(f.split(": imports ")[0] for f in found)
    assert where == sorted([
        "companion/commands/cli.py:1", "companion/commands/cli.py:4",
        "companion/encoding/phrases.py:2",
        "companion/encoding/worse.py:1", "companion/encoding/worse.py:2",
        "companion/encoding/worse.py:3", "companion/encoding/worse.py:4",
        "companion/engine/bad.py:1", "companion/engine/bad.py:2", "companion/engine/bad.py:4",
        "companion/engine/bad.py:5", "companion/engine/bad.py:7",
        "companion/realtime/thing.py:2", "companion/realtime/thing.py:3",
        "companion/realtime/thing.py:6",
    ]), found
    assert any("bad.py:4: imports companion.midi" in f for f in found)  # relative, resolved


#: Three packages that import each other round (one of them inside a function), and a
#: pair beside: two cycles.
CYCLE = {
    "companion/__init__.py": "",
    "companion/config.py": "def later():\n    from companion.engine import model\n",
    "companion/engine/__init__.py": "",
    "companion/engine/model.py": "from companion.config import Config\n",
    "companion/midi/__init__.py": "",
    "companion/midi/ports.py": "from ..realtime.live import Live\n",
    "companion/realtime/__init__.py": "from companion.ui import server\n",
    "companion/realtime/live.py": "import mido\n",
    "companion/ui/__init__.py": "",
    "companion/ui/server.py": "from companion.midi import ports\n",
}


def test_an_import_cycle_is_found(tmp_path):
    for rel, text in CYCLE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert cycles(package_graph(tmp_path)) == [
        "companion.config -> companion.engine -> companion.config "
        "(companion/config.py:2, companion/engine/model.py:1)",
        "companion.midi -> companion.realtime -> companion.ui -> companion.midi "
        "(companion/midi/ports.py:1, companion/realtime/__init__.py:1, "
        "companion/ui/server.py:1)",
    ]


# -- test modules share helpers through support.py, never through each other ----------------


def test_modules_imported(text: str) -> list[tuple[int, str]]:
    """(line, module) of each test module (``test_*``) that ``text`` imports, at any depth."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[-1].startswith("test_")]
    return found


test_modules_imported.__test__ = False  # a helper, not a test


def test_no_test_module_imports_another():
    """Test files share what they need through tests/support.py and tests/conftest.py: a
    test module that imports another runs that module's import-time code and ties the two
    together."""
    found = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
             for path in sorted((ROOT / "tests").glob("test_*.py"))
             for line, name in test_modules_imported(path.read_text())]
    assert not found, "\n".join(found)


def test_an_import_of_a_test_module_is_found():
    text = ("import os\nfrom support import wait_for\nfrom test_live import play\n"
            "def f():\n    import test_engine\n    from tests.test_osc import x\n")
    assert test_modules_imported(text) == [(3, "test_live"), (5, "test_engine"),
                                           (6, "tests.test_osc")]
