"""Port matching, the choice of the MIDI system for ``midi.backend: auto`` (simulated on
every platform), and the messages for a missing MIDI system; the last tests run
`companion ports` against a real JACK server and against none."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from support import ROOT, delete_rtmidi

from companion.config import MidiConfig
from companion.midi import ports
from companion.midi.ports import NoMidiSystem, PortError, choose_backend, match_port

ALL = ("alsa", "jack", "coremidi", "winmm")
LINUX_WITHOUT_SEQ = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.path.exists("/dev/snd/seq"),
    reason="needs Linux without the ALSA sequencer (/dev/snd/seq), as in CI")

NAMES = ["Midi Through:Midi Through Port-0 14:0", "KeyStep 37:KeyStep 37 MIDI 1 24:0",
         "Scarlett 2i4 USB:Scarlett 2i4 USB MIDI 1 28:0"]


def test_substring_match_is_case_insensitive():
    assert match_port("keystep", NAMES, "input", "ALSA") == NAMES[1]
    assert match_port("SCARLETT", NAMES, "input", "ALSA") == NAMES[2]


def test_exact_name_wins_over_substrings():
    names = ["synth", "synth 2"]
    assert match_port("synth", names, "output", "JACK") == "synth"


def test_no_match_lists_the_ports():
    with pytest.raises(PortError) as e:
        match_port("nord", NAMES, "input", "ALSA")
    msg = str(e.value)
    assert "'nord'" in msg and all(n in msg for n in NAMES) and "\n" not in msg
    with pytest.raises(PortError, match="none"):
        match_port("nord", [], "output", "ALSA")


def test_several_matches_list_them():
    with pytest.raises(PortError) as e:
        match_port("midi 1", NAMES, "input", "ALSA")
    assert NAMES[1] in str(e.value) and NAMES[2] in str(e.value)
    assert NAMES[0] not in str(e.value)


def test_no_system_messages_say_what_to_do(monkeypatch):
    alsa = ports.no_system_message("alsa")
    assert "/dev/snd/seq" in alsa and "snd-seq" in alsa and "companion demo" in alsa
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "x1")
    jack = ports.no_system_message("jack")
    assert "JACK server" in jack and "x1" in jack and "companion respond" in jack


def test_midi_system_problem(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "companion-no-such-server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    assert "no MIDI system" in ports.midi_system_problem("jack")
    has_seq = os.path.exists("/dev/snd/seq")
    assert (ports.midi_system_problem("alsa") is None) == has_seq or not sys.platform.startswith(
        "linux")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backends")
def test_a_backend_not_built_in_is_a_clear_error():
    with pytest.raises(PortError, match="coremidi.*not available"):
        ports.get_backend("coremidi")


def test_own_port_names_follow_jack_renaming():
    names = ["companion:in", "companion-01:out", "other:out"]
    assert ports._own(names, "companion", "out") == "companion-01:out"
    assert ports._own(["companion:in 128:0"], "companion", "in") == "companion:in 128:0"
    # a second companion's output client, companion-01 taken: JACK2 appends -01 again
    names = ["companion-01:out", "companion-01-01:out"]
    assert ports._own(names, "companion-01", "out") == "companion-01-01:out"


# -- midi.backend: auto -------------------------------------------------------------------


@pytest.mark.parametrize("platform, seq, jack, compiled, backend, why", [
    ("darwin", False, False, ["coremidi", "jack"], "coremidi", "macOS"),
    ("darwin", False, True, ["coremidi", "jack"], "coremidi", "macOS"),
    ("win32", False, False, ["winmm"], "winmm", "Windows"),
    ("linux", True, False, ["alsa", "jack"], "alsa", "/dev/snd/seq is present"),
    ("linux", True, True, ["alsa", "jack"], "alsa", "/dev/snd/seq is present"),
    ("linux", False, True, ["alsa", "jack"], "jack",
     "no /dev/snd/seq, a JACK server is running"),
    ("linux", True, True, ["jack"], "jack", "python-rtmidi has no ALSA, a JACK server"),
    ("darwin", False, True, ["jack"], "jack", "python-rtmidi has no CoreMIDI, a JACK server"),
    ("freebsd14", False, True, ["jack"], "jack", "auto: a JACK server is running"),
])
def test_auto_chooses_the_platforms_midi_system(platform, seq, jack, compiled, backend, why):
    chosen, reason = choose_backend(platform, seq, jack, compiled)
    assert chosen == backend
    assert reason.startswith("auto: ") and why in reason


@pytest.mark.parametrize("platform, seq, compiled, said, todo", [
    ("linux", False, ["alsa", "jack"],
     ["/dev/snd/seq", "is not there", "no JACK server is running"],
     ["modprobe snd-seq", "jackd -d dummy"]),
    ("linux", False, ["alsa"], ["/dev/snd/seq"], ["modprobe snd-seq"]),
    ("linux", True, ["jack"], ["built without ALSA", "no JACK server"], ["jackd -d"]),
    ("darwin", False, ["alsa"], ["built without CoreMIDI"], ["python-rtmidi built with CoreMIDI"]),
    ("win32", False, [], ["built without Windows MM"], ["python-rtmidi built with Windows MM"]),
    ("freebsd14", False, [], ["freebsd14 has no MIDI system"], ["built with JACK"]),
])
def test_auto_with_no_midi_system_says_what_is_missing(platform, seq, compiled, said, todo):
    with pytest.raises(NoMidiSystem) as e:
        choose_backend(platform, seq, False, compiled)
    msg = str(e.value)
    assert msg.startswith("no MIDI system: ") and "\n" not in msg and "companion demo" in msg
    for part in said + todo:
        assert part in msg, (part, msg)
    if "jack" not in compiled:
        assert "JACK server is running" not in msg and "jackd" not in msg


def test_auto_names_the_jack_server_it_looked_for():
    with pytest.raises(NoMidiSystem, match=r"\(JACK_DEFAULT_SERVER=studio\)"):
        choose_backend("linux", False, False, ALL, jack_server="studio")


def test_a_named_backend_is_taken_as_it_is():
    assert ports.resolve_backend("jack") == ("jack", "midi.backend: jack")
    with pytest.raises(PortError, match="auto, alsa, jack, coremidi, winmm.*'oss'"):
        ports.resolve_backend("oss")


def test_config_accepts_auto_and_every_backend_and_defaults_to_auto():
    field = {f.name: f for f in dataclasses.fields(MidiConfig)}["backend"]
    assert field.metadata["choices"] == (ports.AUTO, *ports.BACKENDS)
    assert MidiConfig().backend == "auto"


def test_this_pythons_rtmidi_backends_are_known():
    compiled = ports.compiled_backends()
    assert compiled and set(compiled) <= set(ports.BACKENDS)


def _ports(env: dict) -> subprocess.CompletedProcess:
    """`companion ports` as a user runs it, with the repository's config.yaml (auto)."""
    return subprocess.run([sys.executable, "-m", "companion", "ports"], cwd=ROOT,
                          env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=60)


@LINUX_WITHOUT_SEQ
def test_ports_with_auto_takes_a_running_jack_server_and_says_so(jack_server, monkeypatch):
    import rtmidi

    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server["JACK_DEFAULT_SERVER"])
    assert ports.midi_system_problem("auto") is None
    synth = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="h2-synth")
    synth.open_virtual_port("keys")
    try:
        r = _ports(jack_server)
    finally:
        delete_rtmidi(synth)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "MIDI system: JACK (auto: no /dev/snd/seq, a JACK server is running)"
    assert lines[1] == "MIDI inputs (JACK): ports to listen to"
    outputs = lines[lines.index("MIDI outputs (JACK): ports to play to") + 1:]
    assert any("h2-synth" in line and "keys" in line for line in outputs), lines


@LINUX_WITHOUT_SEQ
def test_ports_with_auto_and_no_midi_system_is_one_clear_line():
    env = dict(os.environ, JACK_DEFAULT_SERVER="companion-no-such-server",
               JACK_NO_START_SERVER="1")
    r = _ports(env)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: no MIDI system: the ALSA sequencer (/dev/snd/seq)")
    assert "no JACK server is running (JACK_DEFAULT_SERVER=companion-no-such-server)" in lines[0]
    assert "companion demo" in lines[0]
