"""Session capture: the performer's and the companion's messages as a two-track MIDI file."""

from __future__ import annotations

import mido

from companion.midi.session import SessionRecorder


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


def test_a_long_session_is_recorded_compactly_and_read_back_whole(tmp_path):
    import tracemalloc

    msgs = [mido.Message("aftertouch", channel=3, value=7),  # two bytes
            mido.Message("pitchwheel", pitch=-8192), mido.Message("note_on", note=60),
            mido.Message("control_change", control=1, value=127),
            mido.Message("control_change", control=7, value=0)]  # running status
    rec = SessionRecorder(start=10.0, tempo_bpm=120)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(100_000):
        rec.heard(10.0 + i * 0.001, msgs[i % 5])
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"session record: {kept / 100_000:.1f} bytes a message")
    assert kept / 100_000 < 8  # a tuple of (float, bytes) a message would be ~100
    path = rec.save(tmp_path)
    back = [m for m in mido.MidiFile(path).tracks[0] if not m.is_meta]
    assert len(back) == 100_000
    tick = 0
    for i, m in enumerate(back):
        tick += m.time
        assert m.bytes() == msgs[i % 5].bytes() and tick == round(i * 0.001 / 0.5 * 480), i


def test_a_message_earlier_than_the_last_one_is_kept_at_its_time(tmp_path):
    rec = SessionRecorder(start=0.0, tempo_bpm=60)
    rec.played(2.0, mido.Message("note_on", note=60))
    rec.played(1.0, mido.Message("note_off", note=60))  # another thread's, a little late
    rec.played(3.0, mido.Message("note_on", note=61))
    msgs = [m for m in mido.MidiFile(rec.save(tmp_path)).tracks[1] if not m.is_meta]
    assert [(m.type, m.time) for m in msgs] == [("note_on", 960), ("note_off", 0),
                                                ("note_on", 480)]
