"""`companion respond`: the live engine on a virtual clock, a call file in, call + answer out.

The call is played into the same Listener/Engine/Sampler/scheduler code as on stage, with
the clock moved from event to event; the answer's notes are the events the scheduler
plays. Nothing depends on the wall clock, so the same seed gives the same answer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import mido

from companion.config import Config
from companion.encoding.phrases import CallError, Phrase, PhraseNote, read_call
from companion.engine.engine import Answer, Engine
from companion.engine.model import StepModel
from companion.midi.files import write_tracks
from companion.realtime.clock import VirtualClock
from companion.realtime.scheduler import VirtualScheduler


@dataclass
class Response:
    call: Phrase
    answer: list[PhraseNote]  # beats on the call's timeline
    seed: int
    tempo_bpm: float
    steps: int  # ONNX steps taken, call and answer
    key: str | None = None  # the key the answer was biased to ("D major"), if any
    tokens: list[int] | None = None  # the answer's curve tokens (for measurements)


def deliver(engine: Engine, player: VirtualScheduler, clock: VirtualClock, t: float,
            msg: mido.Message) -> None:
    """``msg`` heard at ``t`` by an engine on a virtual clock: the answer notes due by then
    are played first, as they would have been in real time."""
    player.advance(t)
    clock.set(t)
    engine.on_message(msg, t)


#: Deadlines polled after the call at most (trading bars, a bar line judged not the call's
#: end is followed by the next: the second always ends it).
MAX_POLLS = 8


def answer_phrase_end(engine: Engine, clock: VirtualClock) -> Answer | None:
    """Move the virtual clock from deadline to deadline after the call until it is answered
    (CallError if there is none: nothing was played)."""
    for _ in range(MAX_POLLS):
        deadline = engine.next_deadline()
        if deadline is None:
            raise CallError("the call never ends: nothing to answer")
        clock.set(deadline)
        answer = engine.poll(deadline)
        if answer is not None or engine.muted:
            return answer
    return None


def respond(cfg: Config, model: StepModel, call: Phrase, seed: int) -> Response:
    beat = 60.0 / cfg.listen.tempo_bpm
    clock = VirtualClock()
    played: list[tuple[float, mido.Message]] = []
    player = VirtualScheduler(lambda m: played.append((clock.now(), m)), clock,
                              cfg.midi.output_channel - 1)
    engine = Engine(model, cfg, player, clock, seed)
    listen_ch = cfg.midi.input_channel
    for t_beats, msg in call.messages(0 if listen_ch == "omni" else int(listen_ch) - 1):
        deliver(engine, player, clock, t_beats * beat, msg)
    answer_phrase_end(engine, clock)
    player.flush()
    return Response(call, _notes(played, beat), seed, cfg.listen.tempo_bpm, engine.steps,
                    engine.key_name(), list(engine.answer.tokens) if engine.answer else None)


def excerpt(call: Phrase, beats: float) -> Phrase:
    """The call's first ``beats`` beats: notes starting before, cut off at the end."""
    if not beats > 0:
        raise CallError(f"--beats: expected a positive number of beats, got {beats:g}")
    notes = [PhraseNote(n.pitch, n.start, min(n.duration, beats - n.start), n.velocity)
             for n in call.notes if n.start < beats]
    if not notes:
        raise CallError(f"{call.name}: no note starts in the first {beats:g} beats")
    return Phrase(f"{call.name} (first {beats:g} beats)", notes)


def _notes(played: list[tuple[float, mido.Message]], beat: float) -> list[PhraseNote]:
    """The played note-on/note-off pairs as notes in beats."""
    sounding: dict[int, tuple[float, int]] = {}
    notes = []
    for t, m in played:
        if m.type == "note_on" and m.velocity > 0:
            sounding[m.note] = (t, m.velocity)
        elif m.type in ("note_on", "note_off") and m.note in sounding:
            start, vel = sounding.pop(m.note)
            notes.append(PhraseNote(m.note, round(start / beat, 6),
                                    round((t - start) / beat, 6), vel))
    notes.sort(key=lambda n: n.start)
    return notes


def write(path: str | Path, r: Response, answer_channel: int) -> None:
    """Two tracks, "call" and "answer", on one timeline in beats."""
    def track(notes: list[PhraseNote], channel: int) -> list[tuple[float, mido.Message]]:
        return Phrase("", notes).messages(channel)

    write_tracks(path, [("call", track(r.call.notes, 0)),
                        ("answer", track(r.answer, answer_channel))], r.tempo_bpm)


def as_json(notes: list[PhraseNote]) -> list[dict]:
    return [{"pitch": n.pitch, "start_beats": n.start, "duration_beats": n.duration,
             "velocity": n.velocity} for n in notes]


def run(cfg: Config, call_path: str, out_path: str | None, seed: int | None, json_out: bool,
        out: TextIO | None = None, plot: str | None = None, beats: float | None = None) -> int:
    import numpy as np

    out = out or sys.stdout
    call = read_call(call_path)
    if beats is not None:
        call = excerpt(call, beats)
    model = StepModel(cfg.model_dir())
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**31)
    r = respond(cfg, model, call, seed)
    path = Path(out_path) if out_path else Path(f"{Path(call_path).stem}-response.mid")
    write(path, r, cfg.midi.output_channel - 1)
    if plot:
        from companion.commands.plot import piano_roll

        piano_roll(plot, call.notes, r.answer, title=f"{call.name}: call and answer "
                   f"(seed {seed})", key=r.key)
    if json_out:
        print(json.dumps(as_json(r.answer)), file=out)
    else:
        span = max((n.start + n.duration for n in r.answer), default=0.0) - (
            r.answer[0].start if r.answer else 0.0)
        print(f"wrote {path}: call of {len(call.notes)} notes ({call.name}), answer of "
              f"{len(r.answer)} notes over {span:.2f} beats; seed {seed}", file=out)
    return 0
