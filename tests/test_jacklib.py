"""python-rtmidi's JACK clients speak through the system's libjack wherever the companion
uses rtmidi (companion.midi.jacklib.load_rtmidi), not through the one its wheel carries: the
dynamic linker's own record of its bindings (LD_DEBUG) says where rtmidi's JACK calls go.
Importing companion.midi loads no libjack."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from support import ROOT

from companion.midi import jacklib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _bound_to(code: str) -> str:
    """The file the dynamic linker binds rtmidi's ``jack_client_open`` to, running ``code``."""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, LD_DEBUG="bindings"), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    found = [ln for ln in r.stderr.splitlines()
             if "_rtmidi" in ln and "`jack_client_open'" in ln]
    assert len(found) == 1, f"no binding of rtmidi's jack_client_open in {len(found)} lines"
    return found[0].split(" to ", 1)[1].split(" [", 1)[0]


def _wheels_own() -> list[Path]:
    site = Path(sysconfig.get_paths()["purelib"])
    return sorted(site.glob("python_rtmidi*/libjack*"))


def test_rtmidi_binds_to_the_systems_libjack():
    try:
        ctypes.CDLL(jacklib.SONAME)
    except OSError:
        why = f"no {jacklib.SONAME} on this system (install libjack-jackd2-0 or jackd2)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    target = _bound_to("from companion.midi.ports import compiled_backends\n"
                       "compiled_backends()")  # the companion's first use of rtmidi
    assert Path(target).name == jacklib.SONAME, target
    assert Path(target).resolve() not in {p.resolve() for p in _wheels_own()}, target
    if _wheels_own():  # what the import changes: without it, the wheel's own
        alone = _bound_to("import rtmidi")
        assert Path(alone).resolve() in {p.resolve() for p in _wheels_own()}, alone


def test_rtmidi_imported_first_keeps_its_own():
    code = ("import sys, rtmidi\n"
            "from companion.midi import jacklib\n"
            "sys.exit(0 if jacklib.use_system_libjack() is False else 1)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_importing_the_midi_package_loads_no_libjack():
    code = ("import companion.midi, companion.midi.input, companion.midi.ports, "
            "companion.midi.watch, companion.midi.files, sys\n"
            "maps = open('/proc/self/maps').read()\n"
            "sys.exit(1 if 'libjack' in maps or 'rtmidi' in sys.modules else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:] or "libjack or rtmidi loaded by the import"
