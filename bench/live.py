"""The live path in process: ``listen_ms``, ``answer_latency_ms``, ``schedule_error_ms``,
``turn_ahead_ms``.

A performer thread plays into the live companion (companion.realtime.live) on the
in-process loopback (companion.midi.loopback): the engine's and the scheduler's own
threads on the real clock, no MIDI system. Times come from Live's hooks (``on_event``) and
the scheduler's hand-over observer (``observe``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.figures import Plan, Result, log, next_pitch, stats
from companion.engine.protocols import TimedNote

if TYPE_CHECKING:
    from companion.config import Config
    from companion.midi.loopback import LoopbackIn
    from companion.realtime.live import Live

#: What runs beside the companion while it is measured (bench/ui.py: the web page's server
#: and two browsers): a context manager entered before the companion starts, left after.
Attach = Callable[["Live"], contextlib.AbstractContextManager]


def _live_config(model_dir: Path, **listen: Any) -> Config:
    """The default config at a fast fixed tempo and phrase end, so that many phrases fit in
    a few seconds and every run waits the same."""
    from companion import config

    return config.from_dict({
        "model": str(model_dir),
        "listen": {"tempo_bpm": 400, "phrase_end_beats": 0.25, **listen},
        "time": {"tempo": "fixed", "phrase_end": "fixed"},
        "answer": {"seed": 1, "min_beats": 1, "max_beats": 4, "start": "beat"},
        "session": {"enabled": False},
    })


class _Probe:
    """Collects the live hooks' timestamps (``on_event``), and through the scheduler's
    observer the moment each answer's first note is handed to it."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.listen: list[float] = []  # s: callback -> model advanced
        self.answer: list[float] = []  # s: phrase-end deadline -> first note handed over
        self.wake: list[float] = []  # s: deadline -> decision (engine thread woke)
        self.generate: list[float] = []  # s: decision -> whole answer generated
        self.first_late: list[float] = []  # s: first answer note sent - its time
        self.ahead: list[float] = []  # s: first note's time - whole answer generated
        self.sched: dict[tuple[int, int], float] = {}  # (answer, index) -> send time
        self.first_sent = threading.Event()
        self._handed: dict[int, float] = {}
        live.scheduler.observe(self._added)

    def _added(self, answer: int, note: TimedNote, t: float) -> None:
        if answer not in self._handed:
            self._handed[answer] = t

    def event(self, kind: str, t: float, **d: Any) -> None:
        if kind == "note_in":
            self.listen.append(t - d["received"])
        elif kind == "phrase_end":
            a = self.live.engine.answer
            handed = self._handed.get(d["answer"])
            if a is not None and handed is not None:
                self.ahead.append(a.start - t)
                self.answer.append(handed - d["deadline"])
                self.wake.append(a.decided - d["deadline"])
                self.generate.append(t - a.decided)
        elif kind == "note_on":
            self.sched[(d["answer"], d["index"])] = t
            if d["index"] == 0:
                a = self.live.engine.answer
                if a is not None and a.id == d["answer"] and a.notes:
                    self.first_late.append(t - a.notes[0].start)
                self.first_sent.set()


@contextlib.contextmanager
def _as_live(seconds: float = 0.001) -> Iterator[None]:
    """What `companion live` sets (companion.commands.live.run): threads get the GIL back
    within ~1 ms, and the start-up heap is set aside (no long garbage collection while
    playing)."""
    from companion.commands.live import settled_heap

    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        with settled_heap():
            yield
    finally:
        sys.setswitchinterval(old)


def _beside(live: Live, attach: Attach | None) -> contextlib.AbstractContextManager:
    return attach(live) if attach is not None else contextlib.nullcontext()


def start_live(model_dir: Path, cfg: Config | None = None) -> tuple[Live, LoopbackIn, _Probe]:
    """A Live on the loopback (its output keeps what it plays), not started yet."""
    from companion.engine.model import StepModel
    from companion.midi.loopback import LoopbackIn, LoopbackOut
    from companion.realtime.live import Live

    cfg = cfg or _live_config(model_dir)
    inport, outport = LoopbackIn(), LoopbackOut()
    holder: dict[str, _Probe] = {}

    def on_event(kind: str, t: float, **d: Any) -> None:
        p = holder.get("probe")
        if p is not None:
            p.event(kind, t, **d)

    live = Live(cfg, StepModel(cfg.model_dir()), inport, outport, seed=1, on_event=on_event)
    probe = _Probe(live)
    holder["probe"] = probe
    return live, inport, probe


def measure_listen_answer(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``listen_ms`` (input callback -> model state advanced, per melody note) and
    ``answer_latency_ms`` (phrase-end deadline -> first answer note handed to the scheduler):
    a performer thread plays short calls into the live companion; after each answer's
    first note it plays the next call, which stops that answer (barge-in)."""
    probe = play_calls(model_dir, plan, quiet)

    ms = 1000.0
    res.set("listen_ms", stats(np.array(probe.listen) * ms),
            f"{len(probe.listen)} melody notes, from the input callback to the model state "
            "advanced (Live's note_in hook)")
    if probe.answer:
        a = np.array(probe.answer) * ms
        res.set("answer_latency_ms", stats(a, ("p50", "p99", "max")),
                f"{len(a)} answers, from the phrase-end deadline to the first answer note handed "
                f"to the scheduler (engine woke {np.median(probe.wake) * ms:.3f} ms after the "
                f"deadline, p50; whole answer generated in "
                f"{np.median(probe.generate) * ms:.2f} ms, p50; the first note then waits for "
                f"its beat and left {np.median(probe.first_late) * ms:+.3f} ms from it, p50, "
                f"{np.max(probe.first_late) * ms:+.3f} max)")
    else:
        res.set("answer_latency_ms", None, "no answer came")


def play_calls(model_dir: Path, plan: Plan, quiet: bool, attach: Attach | None = None,
               seed: int = 2) -> _Probe:
    """The performer of ``measure_listen_answer``: ``plan.answers`` calls, each stopping the
    answer before it; returns what the probe saw (times in seconds)."""
    import mido

    live, inport, probe = start_live(model_dir)
    rng = np.random.default_rng(seed)
    notes_per_call = 4
    log(f"bench: listening and answering, {plan.answers} calls of {notes_per_call} notes", quiet)
    with _as_live(), _beside(live, attach):
        live.start()
        try:
            pitch = 64
            for k in range(plan.answers):
                probe.first_sent.clear()
                held = None
                # each call barges into the answer before, whose velocities are its call's:
                # a note of that pitch and velocity that soon is the companion's own coming
                # back (companion.realtime.echo), so each call plays at another velocity
                velocity = 90 + k % 2
                for _ in range(notes_per_call):
                    pitch = next_pitch(pitch, rng)
                    inport.deliver(mido.Message("note_on", note=pitch, velocity=velocity))
                    if held is not None:  # legato: the previous key is released after this one
                        time.sleep(0.004)
                        inport.deliver(mido.Message("note_off", note=held, velocity=0))
                    held = pitch
                    time.sleep(float(rng.uniform(0.04, 0.07)))
                inport.deliver(mido.Message("note_off", note=held, velocity=0))
                probe.first_sent.wait(2.0)
                time.sleep(float(rng.uniform(0.005, 0.02)))
        finally:
            live.stop()
    return probe


def measure_turn(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``turn_ahead_ms``: trading bars (``answer.start: bar``) in real time, how long before
    its bar line each answer was whole (its first note's time minus the moment the whole
    answer was generated); the note says how late the first notes left. A performer thread
    plays one-bar calls of four quarter notes at 240 BPM, each on the bar line after the
    answer to the one before."""
    import mido

    from companion import config

    cfg = config.from_dict({
        "model": str(model_dir), "listen": {"tempo_bpm": 240}, "time": {"tempo": "fixed"},
        "answer": {"seed": 1, "start": "bar"}, "session": {"enabled": False}})
    live, inport, probe = start_live(model_dir, cfg)
    bar = 1.0  # four beats of 0.25 s
    log(f"bench: trading bars, {plan.trades} one-bar calls", quiet)
    with _as_live():
        live.start()
        try:
            t0 = time.monotonic() + 0.1
            for k in range(plan.trades):
                start = t0 + 2 * bar * k
                for i, pitch in enumerate((60, 62, 64, 67)):
                    time.sleep(max(0.0, start + i * 0.25 - time.monotonic()))
                    inport.deliver(mido.Message("note_on", note=pitch, velocity=90))
                    time.sleep(max(0.0, start + i * 0.25 + 0.23 - time.monotonic()))
                    inport.deliver(mido.Message("note_off", note=pitch, velocity=0))
            time.sleep(max(0.0, t0 + 2 * bar * plan.trades - time.monotonic()))
        finally:
            live.stop()
    if not probe.ahead:
        res.set("turn_ahead_ms", None, "no answer came")
        return
    ms = 1000.0
    late = np.array(probe.first_late) * ms
    res.set("turn_ahead_ms", stats(np.array(probe.ahead) * ms, ("p50", "min")),
            f"{len(probe.ahead)} of {plan.trades} one-bar calls answered on the bar line, each "
            f"answer whole this long before its first note's time; the first notes left "
            f"{np.median(late):+.3f} ms from it, p50, {np.max(late):+.3f} max")


def measure_schedule(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``schedule_error_ms`` (send time, Live's note_on hook, minus the note's time): the live
    scheduler plays a long answer at a fast tempo (a note every 3-7 ms) while a performer
    plays over it, holding a key (so that no phrase ends and the engine steps the model for
    each of its notes, as with ``barge_in: keep``)."""
    errs, heard = schedule_errors(model_dir, plan, quiet)
    n = plan.scheduled_notes
    missing = n - len(errs)
    res.set("schedule_error_ms", stats(np.array(errs) * 1000.0, ("p50", "p99", "max")),
            f"{len(errs)} answer notes 3-7 ms apart{f', {missing} never sent' if missing else ''}, "
            f"while the performer played {heard} notes over them; send time (Live's "
            "note_on hook) minus the note's time")


def schedule_errors(model_dir: Path, plan: Plan, quiet: bool, attach: Attach | None = None,
                    seed: int = 3) -> tuple[list[float], int]:
    """The run of ``measure_schedule``: each sent note's error (seconds) and the melody
    notes the performer played over them."""
    import mido

    live, inport, probe = start_live(model_dir, _live_config(model_dir, tempo_bpm=110))
    rng = np.random.default_rng(seed)
    n = plan.scheduled_notes
    log(f"bench: scheduling {n} answer notes", quiet)
    with _as_live(), _beside(live, attach):
        live.start()
        try:
            inport.deliver(mido.Message("note_on", note=40, velocity=80))  # held throughout
            answer_id = 1_000_000
            t0 = live.clock.now() + 0.2
            starts = t0 + np.cumsum(rng.uniform(0.003, 0.007, n))
            live.scheduler.begin(answer_id)
            notes = [TimedNote(60 + i % 24, float(s), 0.002, 80) for i, s in enumerate(starts)]
            for note in notes:
                live.scheduler.add(answer_id, note)
            end = float(starts[-1]) + 0.05
            pitch = 64
            restrike = live.clock.now() + 1.0
            while live.clock.now() < end:
                if live.clock.now() > restrike:  # a key held for long counts as stuck
                    inport.deliver(mido.Message("note_on", note=40, velocity=80))
                    restrike += 1.0
                pitch = next_pitch(pitch, rng)
                inport.deliver(mido.Message("note_on", note=pitch, velocity=90))
                time.sleep(0.01)
                inport.deliver(mido.Message("note_off", note=pitch, velocity=0))
                time.sleep(float(rng.uniform(0.03, 0.06)))
            inport.deliver(mido.Message("note_off", note=40, velocity=0))
        finally:
            live.stop()
    errs = [probe.sched[(answer_id, i)] - nt.start for i, nt in enumerate(notes)
            if (answer_id, i) in probe.sched]
    return errs, len(probe.listen)
