"""How to install an extra (ui, osc, link, plot) where this companion runs, for the one-line
errors of a feature that needs one. The companion is installed from a clone of its
repository, never from a package index: from there, with the extra named."""

from __future__ import annotations

import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

#: The folder above companion/: a clone of the repository when pyproject.toml lies there.
CLONE = Path(__file__).resolve().parents[1]
#: The distribution's name (pyproject.toml).
DIST = "midi-companion"
#: Extras a performer's install may hold, kept when another is added (not train, test).
PERFORMER_EXTRAS = ("ui", "osc", "link", "plot")


def install_hint(extra: str) -> str:
    """The command that adds ``extra``: run from a clone (an editable install, ``make run``'s,
    or ``python -m companion`` there), this interpreter's pip on that clone; installed from a
    wheel (pipx, pip), the same install again from the clone, with the extras it has and
    this one."""
    if (CLONE / "pyproject.toml").is_file():
        target = shlex.quote(f"{CLONE}[{extra}]")
        return f"{shlex.quote(sys.executable)} -m pip install -e {target}"
    keep = [e for e in PERFORMER_EXTRAS if e == extra or e in installed_extras()]
    if extra not in keep:
        keep.append(extra)
    spec = f"'.[{','.join(keep)}]'"
    return (f"in the clone it was installed from, pipx install --force {spec} "
            f"(or pip install {spec})")


def installed_extras() -> set[str]:
    """The extras of the installed distribution whose every requirement is installed."""
    try:
        requires = metadata.requires(DIST) or []
    except metadata.PackageNotFoundError:
        return set()
    needs: dict[str, list[str]] = {}
    for req in requires:
        marker = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if marker and name:
            needs.setdefault(marker.group(1), []).append(name.group(0))

    def present(name: str) -> bool:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return False
        return True

    return {extra for extra, names in needs.items() if all(present(n) for n in names)}
