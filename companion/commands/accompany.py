"""`companion accompany`: the accompanist on a virtual clock over a melody file, melody +
chords (+ bass) out.

The melody is played into companion.engine.accompany.Accompanist as a performer would play
it (optionally with human timing: each onset moved by up to ``jitter_s``), with the clock
moved from event to event: each slot is decided ``lookahead`` before its beat, each melody
note heard when it is played. The beat grid is the melody's own (its bars from the file's
time signatures, else its time line from 0), at a fixed tempo.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import mido
import numpy as np

from companion.config import Config
from companion.encoding import meter
from companion.encoding.harmony import slots as melody_slots
from companion.encoding.melody import Melody
from companion.encoding.phrases import read_melody
from companion.engine.accompany import AccNote, Accompanist, Decision, can_change, settings_from
from companion.engine.harmony import HarmonyModel


@dataclass
class Accompaniment:
    melody: Melody
    played: list[tuple[int, float, float, int]]  # pitch, onset, duration (beats), velocity
    decisions: list[Decision]
    notes: list[AccNote] = field(default_factory=list)
    tempo_bpm: float = 120.0

    def changes(self) -> list[tuple[float, object]]:
        """(beat, chord) where the chord sounding changes."""
        return [(d.beat, d.chord) for d in self.decisions if d.changed]


def play_along(acc: Accompanist, m: Melody, tempo_bpm: float, lookahead_s: float = 0.05,
               jitter_s: float = 0.0, seed: int = 0) -> Accompaniment:
    """Play melody ``m`` into ``acc`` on a virtual clock at ``tempo_bpm`` (module docstring);
    the lookahead is at most one beat."""
    beat_s = 60.0 / tempo_bpm
    look = min(max(lookahead_s, 0.0), beat_s) / beat_s  # beats
    rng = np.random.default_rng(seed)
    on = np.asarray(m.onsets, np.float64)
    dur = np.asarray(m.durations, np.float64)
    shift = rng.uniform(-jitter_s, jitter_s, len(m)) / beat_s if jitter_s > 0 else np.zeros(len(m))
    played_on = np.maximum(on + shift, 0.0)
    bar_on, bar_len = m.bars()
    sl = melody_slots(m)
    may = [can_change(int(sl.positions[j]), float(sl.bar_lengths[j]), j) for j in range(len(sl))]
    events = [(float(sl.times[j]) - look, 0, j) for j in range(len(sl))]
    events += [(float(played_on[i]), 1, i) for i in range(len(m))]
    events.sort()
    acc.reset()
    out: list[AccNote] = []
    for t, kind, i in events:
        if kind == 1:
            known = np.isfinite(bar_on[i]) and np.isfinite(bar_len[i]) and bar_len[i] > 0
            heard = float(bar_on[i]) + (played_on[i] - on[i]) if known else float(played_on[i])
            pos = meter.position(heard, float(bar_len[i]) if known else None)
            acc.hear(int(m.pitches[i]), int(m.velocities[i]), float(played_on[i]), pos)
        else:
            beat = float(sl.times[i])
            nxt = float(sl.times[i + 1]) if i + 1 < len(sl) else beat + 1.0
            change = next((float(sl.times[k]) for k in range(i + 1, len(sl)) if may[k]), None)
            bl = float(sl.bar_lengths[i])
            d = acc.slot(beat, int(sl.positions[i]), bl if np.isfinite(bl) else None, t,
                         nxt - beat, change)
            out += d.notes
    # a note cut to nothing by the melody is not played
    out = [n for n in out if n.duration > 1e-6]
    played = [(int(p), float(o), float(d), int(v))
              for p, o, d, v in zip(m.pitches, played_on, dur, m.velocities, strict=True)]
    return Accompaniment(m, played, list(acc.decisions), out, tempo_bpm)


def write(path: str | Path, a: Accompaniment, melody_channel: int = 0) -> None:
    """Tracks "melody", "chords" and "bass" (those with notes) on one timeline in beats."""
    from companion.midi.files import write_tracks

    def msgs(notes) -> list[tuple[float, mido.Message]]:
        ev = []
        for p, s, d, v, ch in notes:
            ev.append((s, mido.Message("note_on", note=p, velocity=v, channel=ch)))
            ev.append((s + d, mido.Message("note_off", note=p, velocity=0, channel=ch)))
        ev.sort(key=lambda e: (e[0], e[1].type == "note_on"))
        return ev

    tracks = [("melody", msgs([(p, s, d, v, melody_channel) for p, s, d, v in a.played]))]
    for part, name in (("chord", "chords"), ("bass", "bass")):
        notes = [(n.pitch, n.start, n.duration, n.velocity, n.channel) for n in a.notes
                 if n.part == part]
        if notes:
            tracks.append((name, msgs(notes)))
    write_tracks(path, tracks, a.tempo_bpm)


def as_json(a: Accompaniment) -> dict:
    return {
        "tempo_bpm": a.tempo_bpm,
        "chords": [{"beat": d.beat, "decided_beat": round(d.decided, 6),
                    "chord": None if d.chord is None else d.chord.name,
                    "pitch_classes": [] if d.chord is None else list(d.chord.pitch_classes())}
                   for d in a.decisions if d.changed],
        "notes": [{"pitch": n.pitch, "start_beats": round(n.start, 6),
                   "duration_beats": round(n.duration, 6), "velocity": n.velocity,
                   "channel": n.channel + 1, "part": n.part} for n in a.notes],
    }


def harmony_dir(cfg: Config) -> Path:
    from companion.packages import locate

    return locate(cfg.accompany.model, cfg.base_dir)


def run(cfg: Config, melody_path: str, out_path: str | None, seed: int | None, json_out: bool,
        out: TextIO | None = None) -> int:
    out = out or sys.stdout
    m = read_melody(melody_path)
    settings = settings_from(cfg)
    if settings.mode == "off":
        settings.mode = "chords_bass"  # the command is asked for chords: off means the default
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**31)
    acc = Accompanist(HarmonyModel(harmony_dir(cfg)), settings, seed)
    a = play_along(acc, m, cfg.listen.tempo_bpm, cfg.accompany.lookahead_ms / 1000.0)
    path = Path(out_path) if out_path else Path(f"{Path(melody_path).stem}-accompanied.mid")
    write(path, a)
    if json_out:
        print(json.dumps(as_json(a)), file=out)
    else:
        names = " ".join(str(c.name) if c is not None else "N" for _, c in a.changes()[:16])
        more = " ..." if len(a.changes()) > 16 else ""
        print(f"wrote {path}: {m.name}, {len(m)} melody notes, {len(a.changes())} chords "
              f"({names}{more}), {len(a.notes)} accompaniment notes; seed {seed}", file=out)
    return 0
