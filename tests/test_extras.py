"""The command a missing extra's error names (companion.extras): from a clone, this Python's
pip on the clone; installed from a wheel, the install again from the clone, extras kept."""

from __future__ import annotations

import shlex
import sys

from support import ROOT

from companion import extras


def test_from_a_clone_this_pythons_pip_installs_the_extra_into_the_clone():
    assert extras.CLONE == ROOT
    assert extras.install_hint("ui") == (f"{shlex.quote(sys.executable)} -m pip install -e "
                                         f"'{ROOT}[ui]'")


def test_from_a_wheel_the_install_again_from_the_clone_keeps_the_extras_there(
        tmp_path, monkeypatch):
    monkeypatch.setattr(extras, "CLONE", tmp_path)  # no pyproject.toml: a wheel's site-packages
    monkeypatch.setattr(extras, "installed_extras", lambda: {"osc", "ui", "train"})
    assert extras.install_hint("link") == (
        "in the clone it was installed from, pipx install --force '.[ui,osc,link]' "
        "(or pip install '.[ui,osc,link]')")
    monkeypatch.setattr(extras, "installed_extras", lambda: set())
    assert "'.[train]'" in extras.install_hint("train")


def test_the_installed_extras_are_read_from_the_distribution():
    found = extras.installed_extras()
    assert {"ui", "osc"} <= found  # the test environment has every extra
    assert "no-such-extra" not in found
