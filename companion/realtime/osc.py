"""OSC (config ``osc:``): the controls in over UDP, and optionally the state of the jam out.

In: ``/companion/NAME [VALUE]`` for every control ``Live.apply`` takes, NAME a short name of
``SHORT_NAMES`` (``/companion/temperature 0.8``) or the full one (``/companion/answer.top_p
0.9``). A setting takes one value; mute 1/0 (or true/false); panic and reset_style fire with
no value or a non-zero one (a button's release, 0, does nothing); model the name of a
package. Each goes through ``Live.post``, so it is checked and applied on the engine thread
like a CC. A message that is not OSC, names no control, has the wrong number of values or a
value out of range changes nothing and is logged, once per ``BAD_LOG_EVERY_S`` with a count
of the others.

Out (``osc.send_to``): ``/companion/phrase_end CALL_NOTES ANSWER_NOTES BEATS``,
``/companion/answer_start ANSWER``, ``/companion/note_on PITCH``, ``/companion/note_off
PITCH``, ``/companion/key NAME`` and ``/companion/tempo BPM`` when they change,
``/companion/control NAME VALUE``. Taken from a ``Live.tap`` (putting never blocks the engine)
by a sender thread of its own.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from companion.config import ConfigError, OscConfig, parse_host_port
from companion.live_controls import SHORT_NAMES, TRIGGERS

PREFIX = "/companion/"
#: Bad messages are said at most this often (the first at once, then a count).
BAD_LOG_EVERY_S = 5.0
#: The sender looks at its tap this often.
SEND_EVERY_S = 0.01
#: The largest datagram read.
MAX_DATAGRAM = 65_536


class RateLimitedLog:
    """One line now, then at most one per ``every_s``, saying how many were held back.
    Thread-safe (the server thread and the engine thread's replies both say)."""

    def __init__(self, log: Callable[[str], None], every_s: float = BAD_LOG_EVERY_S,
                 now: Callable[[], float] = time.monotonic):
        self.log = log
        self.every_s = every_s
        self.now = now
        self._last = -float("inf")
        self._held = 0
        self.count = 0  # every line asked for
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            self.count += 1
            t = self.now()
            if t - self._last < self.every_s:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, t
        self.log(line + (f" ({held} more bad OSC messages before this one)" if held else ""))


def command(address: str, args: list[Any]) -> tuple[str, Any] | str | None:
    """The control an OSC message asks for: (name for ``apply``, value), None for a trigger's
    release (nothing to do), or the one-line reason it is refused."""
    if not address.startswith(PREFIX):
        return f"{address}: not an address of the companion ({PREFIX}NAME)"
    short = address[len(PREFIX):]
    name = SHORT_NAMES.get(short, short)  # anything else: ``apply`` says what it takes
    if name in TRIGGERS:
        if len(args) > 1:
            return f"{address}: expected no value or one, got {len(args)}"
        if args and not args[0]:
            return None  # a button let go
        return name, None
    if len(args) != 1:
        return f"{address}: expected one value, got {len(args)}"
    value = args[0]
    if name == "mute" and isinstance(value, float) and value in (0.0, 1.0):
        value = bool(value)  # a control surface's button sends 1.0 / 0.0
    return name, value


class OscServer:
    """Listens on ``cfg.host:cfg.port`` (UDP) on a thread of its own, posting each control to
    ``live`` (``Live.post``); with ``cfg.send_to``, sends the state out from another."""

    def __init__(self, live: Any, cfg: OscConfig, log: Callable[[str], None]):
        self.live = live
        self.log = log
        self.bad = RateLimitedLog(log)
        self.received = 0  # OSC messages taken (good or bad)
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET,
                                 socket.SOCK_DGRAM)
            sock.bind((cfg.host, cfg.port))
        except OSError as e:
            raise ConfigError(f"osc.port: cannot listen on {cfg.host}:{cfg.port} "
                              f"({e.strerror or e})") from None
        with contextlib.suppress(OSError):  # room for a burst while the GIL is busy
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.settimeout(0.25)  # the stop flag is looked at this often
        self.sock = sock
        self.address = sock.getsockname()[:2]
        self.out: socket.socket | None = None
        self.send_to: tuple[str, int] | None = None
        if cfg.send_to is not None:
            self.send_to = parse_host_port(cfg.send_to)
            self.out = socket.socket(socket.AF_INET6 if ":" in self.send_to[0]
                                     else socket.AF_INET, socket.SOCK_DGRAM)
            self.out.setblocking(False)  # a full buffer drops a datagram, never waits
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, name="companion-osc-in",
                                          daemon=True)]
        if self.out is not None:
            self._threads.append(threading.Thread(target=self._send_state,
                                                  name="companion-osc-out", daemon=True))
        self._tap = live.tap() if self.out is not None else None

    def start(self) -> None:
        for t in self._threads:
            t.start()
        self.log(f"OSC: listening on {self.address[0]}:{self.address[1]}"
                 + (f", state to {self.send_to[0]}:{self.send_to[1]}" if self.send_to else ""))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2.0)
        if self._tap is not None:
            self.live.untap(self._tap)
        self.sock.close()
        if self.out is not None:
            self.out.close()

    # -- in ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            self.handle(data)

    def handle(self, data: bytes) -> None:
        """One datagram: each OSC message in it (a bundle's time tags are not waited for)."""
        try:
            messages = [m.message for m in OscPacket(data).messages]
            for m in messages:
                m.params  # noqa: B018 - parsed here, so that a bad datagram fails here
        except Exception:  # noqa: BLE001 - python-osc's ParseError, or any of its parser's
            self.received += 1
            self.bad.say(f"OSC: ignored a datagram of {len(data)} bytes that is not OSC")
            return
        for msg in messages:
            self.received += 1
            what = command(msg.address, list(msg.params))
            if what is None:
                continue
            if isinstance(what, str):
                self.bad.say(f"OSC: ignored {what}")
                continue
            name, value = what
            if not self.live.post(name, value, self._replied(msg.address)):
                self.bad.say(f"OSC: ignored {msg.address}: the companion's input is full")

    def _replied(self, address: str) -> Callable[[str | None], None]:
        def reply(error: str | None) -> None:
            if error is not None:
                self.bad.say(f"OSC: ignored {address}: {error}")

        return reply

    # -- out --------------------------------------------------------------------------------

    def _send(self, address: str, *args: Any) -> None:
        b = OscMessageBuilder(address=PREFIX + address)
        for a in args:
            b.add_arg(a)
        try:
            self.out.sendto(b.build().dgram, self.send_to)  # type: ignore[union-attr]
        except OSError:
            pass  # nobody listening, or the buffer full: the state is not worth a wait

    def _send_state(self) -> None:
        key = tempo = None
        engine = self.live.engine
        while not self._stop.wait(SEND_EVERY_S):
            for kind, _, d in self._tap.drain():  # type: ignore[union-attr]
                if kind == "phrase_end":
                    self._send("phrase_end", d["call"], d["notes"], float(d["beats"]))
                    now_key, now_tempo = engine.key_name(), round(60.0 / engine.beat_s, 2)
                    if now_key is not None and now_key != key:
                        key = now_key
                        self._send("key", key)
                    if now_tempo != tempo:
                        tempo = now_tempo
                        self._send("tempo", float(tempo))
                elif kind == "note_on":
                    if d["index"] == 0:
                        self._send("answer_start", d["answer"])
                    self._send("note_on", d["pitch"])
                elif kind == "note_off":
                    self._send("note_off", d["pitch"])
                elif kind == "control":
                    v = d["value"]
                    self._send("control", d["name"],
                               *(() if v is None else (v if isinstance(v, bool | int | float)
                                                       else str(v),)))
