"""The lab's tests run with the product tests' helpers (tests/ on sys.path: support) and
their fixtures and hooks (tests/conftest.py's, taken in here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def _product_conftest() -> dict[str, object]:
    """tests/conftest.py, loaded under a name of its own: its fixtures and hooks."""
    spec = importlib.util.spec_from_file_location("product_conftest", TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return {k: v for k, v in vars(module).items() if not k.startswith("__")}


globals().update(_product_conftest())
