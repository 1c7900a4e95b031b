"""OSC (config ``osc:``): the controls in over UDP, and optionally the state of the jam out.

In: ``/companion/NAME [VALUE]`` for every control ``Live.apply`` takes, NAME a short name of
``SHORT_NAMES`` (``/companion/temperature 0.8``) or the full one (``/companion/answer.top_p
0.9``). A setting takes one value; mute 1/0 (or true/false); panic and reset_style fire with
no value or a non-zero one (a button's release, 0, does nothing); model the name of a
package. Each goes through ``Live.post``, so it is checked and applied on the engine thread
like a CC. A message that is not OSC, names no control, has the wrong number of values or a
value out of range changes nothing and is logged: the first at once, saying what was wrong,
then at most one line per ``BAD_LOG_EVERY_S`` with the count of the others. A datagram with any
part that cannot be read in full (OSC 1.0: an unknown type tag, arguments cut short, bytes
after them, a bundle element that does not fit) is discarded whole, a bundle with all its
messages; python-osc's parser, which logs and reads on past such faults, is not used.

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
from pythonosc.parsing import osc_types

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

    def flush(self) -> None:
        """Say how many were held back, once ``every_s`` has passed since the last line."""
        with self._lock:
            t = self.now()
            if not self._held or t - self._last < self.every_s:
                return
            held, self._held, self._last = self._held, 0, t
        self.log(f"OSC: {held} more bad OSC messages ignored")


class BadDatagram(ValueError):
    """A datagram that is not OSC 1.0 read in full; the message says what was wrong."""


_BUNDLE = b"#bundle\0"


def _string(data: bytes, i: int) -> tuple[str, int]:
    """The OSC string at ``i`` (UTF-8, a null, nulls to a multiple of 4) and the index after."""
    null = data.find(b"\0", i)
    if null < 0:
        raise BadDatagram("a string without its null")
    end = (null + 4) & ~3
    if end > len(data):
        raise BadDatagram("a string cut short")
    if any(data[null:end]):
        raise BadDatagram("a string padded with non-zero bytes")
    try:
        return data[i:null].decode("utf-8"), end
    except UnicodeDecodeError:
        raise BadDatagram("a string that is not UTF-8") from None


def _blob(data: bytes, i: int) -> tuple[bytes, int]:
    """The OSC blob at ``i`` (an int32 size, the bytes, nulls to a multiple of 4)."""
    size, i = osc_types.get_int(data, i)
    if size < 0:
        raise BadDatagram(f"a blob of size {size}")
    return data[i:i + size], i + size + (-size % 4)


#: What each argument type tag reads (python-osc's types); a message with any other tag is
#: discarded whole (OSC 1.0).
_READ: dict[str, Callable[[bytes, int], tuple[Any, int]]] = {
    "i": osc_types.get_int, "h": osc_types.get_int64, "f": osc_types.get_float,
    "d": osc_types.get_double, "s": _string, "b": _blob, "r": osc_types.get_rgba,
    "m": osc_types.get_midi, "t": osc_types.get_timetag}
_CONSTANT = {"T": True, "F": False, "N": None}


def _message(data: bytes) -> tuple[str, list[Any]]:
    """The address and arguments of one OSC message that fills ``data`` exactly (no type tag
    string at all: no arguments); ``BadDatagram`` if any of it cannot be read."""
    address, i = _string(data, 0)
    if i == len(data):
        return address, []
    try:
        tags, i = _string(data, i)
        if not tags.startswith(","):
            raise BadDatagram(f"a type tag string {tags!r} without its leading comma")
        args: list[Any] = []
        open_arrays = [args]
        for tag in tags[1:]:
            if tag in _CONSTANT:
                open_arrays[-1].append(_CONSTANT[tag])
            elif tag == "[":
                open_arrays[-1].append([])
                open_arrays.append(open_arrays[-1][-1])
            elif tag == "]":
                if len(open_arrays) == 1:
                    raise BadDatagram(f"a ] without [ in the type tags {tags!r}")
                open_arrays.pop()
            elif tag in _READ:
                try:
                    value, i = _READ[tag](data, i)
                    cut = i > len(data)  # python-osc pads a float cut short
                except osc_types.ParseError:
                    cut = True
                if cut:
                    raise BadDatagram(f"arguments cut short of the type tags {tags!r}")
                open_arrays[-1].append(value)
            else:
                raise BadDatagram(f"unknown type tag {tag!r} in {tags!r}")
        if len(open_arrays) > 1:
            raise BadDatagram(f"a [ without ] in the type tags {tags!r}")
        if i != len(data):
            raise BadDatagram(f"{len(data) - i} bytes after the arguments")
    except BadDatagram as e:
        raise BadDatagram(f"{address}: {e}") from None
    return address, args


def parse(data: bytes) -> list[tuple[str, list[Any]]]:
    """The (address, arguments) of each OSC message in one datagram, a bundle's (and nested
    bundles') in the order of their time tags, those due already in the order they come;
    ``BadDatagram`` saying what was wrong if any part of it cannot be read in full (OSC 1.0:
    such a message is discarded, and with it the datagram)."""
    now = time.time()
    timed: list[tuple[float, str, list[Any]]] = []
    todo = [(data, now)]  # a stack of (an element, the time tag of the bundle holding it)
    while todo:
        element, due = todo.pop()
        if element.startswith(b"/"):
            timed.append((due, *_message(element)))
            continue
        if not element.startswith(_BUNDLE):
            raise BadDatagram("neither a message nor a bundle")
        try:
            due, i = osc_types.get_date(element, len(_BUNDLE))
        except osc_types.ParseError:
            raise BadDatagram("a bundle cut short in its time tag") from None
        due = max(due, now)  # those due already are taken now, in order
        inner = []
        while i < len(element):
            if i + 4 > len(element):
                raise BadDatagram("a bundle cut short in an element's size")
            size, i = osc_types.get_int(element, i)
            if size <= 0 or size % 4:
                raise BadDatagram(f"a bundle's element size {size}")
            if i + size > len(element):
                raise BadDatagram(f"a bundle's element of {size} bytes, longer than the "
                                  f"bundle")
            inner.append((element[i:i + size], due))
            i += size
        todo.extend(reversed(inner))
    timed.sort(key=lambda m: m[0])  # stable
    return [(address, args) for _, address, args in timed]


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
            self.bad.flush()
            try:
                data, _ = self.sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            self.handle(data)

    def handle(self, data: bytes) -> None:
        """One datagram: each OSC message in it (a bundle's time tags are not waited for), or
        none if any part of it cannot be read."""
        try:
            messages = parse(data)
        except BadDatagram as e:
            self.received += 1
            self.bad.say(f"OSC: ignored a datagram of {len(data)} bytes that is not OSC ({e})")
            return
        for address, args in messages:
            self.received += 1
            what = command(address, args)
            if what is None:
                continue
            if isinstance(what, str):
                self.bad.say(f"OSC: ignored {what}")
                continue
            name, value = what
            if not self.live.post(name, value, self._replied(address)):
                self.bad.say(f"OSC: ignored {address}: the companion's input is full")

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
