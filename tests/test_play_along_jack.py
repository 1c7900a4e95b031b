"""Accompanying live on a MIDI clock, end to end: `companion live` (accompany.mode
chords_bass, during only) on a JACK server follows a real 100 BPM clock client
(``jack_midi_clock``), the performer plays a melody off the clock's grid, and the chords and
the bass must start on the clock's beats. The judge is ``jack_midi_dump -a`` on the clock and
the companion's output (as tests/test_clock_jack.py): a beat is a tick whose count since
Start is a multiple of 24, and each accompaniment note-on must lie within max(3 ms, one
period) of one (MIDI leaves a client at the start of a cycle)."""

from __future__ import annotations

import statistics
import time

import pytest
from support import (
    CLOCK_BPM,
    RATE,
    _transport,
    beat_frames,
    check_graph_runs,
    clock_rig,
    jack_tools,
    put_back_lost_ticks,
    read_dump,
    server_note,
    write_config,
)

pytestmark = [pytest.mark.jack, pytest.mark.jack_sync]
FRAMES = 256
CHORDS, BASS = 1, 2  # accompany.channel 2, bass_channel 3, 0-based


@pytest.mark.parametrize("jack_server", [FRAMES], indirect=True)
def test_chords_on_the_clocks_beats(jack_server, tmp_path, model_pkg, harmony_pkg):
    jack_tools()
    cfg = write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": 130.0},  # not the clock's tempo
        accompany={"mode": "chords_bass", "during": "only", "model": str(harmony_pkg),
                   "lookahead_ms": 50},
        session={"enabled": False},
    )
    with clock_rig(jack_server, FRAMES, tmp_path, cfg, ["-b", str(CLOCK_BPM), "-B", "-P"]) \
            as rig:
        env, comp, performer = rig.env, rig.comp, rig.performer
        _transport(env, "play")
        time.sleep(1.5)
        check_graph_runs(env, rig.clients, tmp_path)
        # eight notes at the performer's own pace, off the clock's grid
        melody = [(67 + d, 0.13 + 0.57 * k, 0.5) for k, d in enumerate([0, 4, 7, 4, 5, 2, 0, 7])]
        events = sorted([(s, [0x90, p, 90]) for p, s, _ in melody]
                        + [(s + d, [0x80, p, 0]) for p, s, d in melody], key=lambda e: e[0])
        t0 = time.perf_counter()
        for s, m in events:
            time.sleep(max(0.0, t0 + s - time.perf_counter()))
            performer.send_message(m)
        time.sleep(4 * 60.0 / CLOCK_BPM + 0.5)  # a bar of silence: the chords stop
        _transport(env, "stop")
        time.sleep(0.3)
    log = "\n".join(comp.lines)
    events, put_back = put_back_lost_ticks(read_dump(rig.dump_path), FRAMES, log)
    beats = beat_frames(events)
    server = server_note(env, events, put_back, log)
    assert len(beats) >= 8, f"the judge heard {len(beats)} beats\n{log}"
    acc = [(f, d) for f, d in events
           if len(d) == 3 and d[0] & 0xF0 == 0x90 and d[2] > 0 and d[0] & 0x0F in (CHORDS, BASS)]
    assert len(acc) >= 8, f"{len(acc)} accompaniment notes ({server})\n{log}"
    answered = [d for _, d in events if len(d) == 3 and d[0] == 0x90 and d[1] not in
                {p for p, _, _ in melody} and d[2] > 0]
    assert not answered, f"accompany only: it answered {answered}\n{log}"
    offs = [min(abs(f - b) for b in beats) / RATE for f, _ in acc]
    onsets = sorted({f for f, _ in acc})
    tol = max(0.003, FRAMES / RATE)
    print(f"{FRAMES} frames ({server}): {len(acc)} accompaniment notes on {len(onsets)} onsets, "
          f"{statistics.mean(offs) * 1000:.2f} ms mean, {max(offs) * 1000:.2f} ms most off the "
          f"clock's beats (tolerance {tol * 1000:.2f} ms)")
    assert max(offs) <= tol, (f"the chords lie up to {max(offs) * 1000:.2f} ms (mean "
                              f"{statistics.mean(offs) * 1000:.2f} ms) off the clock's beats "
                              f"({server})\n{log}")
    sounding: set[tuple[int, int]] = set()  # and every note of them ended
    for _, d in events:
        if len(d) == 3 and d[0] & 0x0F in (CHORDS, BASS) and d[0] & 0xE0 == 0x80:
            if d[0] & 0xF0 == 0x90 and d[2] > 0:
                sounding.add((d[0] & 0x0F, d[1]))
            else:
                sounding.discard((d[0] & 0x0F, d[1]))
    assert not sounding, f"left sounding: {sorted(sounding)}\n{log}"
