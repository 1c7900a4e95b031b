"""The live companion: ports -> listener/engine -> scheduler -> ports, and a clean stop.

Threads: the MIDI input callback (on the input port's thread, companion.midi.input) only
stamps and queues each message; the engine thread takes them off the queue (waking at the
phrase-end deadline when nothing comes), advances the model and generates answers; the
scheduler thread plays them. Sends to the output port from any thread go through the
scheduler's lock.

Timing hooks for measurements (``on_event(kind, t, **data)``, t on the live clock):
"note_in" (``received`` = arrival time, t = model advanced), "phrase_end" (``deadline``,
``decided``, t = answer generated), "note_on"/"note_off" (answer notes, t = sent, ``index``
0 is the first note of an answer), "barge_in", "reset", "control" (``name``, ``value``: a
setting changed or an action done, by a CC, the web page or OSC; see ``apply``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import mido

from companion.config import Config, ConfigError
from companion.engine.engine import Engine, EventHook
from companion.engine.midiclock import CLOCK_TYPES
from companion.engine.model import StepModel
from companion.midi.session import Autosave, SessionRecorder
from companion.realtime.clock import Clock, RealClock, StopFlag, realtime_thread
from companion.realtime.controls import ACTIONS, ANSWERING, LISTENING, Controls, StateOut
from companion.realtime.metronome import ClickThread, Metronome
from companion.realtime.scheduler import Scheduler

#: The engine thread looks at its stop flag at least this often.
IDLE_WAKE_S = 0.25
#: In a call and while its phrase end is pending, the engine thread warms the model (a
#: throwaway step) this often: a step after 50 ms without one costs 3 ms on a cloud guest
#: whose caches are emptied between notes, one within 5 ms of another 0.2 ms, and the
#: answer's steps are what a performer waits for. Never closer than WARM_GUARD_S to the
#: deadline. About 4% of a core while a call goes on; nothing when idle.
WARM_EVERY_S = 0.005
WARM_GUARD_S = 0.0005
#: With keys held (no deadline yet), warm until this long after the last message: a held
#: key is a call going on, a forgotten one is not.
WARM_IN_CALL_S = 2.0

#: Input older than this when the engine thread gets to it is a backlog (a flood of
#: messages faster than they can be handled): dropped rather than acted on late, except
#: what ends notes (see ``_ends_notes``). Counted, and said in one warning per flood.
BACKLOG_S = 0.25
#: A flood is over, and its warning said, after this long without a dropped message.
FLOOD_QUIET_S = 1.0
#: The input queue never holds more than this: beyond it the input callback drops too.
MAX_QUEUED = 20_000
#: The oldest arrival stamp believed (seconds before it is read).
STAMP_WINDOW_S = 1.0


def _ends_notes(msg) -> bool:
    """Note-offs and All Notes/Sound Off: never dropped from a backlog (cheap, no model step,
    and dropping one would leave a key held in the listener or an echoed note sounding)."""
    kind = getattr(msg, "type", None)
    return kind == "note_off" or (kind == "note_on" and msg.velocity == 0) or (
        kind == "control_change" and msg.control in (120, 123))


@dataclasses.dataclass(frozen=True)
class Command:
    """A control posted from outside the engine thread (``Live.post``): a setting of
    LIVE_SETTINGS or one of ACTIONS, and its value. ``reply`` is called on the engine thread
    with None once it is applied, or with the one-line reason it was refused."""

    name: str
    value: Any = None
    reply: Callable[[str | None], None] | None = None


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
        clockport=None,
    ):
        self.cfg = cfg
        self.inport = inport
        self.outport = outport
        self.clockport = clockport  # a dedicated MIDI clock input (config time.clock_port)
        self.clock = clock or RealClock()
        self.recorder = recorder
        self.log = log or (lambda line: None)
        self.user_event = on_event
        self.channel = cfg.midi.output_channel - 1
        self.passthrough = cfg.midi.passthrough
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.scheduler = Scheduler(self._send, self.clock, self.channel, on_event=self._played)
        self.engine = Engine(model, cfg, self.scheduler, self.clock, seed, on_event=self._event)
        self.clicks = self._clicks(cfg)
        self.controls = Controls(cfg.controls, self.apply, self.engine.setting)
        self.state_out = StateOut(cfg.controls.state_out, self.channel, self.scheduler.send,
                                  self.scheduler.lock)
        self._key_logged: str | None = None
        self._echoed: set[int] = set()  # passthrough notes sounding on our output
        self._stop = StopFlag()
        self._send_failed = False
        self._thread = threading.Thread(target=self._run, name="companion-engine", daemon=True)
        self._started = self._stopped = False
        #: Input messages dropped as a backlog, by the engine thread / by the input callback.
        self.dropped = 0
        self.dropped_queue_full = 0
        self._flood = 0  # dropped in the flood going on
        self._last_drop = 0.0
        #: When stop() had turned every note off (clock seconds).
        self.notes_off_at: float | None = None

    # -- the input callback: the input port's thread, so only a timestamp and a queue put --

    def _arrival(self, msg: mido.Message, port) -> float:
        """When ``msg`` arrived: the port's stamp when it stamps on our clock (a polled port,
        companion.midi.input: read up to a poll late, stamped in the MIDI system's thread), else
        now. A stamp out of reason (later than now, over a second old) is not believed."""
        now = self.clock.now()
        if getattr(port, "clock", None) is self.clock.now:  # RealClock's: time.perf_counter
            t = msg.time
            if now - STAMP_WINDOW_S <= t <= now:
                return t
        return now

    def _on_input(self, msg: mido.Message) -> None:
        if getattr(msg, "type", None) in CLOCK_TYPES:  # followed here, never queued
            if self.engine.clock_from_input:
                self.engine.on_clock(msg, self._arrival(msg, self.inport))
            return
        if self.queue.qsize() >= MAX_QUEUED and not _ends_notes(msg):
            self.dropped_queue_full += 1  # memory stays bounded whatever comes in
            return
        self.queue.put((self._arrival(msg, self.inport), msg))

    def _on_clock(self, msg: mido.Message) -> None:
        """The dedicated clock port's callback: its clock messages only."""
        if getattr(msg, "type", None) in CLOCK_TYPES:
            self.engine.on_clock(msg, self._arrival(msg, self.clockport))

    def _clicks(self, cfg: Config) -> ClickThread:
        """Count-in and metronome (config time), on the clock's beats or the internal tempo."""
        tc = cfg.time
        engine = self.engine
        mc = engine.midiclock
        return ClickThread(
            Metronome(tc.count_in_beats, tc.metronome), self.scheduler.send, self.clock,
            lambda: engine.beat_s, (lambda t: mc.next_beat(t)) if mc is not None else
            (lambda t: None), lambda: self.scheduler.halted, tc.click_channel - 1,
            tc.click_note, tc.click_velocity)

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

    def swap_input(self, port: Any) -> Any:
        """Listen to ``port`` instead of the input port (its callback moves there); returns
        the old port, no longer listened to, for the caller to close."""
        old, self.inport = self.inport, port
        with contextlib.suppress(Exception):
            old.callback = None
        port.callback = self._on_input
        return old

    def swap_output(self, port: Any) -> Any:
        """Play to ``port`` instead of the output port, under the send lock (a message goes
        wholly to one or the other); a failure of the new port is said again. Returns the
        old port, no longer sent to, for the caller to close."""
        with self.scheduler.lock:
            old, self.outport = self.outport, port
            self._send_failed = False
        return old

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
        realtime_thread()  # the engine's step and answer must not wait for a core either
        now = self.clock.now
        q = self.queue
        warmed = heard = -math.inf  # when the model was last warmed, a message last taken
        while not self._stop.is_set():
            deadline = self.engine.next_deadline()
            wait = IDLE_WAKE_S
            # in a call (keys held: no deadline yet) or waiting for its end: keep warm
            if deadline is not None or (self.engine.listener.notes
                                        and now() - heard < WARM_IN_CALL_S):
                left = math.inf if deadline is None else deadline - now()
                if left > WARM_GUARD_S and now() - warmed >= WARM_EVERY_S:
                    self.engine.model.warm()
                    warmed = now()
                    if deadline is not None:
                        left = deadline - warmed
                wait = min(IDLE_WAKE_S, left, warmed + WARM_EVERY_S - now())
            try:
                t, msg = q.get(timeout=wait) if wait > 0 else q.get_nowait()
            except queue.Empty:
                pass
            else:
                if msg is None:  # stop() waking us
                    continue
                heard = now()
                if heard - t > BACKLOG_S and not (isinstance(msg, Command) or _ends_notes(msg)):
                    self._flood += 1  # a backlog: never acted on (or played) late
                    self._last_drop = now()
                else:
                    self._handle(t, msg)
                if not q.empty():
                    continue  # a message heard before the deadline counts before deciding
            if self._flood and now() - self._last_drop > FLOOD_QUIET_S:
                self._flood_over()
            try:
                self.engine.poll(now())
            except Exception as e:  # noqa: BLE001 - keep listening whatever happens
                self.log(f"could not answer: {type(e).__name__}: {e}")

    def _flood_over(self) -> None:
        n, self._flood = self._flood, 0
        self.dropped += n
        self.log(f"input flood: {n} messages came faster than they could be handled and were "
                 f"dropped (note-offs kept); listening normally again")

    def _handle(self, t: float, msg: mido.Message | Command) -> None:
        if isinstance(msg, Command):
            self._command(msg)
            return
        try:
            if self.recorder is not None:
                self.recorder.heard(t, msg)
            if self.controls.handle(msg):
                return
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

    # -- controls: MIDI CCs, the web page and OSC take this one path ----------------------

    def post(self, name: str, value: Any = None,
             reply: Callable[[str | None], None] | None = None) -> bool:
        """From any thread: have the engine thread ``apply(name, value)``, in order with the
        MIDI heard. False (and nothing posted) while the input queue is full."""
        if self.queue.qsize() >= MAX_QUEUED:
            return False
        self.queue.put((self.clock.now(), Command(name, value, reply)))
        return True

    def _command(self, cmd: Command) -> None:
        try:
            self.apply(cmd.name, cmd.value)
        except ConfigError as e:
            if cmd.reply is not None:
                cmd.reply(str(e))
            return
        if cmd.reply is not None:
            cmd.reply(None)

    def apply(self, name: str, value: Any = None) -> Any:
        """Change a setting of LIVE_SETTINGS (checked as in config.yaml) or do one of ACTIONS
        (mute on/off, panic, reset_style); on the engine thread only. What changed goes out as
        a "control" event (``name``, ``value`` as kept). ConfigError, and nothing changes,
        for an unknown name or a bad value."""
        if name == "mute":
            if not isinstance(value, bool | int) or value not in (0, 1):
                raise ConfigError(f"mute: expected on or off (true/false, 1/0), got {value!r}")
            kept: Any = bool(value)
            if self.engine.set_muted(kept):
                self.log("muted: listening only" if kept else "unmuted: answering again")
                self._on_mute(kept)
        elif name == "panic":
            self.log("panic: all notes off")
            self.panic()
            kept = None
        elif name == "reset_style":
            self.engine.reset_style()
            self.log("style memory reset")
            kept = None
        elif name in ACTIONS:  # pragma: no cover - ACTIONS and the branches above agree
            raise ConfigError(f"{name}: no such action")
        else:
            kept = self.engine.set(name, value)
        if self.user_event is not None:
            self.user_event("control", self.clock.now(), name=name, value=kept)
        return kept

    def _played(self, kind: str, t: float, **data) -> None:
        """Scheduler events: the last note-off of the current answer ends its turn."""
        if kind == "note_off":
            a = self.engine.answer
            if a is not None and data["answer"] == a.id and data["index"] == len(a.notes) - 1:
                self.state_out.set(LISTENING)
        if self.user_event is not None:
            self.user_event(kind, t, **data)

    def _on_mute(self, muted: bool) -> None:
        """Muted: the answer playing now stops too."""
        if muted:
            self.scheduler.cancel()
            self.state_out.set(LISTENING)

    def panic(self) -> None:
        """Every answer dropped, every note off (ours and echoed), back to listening."""
        self.scheduler.cancel()
        self.all_notes_off()
        self.state_out.set(LISTENING)

    def _event(self, kind: str, t: float, **data) -> None:
        if kind == "phrase_end":
            self.state_out.set(ANSWERING)
            key = self.engine.key_name()
            if key != self._key_logged:
                self._key_logged = key
                self.log(f"key: {key}")
            a = self.engine.answer
            self.log(
                f"call of {data['call']} notes -> answer of {data['notes']} notes, "
                f"{data['beats']:g} beats, from {a.start - data['deadline']:+.3f} s after the "
                f"phrase end{self.engine.time_note(t)}"
            )
        elif kind == "barge_in":
            self.state_out.set(LISTENING)
            self.log(f"performer plays: answer stopped after {data['played']} notes")
        if self.user_event is not None:
            self.user_event(kind, t, **data)

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """All Notes Off (a previous run may have been killed mid-note), then listen."""
        self._started = True
        self.all_notes_off()
        self.state_out.set(LISTENING)
        self.scheduler.start()
        self._thread.start()
        self.inport.callback = self._on_input
        if self.clockport is not None:
            self.clockport.callback = self._on_clock
        self.clicks.start()

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
        if self.clockport is not None:
            with contextlib.suppress(Exception):
                self.clockport.callback = None
        self.clicks.stop()
        # notes off first, at once: the engine thread may be asleep for up to IDLE_WAKE_S
        self.scheduler.close()
        if self._started:
            self.all_notes_off()
            self.notes_off_at = self.clock.now()
        self.queue.put((self.clock.now(), None))
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if self._flood:
            self.dropped += self._flood
            self._flood = 0


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """Collect the start-up garbage once, then set every live object aside (``gc.freeze``)
    while playing. A full collection walks all ~30,000 objects of the loaded process and
    holds the GIL for 4 to 8 ms: about a JACK period (5.3 ms at 256 frames), so the
    scheduler's next note and the reading of input would be that late (input keeps its
    arrival times: companion.midi.input). Objects made while playing are collected as usual,
    and walking them is short."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
    from companion.midi.ports import describe, open_ports

    log = _print(out or sys.stdout)
    stop = StopFlag()
    running: list[Live] = []
    signalled: list[float] = []  # when the stop signal came (the live clock)

    def on_signal(signum, frame) -> None:
        for live in running:
            live.halt()  # before anything else: no note-on leaves after this
        signalled.append(time.perf_counter())
        stop.set()

    with stop_on_signals(on_signal), contextlib.ExitStack() as stack:
        sys.setswitchinterval(0.001)  # the scheduler thread gets the GIL back within ~1 ms
        model = StepModel(cfg.model_dir())
        if stop.is_set():
            return 0
        m = cfg.midi
        ports = open_ports(m.backend, m.client_name, m.input_name, m.output_name, m.input,
                           m.output)
        recorder = autosave = watcher = clockport = None
        try:
            clock = RealClock()
            if cfg.session.enabled:
                recorder = SessionRecorder(clock.now(), cfg.listen.tempo_bpm)
                autosave = Autosave(recorder, cfg.session_dir(), cfg.session.save_every_s, log)
            if cfg.time.clock_port is not None and cfg.time.clock == "follow":
                from companion.midi.ports import open_clock_port

                clockport = open_clock_port(ports.backend, cfg.time.clock_port)
            live = Live(cfg, model, ports.inport, ports.outport, clock, cfg.answer.seed,
                        recorder=recorder, log=log, clockport=clockport)
            running.append(live)
            stack.enter_context(settled_heap())
            live.start()
            if autosave is not None:
                autosave.start()
            if m.input is not None or m.output is not None:
                from companion.midi.watch import PortWatcher

                watcher = PortWatcher(live, ports.backend, m.input, m.output, ports.input_label,
                                      ports.output_label, log)
                watcher.start()
            log(
                f"listening on {ports.input_label}, answering on {ports.output_label} channel "
                f"{m.output_channel} on {describe(ports.backend, ports.why)}; model "
                f"{cfg.model_dir()}; "
                f"{cfg.listen.tempo_bpm:g} BPM, answer after {cfg.listen.phrase_end_beats:g} "
                f"beats of silence. Ctrl-C stops."
            )
            while not stop.wait(0.5):
                pass
        finally:
            if watcher is not None:
                watcher.stop()
            for live in running:
                live.stop()
                # the ports now in place (the watcher may have swapped them)
                ports = dataclasses.replace(ports, inport=live.inport, outport=live.outport)
            ports.close()
            if clockport is not None:
                with contextlib.suppress(Exception):
                    clockport.close()
            if autosave is not None:
                autosave.stop()
        for live in running:
            if signalled and live.notes_off_at is not None:
                ms = (live.notes_off_at - signalled[0]) * 1000
                log(f"every note off {ms:.1f} ms after the stop signal")
            if live.dropped or live.dropped_queue_full:
                log(f"{live.dropped + live.dropped_queue_full} flooded input messages dropped "
                    f"in all")
        if recorder is not None:
            try:
                path = recorder.flush(cfg.session_dir())
            except OSError as e:
                log(f"could not save the session in {cfg.session_dir()} ({e.strerror or e})")
                return 1
            if path is not None:
                log(f"session saved: {path}")
        log("stopped")
        return 0
