"""`companion demo`: a built-in performer plays the calls in companion/calls/ into the live
companion, in real time, through an in-process loopback instead of MIDI ports, and a live
view shows what is heard and answered, when. Needs no MIDI system. With ``--ui`` the control
surface shows it in the browser too, and the calls play again and again until Ctrl-C.
"""

from __future__ import annotations

import itertools
import sys
import threading
from typing import TextIO

import mido

from companion.commands.live import settled_heap, stop_on_signals
from companion.config import Config
from companion.encoding.names import note_name
from companion.encoding.phrases import Phrase, builtin
from companion.engine.model import StepModel
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.midi.session import SessionRecorder
from companion.realtime.clock import RealClock, StopFlag
from companion.realtime.live import Live


class View:
    """The live view: one line per event, seconds since the demo started."""

    def __init__(self, out: TextIO, clock: RealClock):
        self.out = out
        self.clock = clock
        self.t0 = clock.now()
        self.live: Live | None = None
        self.answer_done = threading.Event()
        self._lock = threading.Lock()
        #: An answer's first notes can leave (scheduler thread) before the engine thread has
        #: announced that answer: their lines wait for the announcement.
        self._announced = 0
        self._held: list[tuple[str, str, float]] = []

    def line(self, who: str, text: str, t: float | None = None, answer: int | None = None,
             announce: bool = False) -> None:
        """A line of the log; ``answer``: it belongs to that answer, which ``announce`` is."""
        t = self.clock.now() if t is None else t
        with self._lock:
            if announce and answer is not None:
                self._announced = answer
            if answer is not None and answer > self._announced:
                self._held.append((who, text, t))
                return
            self._print(who, text, t)
            if answer is not None and answer == self._announced:
                for held in self._held:
                    self._print(*held)
                self._held.clear()

    def _print(self, who: str, text: str, t: float) -> None:
        print(f"{t - self.t0:8.3f} s  {who:<9} {text}", file=self.out, flush=True)

    def performer(self, msg: mido.Message) -> None:
        if msg.type == "note_on" and msg.velocity > 0:
            self.line("performer", f"{note_name(msg.note):<4} vel {msg.velocity}")

    def companion(self, msg: mido.Message) -> None:
        if msg.type == "control_change" and msg.control == 123:
            self.line("companion", "all notes off")

    def event(self, kind: str, t: float, **data) -> None:
        live = self.live
        if kind == "note_in" and live is not None:
            lag = (t - data["received"]) * 1000
            what = "chord top now" if data["chord"] else "melody note"
            self.line("listener", f"{what} {note_name(data['pitch']):<4} model advanced "
                      f"{lag:.2f} ms after the note", t)
        elif kind == "phrase_end":
            self.answer_done.clear()
            wait = data["start"] - data["deadline"]
            self.line("companion", f"phrase end: {data['call']} melody notes heard; answer of "
                      f"{data['notes']} notes, {data['beats']:g} beats, on the beat "
                      f"{wait * 1000:.0f} ms later", data["deadline"], answer=data["answer"],
                      announce=True)
        elif kind == "note_on" and live is not None:
            a = live.engine.answer
            planned = a.notes[data["index"]].start if a is not None and a.id == data["answer"] \
                and data["index"] < len(a.notes) else t
            self.line("companion", f"{note_name(data['pitch']):<4} answer note {data['index'] + 1}"
                      f", {(t - planned) * 1000:+.2f} ms from its time", t, answer=data["answer"])
        elif kind == "note_off" and live is not None and data["answer"] == self._announced:
            if not live.scheduler.busy(data["answer"]):
                self.answer_done.set()
        elif kind == "barge_in":
            self.line("companion", f"interrupted after {data['played']} notes")


def play(phrase: Phrase, inport: LoopbackIn, view: View, beat_s: float,
         stop: StopFlag) -> None:
    """The built-in performer: the phrase's notes in real time, from now."""
    clock = view.clock
    t0 = clock.now() + 0.05
    for beats, msg in phrase.messages():
        if not clock.wait_until(t0 + beats * beat_s, stop):
            return
        view.performer(msg)
        inport.deliver(msg)


def run(cfg: Config, out: TextIO | None = None, calls: list[Phrase] | None = None,
        ui: bool = False) -> int:
    """Play every built-in call and show the answers; Ctrl-C ends it cleanly. ``ui``: serve
    the control surface (config ui:), print its URL, and play the calls until Ctrl-C."""
    stop = StopFlag()
    running: list[Live] = []

    def on_signal(signum, frame) -> None:
        for live in running:
            live.halt()
        stop.set()

    with stop_on_signals(on_signal):
        return _run(cfg, out or sys.stdout, builtin() if calls is None else calls, stop, running,
                    ui)


def _run(cfg: Config, out: TextIO, calls: list[Phrase], stop: StopFlag,
         running: list[Live], ui: bool = False) -> int:
    model = StepModel(cfg.model_dir())
    clock = RealClock()
    view = View(out, clock)
    inport, outport = LoopbackIn(), LoopbackOut(view.companion)  # shown, not sounded
    beat_s = 60.0 / cfg.listen.tempo_bpm
    print(
        f"companion demo: model {cfg.model_dir()} ({len(model.vocab.curves)} curves), "
        f"{cfg.listen.tempo_bpm:g} BPM; the companion answers after "
        f"{cfg.listen.phrase_end_beats:g} beats of silence. Ctrl-C stops.",
        file=out, flush=True,
    )
    recorder = SessionRecorder(clock.now(), cfg.listen.tempo_bpm) if ui else None  # downloads
    live = Live(cfg, model, inport, outport, clock, cfg.answer.seed, on_event=view.event,
                recorder=recorder)
    view.live = live
    running.append(live)
    server = None
    with settled_heap():  # no long garbage collection while it plays
        try:
            live.start()
            if ui:
                from companion.ui.server import UiServer

                server = UiServer(live, cfg.ui.host, cfg.ui.port, cfg.ui.token, recorder)
                print(f"control surface: {server.start()}", file=out, flush=True)
                if (qr := server.qr()) is not None:
                    print(f"the control surface's URL, for a tablet's camera:\n{qr}", file=out,
                          flush=True)
            rounds = itertools.count() if ui else range(1)
            plan = ((i, phrase) for _ in rounds for i, phrase in enumerate(calls))
            for i, phrase in plan:
                if stop.is_set():
                    break
                print(f"\ncall {i + 1} of {len(calls)}: {phrase.name}", file=out, flush=True)
                view.answer_done.clear()
                play(phrase, inport, view, beat_s, stop)
                # the answer: the phrase end, then at most max_beats, then a breath
                beats = cfg.listen.phrase_end_beats + cfg.answer.max_beats + 4
                limit = clock.now() + beats * beat_s
                while not stop.is_set() and not view.answer_done.wait(0.1):
                    if clock.now() > limit + 1.0:
                        view.line("demo", "no answer came")
                        break
                stop.wait(beat_s)
        finally:
            if server is not None:
                server.stop()
            live.stop()
    print("\ndemo over", file=out, flush=True)
    return 0
