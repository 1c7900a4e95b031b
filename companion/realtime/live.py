"""The live companion: ports -> listener/engine -> scheduler -> ports, and a clean stop.

Threads: the MIDI input callback (on the input port's thread, companion.midi.input) only
stamps and queues each message; the engine thread takes them off the queue (waking at the
phrase-end deadline when nothing comes), advances the model and generates answers; the
scheduler thread plays them. Sends to the output port from any thread go through the
scheduler's lock.

Timing hooks for measurements (``on_event(kind, t, **data)``, t on the live clock):
"note_in" (``received`` = arrival time, t = model advanced), "phrase_end" (``deadline``,
``decided``, t = answer generated), "note_on"/"note_off" (answer notes, t = sent, ``index``
0 is the first note of an answer), "barge_in", "reset", "stuck" (keys no longer counted as
held: each logged), "control" (``name``, ``value``: a setting changed or an action done, by a
CC, the web page or OSC; see ``apply``), "model" (``name``, ``path``: a model package
swapped in; see ``apply("model", NAME)``), "feedback_loop" (``loop``: the companion's own
notes come back on its input, or no longer; companion.realtime.echo).

Taps (``Live.tap``): the same events, plus "heard" (every note-on/off the performer plays:
``pitch``, ``velocity``, 0 for a release) and "answer" (right after "phrase_end": ``answer``
id, ``notes``, each ``[pitch, start, duration, velocity]``, start on the live clock: the
whole answer as decided, before its notes sound), put in a bounded queue for a reader on a
thread of its own (the web page's server): putting never waits, and a full tap drops the
event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import mido

from companion.config import Config, ConfigError
from companion.encoding.names import note_name
from companion.engine.engine import Engine, EventHook
from companion.engine.harmony import HarmonyModel
from companion.engine.midiclock import CLOCK_TYPES
from companion.engine.model import ModelError, StepModel
from companion.engine.protocols import Clock
from companion.midi.jacklib import SETTLE_S
from companion.midi.session import SessionRecorder
from companion.packages import find_package, list_packages, locate, package_folders
from companion.realtime.clock import RealClock, StopFlag, realtime_thread
from companion.realtime.controls import ACTIONS, ANSWERING, LISTENING, Controls, StateOut
from companion.realtime.echo import EchoGuard
from companion.realtime.learn import Learner
from companion.realtime.link import open_link
from companion.realtime.metronome import ClickThread, Metronome
from companion.realtime.scheduler import Scheduler

#: The engine thread looks at its stop flag at least this often.
IDLE_WAKE_S = 0.25
#: In a call, until its phrase end (which keys held push back by at most the held limit,
#: listen.held_limit_beats), the engine thread warms the model (a throwaway step) this
#: often: a step after 50 ms without one costs 3 ms on a cloud guest whose caches are
#: emptied between notes, one within 5 ms of another 0.2 ms, and the answer's steps are what
#: a performer waits for. Never closer than WARM_GUARD_S to the deadline. About 4% of a core
#: while a call goes on; nothing when idle.
WARM_EVERY_S = 0.005
WARM_GUARD_S = 0.0005

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


#: Controls that ``Live.apply`` takes besides LIVE_SETTINGS and ACTIONS: the ports to listen
#: to and play to, by name (a substring, as --input/--output), or null for our own virtual port.
PORT_CONTROLS = ("input", "output")


def load_harmony(cfg: Config) -> HarmonyModel:
    """The harmony package of ``accompany.model``, found as `companion accompany` finds it."""
    return HarmonyModel(locate(cfg.accompany.model, cfg.base_dir))


class Tap:
    """A bounded queue of events (kind, t, data) between the music's threads and one reader.
    ``put`` never blocks: when the reader falls behind by ``size`` events, the oldest is
    dropped (and counted) to make room. ``drain`` takes everything queued."""

    def __init__(self, size: int = 4096):
        self._events: deque[tuple[str, float, dict]] = deque(maxlen=size)
        self.size = size
        self.dropped = 0

    def put(self, kind: str, t: float, data: dict) -> None:
        if len(self._events) >= self.size:
            self.dropped += 1
        self._events.append((kind, t, data))

    def drain(self) -> list[tuple[str, float, dict]]:
        out = []
        with contextlib.suppress(IndexError):
            while True:
                out.append(self._events.popleft())
        return out


@dataclasses.dataclass(frozen=True)
class Command:
    """A control posted from outside the engine thread (``Live.post``): a setting of
    LIVE_SETTINGS or one of ACTIONS, and its value. ``reply`` is called on the engine thread
    with None once it is applied, or with the one-line reason it was refused."""

    name: str
    value: Any = None
    reply: Callable[[str | None], None] | None = None


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A model package loaded in the background (``apply("model", name)``), for the engine
    thread to hand to the engine."""

    name: str
    model: StepModel


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
        ports: Any = None,
        harmony: Callable[[], HarmonyModel] | None = None,
    ):
        self.cfg = cfg
        self.inport = inport
        self.outport = outport
        self.clockport = clockport  # a dedicated MIDI clock input (config time.clock_port)
        #: The MIDI system and the names of the ports in use (companion.midi.ports.OpenPorts);
        #: None for in-process ports (the demo's loopback), which cannot be switched.
        self.backend: str | None = getattr(ports, "backend", None) or None
        self.input_label: str = getattr(ports, "input_label", "in-process")
        self.output_label: str = getattr(ports, "output_label", "in-process")
        self._taps: list[Tap] = []
        #: Note-ons heard from the performer, answers made; an answer playing now.
        self.notes_heard = self.answers = 0
        self.answering = False
        self.clock = clock or RealClock()
        self.recorder = recorder
        self.log = log or (lambda line: None)
        self.user_event = on_event
        self.channel = cfg.midi.output_channel - 1
        self.passthrough = cfg.midi.passthrough
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.scheduler = Scheduler(self._send, self.clock, self.channel, on_event=self._played)
        self.engine = Engine(model, cfg, self.scheduler, self.clock, seed, on_event=self._event,
                             harmony=harmony or (lambda: load_harmony(cfg)))
        #: The Ableton Link session joined for time.clock link / auto (None otherwise).
        self.link = open_link(cfg.time, cfg.listen.tempo_bpm, self.log)
        self.engine.use_link(self.link)
        self.clicks = self._clicks(cfg)
        #: Where ``apply("model", NAME)`` finds packages: beside the model, then installed.
        self.model_folders = package_folders(model.dir)
        for prog, name in cfg.models.items():
            try:
                find_package(name, self.model_folders)
            except ModelError as e:
                raise ConfigError(f"models.{prog}: {str(e).split(': ', 1)[1]}") from None
        self._model_wanted = self.engine.model_name  # the last model asked for
        self.controls = Controls(cfg.controls, self.apply, self.engine.setting, cfg.models)
        #: MIDI learn (``apply("learn", NAME)``); saves to its config_path when one is set.
        self.learner = Learner(self.controls, self.log)
        self.state_out = StateOut(cfg.controls.state_out, self.channel, self.scheduler.send,
                                  self.scheduler.lock)
        self._key_logged: str | None = None
        self._echoed: set[int] = set()  # passthrough notes sounding on our output
        #: Our own notes coming back on the input (a feedback loop): ignored, a loop said once.
        self.echo = EchoGuard()
        self._loop_said = False
        self._stop = StopFlag()
        self._send_failed = False
        self._thread = threading.Thread(target=self._run, name="companion-engine", daemon=True)
        self._started = self._stopped = False
        self.midi_stopped = threading.Event()  # the MIDI system stopped moving MIDI (JACK quit)
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

    def _listen(self, port: Any) -> None:
        """Take ``port``'s messages, and hear from it if its MIDI system stops."""
        port.callback = self._on_input
        if hasattr(port, "when_silenced"):
            port.when_silenced(self.midi_stopped.set)

    def _on_input(self, msg: mido.Message) -> None:
        if getattr(msg, "type", None) in CLOCK_TYPES:  # followed here, never queued
            if self.engine.clock_from_input:
                self.engine.on_clock(msg, self._arrival(msg, self.inport))
            return
        if self.queue.qsize() >= MAX_QUEUED and not _ends_notes(msg):
            self.dropped_queue_full += 1  # memory stays bounded whatever comes in
            return
        self.queue.put((self._arrival(msg, self.inport), msg))

    def hear(self, msg: mido.Message) -> bool:
        """A message from elsewhere than the input port (the page's Web MIDI input), from any
        thread: into the input queue as the input port's are, stamped now, and so heard,
        recorded and answered the same way. MIDI clock is not taken this way. False where
        it was dropped (a clock message, or a full queue)."""
        if getattr(msg, "type", None) in CLOCK_TYPES:
            return False
        if self.queue.qsize() >= MAX_QUEUED and not _ends_notes(msg):
            self.dropped_queue_full += 1
            return False
        self.queue.put((self.clock.now(), msg))
        return True

    def _on_clock(self, msg: mido.Message) -> None:
        """The dedicated clock port's callback: its clock messages only."""
        if getattr(msg, "type", None) in CLOCK_TYPES:
            self.engine.on_clock(msg, self._arrival(msg, self.clockport))

    def _clicks(self, cfg: Config) -> ClickThread:
        """Count-in and metronome (config time), on the external time's beats (a MIDI clock,
        a Link session) or the internal tempo."""
        tc = cfg.time
        engine = self.engine
        return ClickThread(
            Metronome(tc.count_in_beats, tc.metronome), self.scheduler.send, self.clock,
            lambda: engine.beat_s, engine.next_beat, lambda: self.scheduler.halted,
            tc.click_channel - 1,
            tc.click_note, tc.click_velocity)

    # -- output ----------------------------------------------------------------------------

    def _send(self, msg: mido.Message) -> None:
        """Called under the scheduler's lock. A failing port is reported once, never raised:
        the companion goes on listening (and stops cleanly when told to)."""
        self.echo.sent(msg, self.clock.now())  # before: a loopback hands it back at once
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
        self._listen(port)
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
        """Note-off for every note we echoed, then All Notes Off (CC 123) on our channel and,
        once it has accompanied, on the accompaniment's (accompany.channel, bass_channel)."""
        ac = self.engine.settings_of("accompany")
        channels = dict.fromkeys([self.channel] + ([ac.channel - 1, ac.bass_channel - 1]
                                                   if self.engine.along is not None else []))
        with self.scheduler.lock:
            for p in sorted(self._echoed):
                self._send(mido.Message("note_off", channel=self.channel, note=p, velocity=0))
            self._echoed.clear()
            for ch in channels:
                self._send(mido.Message("control_change", channel=ch, control=123, value=0))

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        realtime_thread()  # the engine's step and answer must not wait for a core either
        now = self.clock.now
        q = self.queue
        warmed = -math.inf  # when the model was last warmed
        while not self._stop.is_set():
            deadline = self.engine.next_deadline()
            wait = IDLE_WAKE_S
            if deadline is not None:  # in a call, its phrase end to come: keep warm
                left = deadline - now()
                if left > WARM_GUARD_S and now() - warmed >= WARM_EVERY_S:
                    self.engine.model.warm()
                    warmed = now()
                    left = deadline - warmed
                wait = min(IDLE_WAKE_S, left, warmed + WARM_EVERY_S - now())
            try:
                t, msg = q.get(timeout=wait) if wait > 0 else q.get_nowait()
            except queue.Empty:
                pass
            else:
                if msg is None:  # stop() waking us
                    continue
                if now() - t > BACKLOG_S and not (isinstance(msg, Command | Loaded)
                                                  or _ends_notes(msg)):
                    self._flood += 1  # a backlog: never acted on (or played) late
                    self._last_drop = now()
                else:
                    self._handle(t, msg)
                if not q.empty():
                    continue  # a message heard before the deadline counts before deciding
            if self._flood and now() - self._last_drop > FLOOD_QUIET_S:
                self._flood_over()
            if self._loop_said and not self.echo.looping(now()):
                self._loop_said = False
                self.log("feedback loop gone: the answers no longer come back on the input")
                self._emit("feedback_loop", now(), {"loop": False})
            try:
                self.engine.poll(now())
            except Exception as e:  # noqa: BLE001 - keep listening whatever happens
                self.log(f"could not answer: {type(e).__name__}: {e}")
            if self.link is not None and self.engine.link_just_stopped(now()):
                self.scheduler.cancel()  # the band stopped: so does the answer
                self._set_turn(LISTENING)
                self.log("the Link session stopped: listening, answering again when it plays")

    def _flood_over(self) -> None:
        n, self._flood = self._flood, 0
        self.dropped += n
        self.log(f"input flood: {n} messages came faster than they could be handled and were "
                 f"dropped (note-offs kept); listening normally again")

    def _handle(self, t: float, msg: mido.Message | Command) -> None:
        if isinstance(msg, Command):
            self._command(msg)
            return
        if isinstance(msg, Loaded):
            self._loaded(msg)
            return
        try:
            if self.echo.heard(msg, t):
                if self.echo.loop and not self._loop_said:
                    self._loop_said = True
                    self.log(f"feedback loop: what the companion plays on {self.output_label} "
                             f"comes back on {self.input_label} "
                             f"{max(0.0, self.echo.delay_s or 0.0) * 1000:.0f} ms later (a "
                             f"DAW's MIDI thru, or a patch from its output to its input?); its "
                             f"own notes are ignored, not answered")
                    self._emit("feedback_loop", t, {"loop": True})
                return
            if self.recorder is not None:
                self.recorder.heard(t, msg)
            kind = msg.type
            if kind == "note_on" or kind == "note_off":
                vel = msg.velocity if kind == "note_on" else 0
                if vel:
                    self.notes_heard += 1
                for tap in self._taps:
                    tap.put("heard", t, {"pitch": msg.note, "velocity": vel})
            if self.learner.heard(msg) or self.controls.handle(msg):
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
        (mute on/off, panic, reset_style), or switch the model package ("model", the name of
        one of ``models()``: loaded in the background, swapped in between answers); on the
        engine thread only. What changed goes out as
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
        elif name == "learn":
            kept = self.learner.arm(value)
        elif name == "model":
            kept = self._switch_model(value)
        elif name in ACTIONS:  # pragma: no cover - ACTIONS and the branches above agree
            raise ConfigError(f"{name}: no such action")
        elif name in PORT_CONTROLS:
            kept = self._switch_port(name, value)
        else:
            kept = self.engine.set(name, value)
        self._emit("control", self.clock.now(), {"name": name, "value": kept})
        return kept

    def _switch_model(self, name: Any) -> str:
        """Load the model package called ``name`` (one of those in ``model_folders``, never a
        path) in a background thread; the engine swaps it in between answers
        (``Engine.use_model``). The last one asked for wins; asking for the one in use
        cancels a pending load. ConfigError, and nothing changes, for an unknown name."""
        try:
            path = find_package(name, self.model_folders)
        except ModelError as e:
            raise ConfigError(str(e)) from None
        self._model_wanted = name
        if name == self.engine.model_name and not self.engine.swap_pending:
            return name

        def load() -> None:
            try:
                model = StepModel(path)
            except ModelError as e:
                self.log(f"model {name}: not loaded ({e}); still answering with "
                         f"{self.engine.model_name}")
                return
            self.queue.put((self.clock.now(), Loaded(name, model)))

        self.log(f"model {name}: loading {path}")
        threading.Thread(target=load, name="companion-model-load", daemon=True).start()
        return name

    def models(self) -> list[dict[str, Any]]:
        """The model packages ``apply("model", NAME)`` takes (name, path, idiom, corpora,
        size_bytes), each with ``in_use``. Any thread (it reads the folders)."""
        in_use = self.engine.model_name
        return [info.as_dict() | {"in_use": info.name == in_use}
                for info in list_packages(self.model_folders)]

    def _loaded(self, msg: Loaded) -> None:
        """A model loaded: to the engine, unless another has been asked for since."""
        if msg.name != self._model_wanted:
            return
        if not self.engine.use_model(msg.model, msg.name):
            self.log(f"model {msg.name}: loaded, in use when the answer playing ends")

    def _switch_port(self, kind: str, query: Any) -> str:
        """Listen to / play to the port whose name matches ``query`` (as --input/--output),
        or our own virtual port for null; the old port is closed. Returns the port's name.
        ConfigError, and nothing changes, if no single port matches or it cannot be opened."""
        if self.backend is None:
            raise ConfigError(f"{kind}: the ports of this companion cannot be switched "
                              f"(in-process ports)")
        if query is not None and (not isinstance(query, str) or not query.strip()):
            raise ConfigError(f"{kind}: expected a port name or null, got {query!r}")
        from companion.midi.ports import open_port

        m = self.cfg.midi
        try:
            port, label = open_port(self.backend, kind, query, m.client_name,
                                     m.input_name if kind == "input" else m.output_name)
        except Exception as e:  # noqa: BLE001 - PortError, or the MIDI system's own
            raise ConfigError(f"{kind}: {e}") from e
        old = self.swap_input(port) if kind == "input" else self.swap_output(port)
        if self.backend == "jack":
            time.sleep(SETTLE_S)  # once the graph has taken the new port (see close_in_turn)
        with contextlib.suppress(Exception):
            old.close()
        if kind == "input":
            self.input_label = label
        else:
            self.output_label = label
        self.log(f"{kind} port now {label}")
        return label

    # -- what goes on, for a reader on another thread (the web page) ----------------------

    def tap(self, size: int = 4096) -> Tap:
        """A new tap: every event from now on, in a bounded queue (see Tap)."""
        t = Tap(size)
        self._taps = [*self._taps, t]  # a new list: the music's threads iterate the old one
        return t

    def untap(self, tap: Tap) -> None:
        self._taps = [t for t in self._taps if t is not tap]

    def _emit(self, kind: str, t: float, data: dict) -> None:
        """An event to the taps, then to ``on_event``."""
        for tap in self._taps:
            tap.put(kind, t, data)
        if self.user_event is not None:
            self.user_event(kind, t, **data)

    def status(self) -> dict[str, Any]:
        """What a performer looks at, now: listening / answering / muted, the key, the tempo
        and what it follows, the ports, the keys counted as held (note names), the counts.
        Safe to call from any thread (it only reads)."""
        engine = self.engine
        now = self.clock.now()
        a = engine.answer
        source, followed = engine.timekeeper.source(now)
        if followed is not None:
            anchor = followed.next_beat(now)
        else:
            anchor = a.start if a is not None else None
        key = engine.key
        return {
            "state": "muted" if engine.muted else "answering" if self.answering
            else "listening",
            "waiting": engine.waiting(now),
            "key": engine.key_name(), "tonic": key[0] if key else None,
            "mode": key[1] if key else None,
            "tempo_bpm": round(60.0 / engine.beat_s, 2), "tempo_source": source,
            "beat_s": engine.beat_s, "beat_anchor": anchor,
            "input": self.input_label, "output": self.output_label,
            "switchable": self.backend is not None,
            "held": [note_name(n) for _, n in engine.listener.held_keys()],
            "notes_heard": self.notes_heard, "answers": self.answers,
            "dropped": self.dropped + self._flood + self.dropped_queue_full,
            "feedback_loop": self.echo.looping(now),
            "accompany": engine.setting("accompany.mode"), "chord": engine.chord_name(),
            "now": now,
        }

    def _played(self, kind: str, t: float, **data) -> None:
        """Scheduler events: the last note-off of the current answer ends its turn."""
        if kind == "note_off":
            a = self.engine.answer
            if a is not None and data["answer"] == a.id and data["index"] == len(a.notes) - 1:
                self._set_turn(LISTENING)
        self._emit(kind, t, data)

    def _set_turn(self, value: int) -> None:
        """Answering (ANSWERING) or listening (LISTENING): kept for ``status``, sent as the
        state CC."""
        self.answering = value == ANSWERING
        self.state_out.set(value)

    def _on_mute(self, muted: bool) -> None:
        """Muted: the answer playing now stops too."""
        if muted:
            self.scheduler.cancel()
            self._set_turn(LISTENING)

    def panic(self) -> None:
        """Every answer and the accompaniment dropped, every note off (ours and echoed), back
        to listening."""
        self.engine.stop_accompaniment()
        self.scheduler.cancel()
        self.all_notes_off()
        self._set_turn(LISTENING)

    def _event(self, kind: str, t: float, **data) -> None:
        if kind == "phrase_end":
            self.answers += 1
            self._set_turn(ANSWERING)
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
            self._set_turn(LISTENING)
            self.log(f"performer plays on at the bar line: the call goes on (its answer "
                     f"stopped after {data['played']} notes)" if data.get("resumed") else
                     f"performer plays: answer stopped after {data['played']} notes")
        elif kind == "model":
            self.log(f"model {data['name']} in use from the next answer ({data['path']})")
        elif kind == "held":
            self.log(f"call of {data['call']} notes not answered: the Link session is stopped")
        elif kind == "stuck":
            beats = f"{data['beats']:g} beats"
            for ch, note in data["keys"]:
                self.log(f"key {note_name(note)} (channel {ch + 1}) held {beats} without its "
                         f"note-off: no longer counted as held")
            if data["pedal"]:
                names = ", ".join(note_name(n) for _, n in data["pedal"])
                self.log(f"sustain pedal down {beats}: the keys it held ({names}) no longer "
                         f"count as held, nor any until it is let go")
        self._emit(kind, t, data)
        if kind == "phrase_end" and self._taps:  # the answer ahead of its notes, for the page
            a = self.engine.answer
            notes = [[n.pitch, n.start, n.duration, n.velocity] for n in a.notes]
            for tap in self._taps:
                tap.put("answer", t, {"answer": a.id, "notes": notes})

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """All Notes Off (a previous run may have been killed mid-note), then listen."""
        self._started = True
        self.all_notes_off()
        self._set_turn(LISTENING)
        self.scheduler.start()
        self._thread.start()
        self._listen(self.inport)
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
        self.learner.close()
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
        if self.link is not None:
            self.link.close()
