"""A cut sysex (an F0 whose F7 never comes) does not make the companion deaf.

RtMidi's JACK input appends every message after an unterminated F0 to that sysex and
delivers nothing until an event ending in F7 comes; companion.midi.input sends its own port
a lone F7 after a quiet spell and splits what RtMidi then delivers back into messages by the
MIDI rule (any status byte but a real-time one ends a sysex). Checked over JACK on one port,
on `companion live` (a cut sysex, then random garbage with F0 bytes and no final F7 and a
10,000-message flood: each time the next call is answered and nothing is left sounding),
and on the in-process path with what RtMidi delivers then.
"""

from __future__ import annotations

import random
import time

import mido
import pytest
import rtmidi
from support import (
    CALLS,
    PHRASE_END_BEATS,
    answer_latency,
    assert_all_off,
    delete_rtmidi,
    flood,
    jack_env,
    make_config,
    play,
    raw_rig,
    wait_for,
    wait_quiet,
)
from support import JACK_BEAT as BEAT

from companion.midi.input import decode, open_input, split
from companion.midi.jacklib import SYSEX_END_S
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.live import Live

CUT = [0xF0, 0x01, 0x02]  # a sysex start whose end never comes


def garbage(seed: int, n: int = 300) -> list[list[int]]:
    """``n`` messages of random bytes (up to three, or longer after an F0: all that an
    rtmidi client sends), F0 often among them, the last one a sysex start with no F7."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            msg = [0xF0] + [rng.randrange(256) for _ in range(rng.randint(0, 6))]
        else:
            msg = [rng.randrange(256) for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.3:
                msg[rng.randrange(len(msg))] = 0xF0
        out.append(msg)
    out.append([0xF0, 0x7E, 0x10])
    return out


def flood_messages(n: int = 10_000) -> list[list[int]]:
    out = []
    for i in range(n // 2):
        p = 36 + (i * 7) % 48
        out += [[0x90, p, 90], [0x80, p, 0]]
    return out


# -- the MIDI rule -------------------------------------------------------------------------


def test_split_ends_a_sysex_at_any_status_byte_but_a_real_time_one():
    assert split([0xF0, 1, 2, 0xF7]) == [[0xF0, 1, 2, 0xF7]]
    # cut by a note: the note (and what follows) are messages again, in order
    assert split(CUT + [0x90, 60, 100, 0xF8, 0x80, 60, 0, 0xF7]) == [
        CUT, [0x90, 60, 100], [0xF8], [0x80, 60, 0]]
    # a real-time byte inside a sysex is a message of its own; the sysex goes on
    assert split([0xF0, 1, 0xF8, 2, 0xF7]) == [[0xF8], [0xF0, 1, 2, 0xF7]]
    # data bytes with no status, a stray F7: not messages
    assert split([0x90, 1, 2, 0xF7, 5, 0xF0, 0xF7]) == [[0x90, 1, 2], [5], [0xF0, 0xF7]]


def test_decode_keeps_every_message_after_a_cut_sysex_and_counts_the_rest():
    flood = flood_messages()
    msgs, invalid = decode(CUT + sum(flood, []) + [0xF7], 1.5)
    assert [m.bytes() for m in msgs] == flood
    assert invalid == 1 and all(m.time == 1.5 for m in msgs)
    whole, invalid = decode([0xF0, 0x7E] + [0x55] * 3000 + [0xF7], 0.0)
    assert invalid == 0 and whole[0].type == "sysex" and len(whole[0].data) == 3001


# -- over JACK: one port -------------------------------------------------------------------


@pytest.mark.jack
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_the_port_hears_the_next_note_after_a_cut_sysex(jack_server, monkeypatch):
    jack_env(jack_server, monkeypatch)
    heard: list[mido.Message] = []
    port = open_input("UNIX_JACK", "in", virtual=True, client_name="listener",
                      callback=heard.append)
    out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="sender")
    try:
        out.open_port(out.get_ports().index("listener:in"))
        time.sleep(0.3)
        sent = time.monotonic()
        for msg in (CUT, [0x90, 60, 100], [0xF8], [0x80, 60, 0]):
            out.send_message(msg)
        wait_for(lambda: len(heard) >= 3, timeout=5)
        waited = time.monotonic() - sent
        time.sleep(0.3)
    finally:
        delete_rtmidi(out)
        port.close()
    print(f"cut sysex: the next note heard {waited * 1000:.0f} ms after it was sent "
          f"(F7 after {SYSEX_END_S * 1000:.0f} ms of quiet; JACK period 21.3 ms)")
    assert [m.type for m in heard] == ["note_on", "clock", "note_off"]
    assert port.invalid == 1  # the cut sysex: counted, not delivered


# -- over JACK: the companion --------------------------------------------------------------


@pytest.mark.jack
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_after_cut_sysex_garbage_and_a_flood_the_call_is_answered(
        jack_server, monkeypatch, tmp_path, model_pkg):
    with raw_rig(jack_server, monkeypatch, tmp_path, model_pkg, "sysex") as (
            comp, performer, raw):
        raw.send_message(CUT)
        time.sleep(0.1)
        first = answer_latency(performer, comp)
        wait_quiet(performer)

        for msg in garbage(seed=13):
            raw.send_message(msg)
            time.sleep(0.001)
        sent, flood_s, _, _ = flood(raw, performer, comp)  # held in the open sysex
        raw.send_message([0xB0, 123, 0])  # the keys the garbage pressed are let go
        time.sleep(0.5)
        wait_quiet(performer)
        after = answer_latency(performer, comp)
        print(f"cut sysex: the call after it answered {first:.3f} s after its release; after "
              f"garbage with F0s, no F7, and {sent} messages in {flood_s:.2f} s: {after:.3f} s")
        for latency in (first, after):
            assert latency < PHRASE_END_BEATS * BEAT + BEAT + 1.0


# -- in process ----------------------------------------------------------------------------


def test_in_process_what_a_cut_sysex_held_is_heard_and_the_call_answered(model, model_pkg):
    """What RtMidi delivers once the sysex ends (the cut sysex, garbage with F0s, a flood:
    one run of bytes) goes through decode into the live wiring: the next call is answered
    and nothing is left sounding."""
    cfg = make_config(model_pkg, listen={"tempo_bpm": 240.0, "phrase_end_beats": 1},
                      answer={"length": 4, "max_beats": 4, "min_beats": 1},
                      midi={"passthrough": True}, session={"enabled": False})
    inport, out = LoopbackIn(), LoopbackOut()
    events: list[tuple[str, float, dict]] = []
    live = Live(cfg, model, inport, out, seed=2, log=lambda line: None,
                on_event=lambda k, t, **d: events.append((k, t, d)))
    held = CUT + sum(garbage(seed=5), []) + sum(flood_messages(), []) + [0xF7]
    live.start()
    try:
        msgs, invalid = decode(held, time.perf_counter())
        for m in msgs:
            inport.deliver(m)
        inport.deliver(mido.Message("control_change", control=123, value=0))
        wait_for(lambda: not live.scheduler.timeline.pending(), timeout=30)
        n = sum(k == "phrase_end" for k, _, _ in events)
        released = play(inport, CALLS[0])
        wait_for(lambda: sum(k == "phrase_end" for k, _, _ in events) > n)
        d_end = [d for k, _, d in events if k == "phrase_end"][-1]
        wait_for(lambda: not live.scheduler.busy(d_end["answer"]))
    finally:
        live.stop()
    flood_notes = sum(m.type == "note_on" and m.velocity == 90 for m in msgs)
    print(f"in process: {len(msgs)} messages and {invalid} invalid parts from {len(held)} "
          f"bytes held by a cut sysex; the next call answered")
    assert flood_notes >= 5_000  # the flood after the garbage: every note-on kept
    assert d_end["notes"] >= 1 and d_end["deadline"] >= released
    assert_all_off([m for _, m in out.messages()])
