"""The MIDI file writer (session capture, respond --out): checked against mido's own."""

from __future__ import annotations

import io

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.midi.files import TICKS_PER_BEAT, write_raw_tracks, write_tracks

channel_msgs = st.one_of(
    st.builds(lambda c, n, v: mido.Message("note_on", channel=c, note=n, velocity=v),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127)),
    st.builds(lambda c, n: mido.Message("note_off", channel=c, note=n),
              st.integers(0, 15), st.integers(0, 127)),
    st.builds(lambda c, n, v: mido.Message("control_change", channel=c, control=n, value=v),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127)),
    st.builds(lambda c, p: mido.Message("pitchwheel", channel=c, pitch=p),
              st.integers(0, 15), st.integers(-8192, 8191)),
    st.builds(lambda c, v: mido.Message("aftertouch", channel=c, value=v),
              st.integers(0, 15), st.integers(0, 127)),
    st.builds(lambda c, p: mido.Message("program_change", channel=c, program=p),
              st.integers(0, 15), st.integers(0, 127)),
)
# whole ticks, each event on a tick of its own, so that the order is the times' order
events = st.lists(st.integers(0, 10**7), unique=True, max_size=60).flatmap(
    lambda ticks: st.tuples(st.just(sorted(ticks)), st.lists(channel_msgs, min_size=len(ticks),
                                                             max_size=len(ticks))))


def mido_file(tracks, tempo_bpm: float) -> bytes:
    """The same file made by mido, message by message."""
    mf = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    for i, (name, evs) in enumerate(tracks):
        tr = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
        if i == 0:
            tr.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
        now = 0
        for t, m in evs:
            tick = round(t * TICKS_PER_BEAT)
            tr.append(m.copy(time=tick - now))
            now = tick
        tr.append(mido.MetaMessage("end_of_track", time=0))
        mf.tracks.append(tr)
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


@settings(max_examples=60, deadline=None)
@given(a=events, b=events, tempo=st.floats(20, 300))
def test_the_file_is_byte_for_byte_what_mido_writes(tmp_path_factory, a, b, tempo):
    tracks = [(name, [(tick / TICKS_PER_BEAT, m) for tick, m in zip(ticks, msgs, strict=True)])
              for name, (ticks, msgs) in (("call", a), ("answer", b))]
    path = tmp_path_factory.mktemp("mf") / "x.mid"
    write_tracks(path, tracks, tempo)
    assert path.read_bytes() == mido_file(tracks, tempo)


def test_at_one_tick_a_note_off_goes_before_a_note_on(tmp_path):
    on, off = bytes([0x90, 60, 90]), bytes([0x80, 60, 0])
    silent_on = bytes([0x90, 62, 0])  # velocity 0: an off too
    write_raw_tracks(tmp_path / "x.mid", [("t", [(1.0, on), (1.0, off), (1.0, silent_on),
                                                 (0.5, on)])], 120)
    msgs = [m for m in mido.MidiFile(tmp_path / "x.mid").tracks[0] if not m.is_meta]
    assert [(m.time, m.bytes()) for m in msgs] == [
        (240, list(on)), (240, list(off)), (0, list(silent_on)), (0, list(on))]


def test_a_message_that_is_not_a_channel_message_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'t': not a channel message: f0 01"):
        write_raw_tracks(tmp_path / "x.mid", [("t", [(0.0, bytes([0xF0, 1, 0xF7]))])], 120)
    assert not (tmp_path / "x.mid").exists()
