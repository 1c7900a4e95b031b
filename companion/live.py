"""The live companion: ports -> listener/engine -> scheduler -> ports, and a clean stop.

Threads: the MIDI input callback only stamps and queues each message; the engine thread
takes them off the queue (waking at the phrase-end deadline when nothing comes), advances
the model and generates answers; the scheduler thread plays them. Sends to the output
port from any thread go through the scheduler's lock.

Timing hooks for measurements (``on_event(kind, t, **data)``, t on the live clock):
"note_in" (``received`` = callback time, t = model advanced), "phrase_end" (``deadline``,
``decided``, t = answer generated), "note_on"/"note_off" (answer notes, t = sent, ``index``
0 is the first note of an answer), "barge_in", "reset".
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TextIO

import mido

from companion.clock import Clock, RealClock, StopFlag
from companion.config import Config
from companion.engine import Engine, EventHook
from companion.model import StepModel
from companion.scheduler import Scheduler
from companion.session import SessionRecorder

#: The engine thread looks at its stop flag at least this often.
IDLE_WAKE_S = 0.25


class Live:
    """A running companion on two open ports (rtmidi ports, or the demo's loopback)."""

    def __init__(
        self,
        cfg: Config,
        model: StepModel,
        inport,
        outport,
        clock: Clock | None = None,
        seed: int | None = None,
        on_event: EventHook | None = None,
        recorder: SessionRecorder | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.cfg = cfg
        self.inport = inport
        self.outport = outport
        self.clock = clock or RealClock()
        self.recorder = recorder
        self.log = log or (lambda line: None)
        self.user_event = on_event
        self.channel = cfg.midi.output_channel - 1
        self.passthrough = cfg.midi.passthrough
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.scheduler = Scheduler(self._send, self.clock, self.channel, on_event=on_event)
        self.engine = Engine(model, cfg, self.scheduler, self.clock, seed, on_event=self._event)
        self._echoed: set[int] = set()  # passthrough notes sounding on our output
        self._stop = StopFlag()
        self._send_failed = False
        self._thread = threading.Thread(target=self._run, name="companion-engine", daemon=True)
        self._started = self._stopped = False

    # -- the input callback: rtmidi's thread, so only a timestamp and a queue put ---------

    def _on_input(self, msg: mido.Message) -> None:
        self.queue.put((self.clock.now(), msg))

    # -- output ----------------------------------------------------------------------------

    def _send(self, msg: mido.Message) -> None:
        """Called under the scheduler's lock. A failing port is reported once, never raised:
        the companion goes on listening (and stops cleanly when told to)."""
        try:
            self.outport.send(msg)
        except Exception as e:  # noqa: BLE001 - a dead port must not kill the scheduler
            if not self._send_failed:
                self._send_failed = True
                self.log(f"cannot send to the output port ({e}); still listening")
            return
        if self.recorder is not None:
            self.recorder.played(self.clock.now(), msg)

    def all_notes_off(self) -> None:
        """Note-off for every note we echoed, then All Notes Off (CC 123) on our channel."""
        with self.scheduler.lock:
            for p in sorted(self._echoed):
                self._send(mido.Message("note_off", channel=self.channel, note=p, velocity=0))
            self._echoed.clear()
            self._send(mido.Message("control_change", channel=self.channel, control=123,
                                    value=0))

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        now = self.clock.now
        q = self.queue
        while not self._stop.is_set():
            deadline = self.engine.next_deadline()
            wait = IDLE_WAKE_S if deadline is None else min(IDLE_WAKE_S, deadline - now())
            try:
                t, msg = q.get(timeout=wait) if wait > 0 else q.get_nowait()
            except queue.Empty:
                pass
            else:
                self._handle(t, msg)
                if not q.empty():
                    continue  # a message heard before the deadline counts before deciding
            try:
                self.engine.poll(now())
            except Exception as e:  # noqa: BLE001 - keep listening whatever happens
                self.log(f"could not answer: {type(e).__name__}: {e}")

    def _handle(self, t: float, msg: mido.Message) -> None:
        try:
            if self.recorder is not None:
                self.recorder.heard(t, msg)
            if self.passthrough and msg.type in ("note_on", "note_off") and (
                self.engine.listener.accepts(msg)
            ):
                echo = msg.copy(channel=self.channel)
                with self.scheduler.lock:
                    if self.scheduler.halted:
                        return
                    self._send(echo)
                    if msg.type == "note_on" and msg.velocity > 0:
                        self._echoed.add(msg.note)
                    else:
                        self._echoed.discard(msg.note)
            self.engine.on_message(msg, t)
        except Exception as e:  # noqa: BLE001 - a strange message must not stop the companion
            self.log(f"ignored {msg!r}: {type(e).__name__}: {e}")

    def _event(self, kind: str, t: float, **data) -> None:
        if kind == "phrase_end":
            a = self.engine.answer
            self.log(
                f"call of {data['call']} notes -> answer of {data['notes']} notes, "
                f"{data['beats']:g} beats, from {a.start - data['deadline']:+.3f} s after the "
                f"phrase end"
            )
        elif kind == "barge_in":
            self.log(f"performer plays: answer stopped after {data['played']} notes")
        if self.user_event is not None:
            self.user_event(kind, t, **data)

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """All Notes Off (a previous run may have been killed mid-note), then listen."""
        self._started = True
        self.all_notes_off()
        self.scheduler.start()
        self._thread.start()
        self.inport.callback = self._on_input

    def halt(self) -> None:
        """Signal-safe first step of stopping: no note-on leaves after this."""
        self.scheduler.halted = True
        self._stop.set()

    def stop(self) -> None:
        """Every sounding note off, All Notes Off, threads ended. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.halt()
        with contextlib.suppress(Exception):
            self.inport.callback = None
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.scheduler.close()
        if self._started:
            self.all_notes_off()


@contextlib.contextmanager
def stop_on_signals(on_signal: Callable[[int, object], None]) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP call ``on_signal`` instead of killing the process (only
    the main thread can take signals; elsewhere this does nothing); restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
    saved = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def _print(out: TextIO) -> Callable[[str], None]:
    def log(line: str) -> None:
        print(f"companion: {line}", file=out, flush=True)

    return log


def run(cfg: Config, out: TextIO | None = None) -> int:
    """`companion live`: until Ctrl-C / SIGTERM / SIGHUP, then notes off, session saved, 0."""
    from companion.ports import open_ports

    log = _print(out or sys.stdout)
    stop = StopFlag()
    running: list[Live] = []

    def on_signal(signum, frame) -> None:
        for live in running:
            live.halt()  # before anything else: no note-on leaves after this
        stop.set()

    with stop_on_signals(on_signal):
        sys.setswitchinterval(0.001)  # the scheduler thread gets the GIL back within ~1 ms
        model = StepModel(cfg.model_dir())
        if stop.is_set():
            return 0
        m = cfg.midi
        ports = open_ports(m.backend, m.client_name, m.input_name, m.output_name, m.input,
                           m.output)
        recorder = None
        try:
            clock = RealClock()
            if cfg.session.enabled:
                recorder = SessionRecorder(clock.now(), cfg.listen.tempo_bpm)
            live = Live(cfg, model, ports.inport, ports.outport, clock, cfg.answer.seed,
                        recorder=recorder, log=log)
            running.append(live)
            live.start()
            log(
                f"listening on {ports.input_label}, answering on {ports.output_label} channel "
                f"{m.output_channel} ({m.backend}); model {cfg.model_dir()}; "
                f"{cfg.listen.tempo_bpm:g} BPM, answer after {cfg.listen.phrase_end_beats:g} "
                f"beats of silence. Ctrl-C stops."
            )
            while not stop.wait(0.5):
                pass
        finally:
            for live in running:
                live.stop()
            ports.close()
        if recorder is not None:
            try:
                path = recorder.save(cfg.session_dir())
            except OSError as e:
                log(f"could not save the session in {cfg.session_dir()} ({e.strerror or e})")
                return 1
            if path is not None:
                log(f"session saved: {path}")
        log("stopped")
        return 0
