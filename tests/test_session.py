"""Session capture: the performer's and the companion's messages as a two-track MIDI file."""

from __future__ import annotations

import mido

from companion.session import SessionRecorder


def test_session_is_saved_as_two_tracks(tmp_path):
    rec = SessionRecorder(start=100.0, tempo_bpm=120)
    rec.heard(100.5, mido.Message("note_on", note=60, velocity=80))
    rec.heard(100.6, mido.Message("clock"))  # not a channel message: not kept
    rec.heard(101.0, mido.Message("note_off", note=60))
    rec.played(102.0, mido.Message("note_on", note=64, velocity=70, channel=2))
    rec.played(102.5, mido.Message("note_off", note=64, channel=2))
    path = rec.save(tmp_path / "sessions")
    assert path is not None and path.name.startswith("session-")
    mf = mido.MidiFile(path)
    assert [t.name for t in mf.tracks] == ["performer", "companion"]
    ticks = 0
    ons = []
    for m in mf.tracks[1]:
        ticks += m.time
        if m.type == "note_on":
            ons.append((ticks / mf.ticks_per_beat, m.note, m.channel))
    assert ons == [(4.0, 64, 2)]  # 2 s after the start at 120 BPM
    assert not any(m.type == "clock" for m in mf.tracks[0])
    again = rec.save(tmp_path / "sessions")  # a second save does not overwrite the first
    assert again != path and again.exists() and path.exists()


def test_a_session_without_notes_is_not_saved(tmp_path):
    rec = SessionRecorder(start=0.0, tempo_bpm=100)
    rec.played(0.0, mido.Message("control_change", control=123, value=0))
    assert rec.save(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
