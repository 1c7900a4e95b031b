"""The wall: the lab imports the product (bench, companion), never the reverse."""

from __future__ import annotations

import ast

from support import ROOT


def _imports_lab(path) -> list[int]:
    """The lines of ``path`` that import lab (``import lab...``, ``from lab... import``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [])
        if any(n == "lab" or n.startswith("lab.") for n in names):
            found.append(node.lineno)
    return found


def test_neither_companion_nor_bench_imports_the_lab(tmp_path):
    offenders = [f"{p.relative_to(ROOT)}:{line}" for top in ("companion", "bench")
                 for p in sorted((ROOT / top).rglob("*.py")) for line in _imports_lab(p)]
    assert offenders == []
    bad = tmp_path / "bad.py"  # the check itself sees both forms
    bad.write_text("import lab.stall\nfrom lab import closerace\nfrom .lab import x\n")
    assert _imports_lab(bad) == [1, 2]
