"""Port matching and the messages for a missing MIDI system (no MIDI system needed)."""

from __future__ import annotations

import os
import sys

import pytest

from companion.midi import ports
from companion.midi.ports import PortError, match_port

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
