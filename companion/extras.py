"""How to install an extra (ui, osc, link, plot) where this companion runs, for the one-line
errors of a feature that needs one. The companion is installed from a clone of its
repository, never from a package index: from there, with the extra named."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

#: The folder above companion/: a clone of the repository when pyproject.toml lies there.
CLONE = Path(__file__).resolve().parents[1]


def install_hint(extra: str) -> str:
    """The command that adds ``extra``: run from a clone (an editable install, ``make run``'s,
    or ``python -m companion`` there), this interpreter's pip on that clone; installed from a
    wheel (pipx, pip), the same install again from the clone, with the extra."""
    if (CLONE / "pyproject.toml").is_file():
        target = shlex.quote(f"{CLONE}[{extra}]")
        return f"{shlex.quote(sys.executable)} -m pip install -e {target}"
    return (f"in the clone it was installed from, pipx install --force '.[{extra}]' "
            f"(or pip install '.[{extra}]')")
