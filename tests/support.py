"""Helpers for the tests (imported as `support`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTTINGHAM = Path("/work/shared/data/nottingham-melody")
if not NOTTINGHAM.is_dir():
    NOTTINGHAM = ROOT.parent / "shared" / "data" / "nottingham-melody"


class Heard:
    """What a test's MIDI input port receives, stamped on arrival (its callback side)."""

    def __init__(self) -> None:
        self.got: list[tuple[float, object]] = []
        self.lock = threading.Lock()

    def _heard(self, msg) -> None:
        with self.lock:
            self.got.append((time.monotonic(), msg))

    def received(self) -> list:
        with self.lock:
            return list(self.got)


def nottingham_files(n: int) -> list[Path]:
    files = sorted(NOTTINGHAM.glob("*.mid"))[:n]
    if not files:
        pytest.fail(f"{NOTTINGHAM}: no Nottingham MIDI files for the test vocabulary")
    return files


def make_config(model_pkg: Path | None = None, **sections):
    """A Config from defaults and ``section={key: value}`` overrides, checked like a file."""
    from companion import config

    data: dict = {k: dict(v) for k, v in sections.items()}
    if model_pkg is not None:
        data["model"] = str(model_pkg)
    return config.from_dict(data)


def write_config(path: Path, model_pkg: Path | None = None, **sections) -> Path:
    import yaml

    data: dict = {k: dict(v) for k, v in sections.items()}
    if model_pkg is not None:
        data["model"] = str(model_pkg)
    path.write_text(yaml.safe_dump(data))
    return path
