"""Where the held-out Nottingham melodies are: the one setting for tests, bench and make.

``NOTTINGHAM_DIR`` in the environment names the folder; by default it is
``../shared/data/nottingham-melody`` beside the repository. The melodies are GPL-3 and are
read from there, never copied into the repository. ``python -m bench.data`` prints the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "NOTTINGHAM_DIR"
DEFAULT = Path("..") / "shared" / "data" / "nottingham-melody"
ORIGIN = ("the 1034 Nottingham folk melodies (GPL-3), as MIDI files; set "
          f"{ENV} to their folder")


def nottingham_dir() -> Path:
    """The folder of the Nottingham melodies: ``$NOTTINGHAM_DIR``, else DEFAULT beside the
    repository root (relative to the root, not to the working folder)."""
    given = os.environ.get(ENV)
    if given:
        return Path(given).expanduser()
    return (Path(__file__).resolve().parents[1] / DEFAULT).resolve()


def nottingham_files() -> list[Path]:
    """The melodies' MIDI files, sorted; empty when the folder is absent."""
    return sorted(nottingham_dir().glob("*.mid"))


if __name__ == "__main__":
    print(nottingham_dir())
