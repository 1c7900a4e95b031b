"""The control surface on a running companion: the web server in a process of its own
(companion/ui/web.py), and a bridge thread here between it and ``Live``.

The music comes first. The bridge only reads the companion's events from a bounded tap
(``Live.tap``: a full tap drops events, never MIDI), once a frame (FRAME_HZ) writes them as
one line to the web process (never waiting: while the web process is behind, frames are
dropped and counted), hands the page's controls to ``Live.post``, the path the MIDI
controls take (applied on the engine thread, checked as in config.yaml, answered with a
reply), and the MIDI of a keyboard played into the page (Web MIDI) to ``Live.hear``, the
input port's path, each message checked again here. HTTP, WebSockets, JSON for each page
and the socket sends are the web process's work: none of it holds this process's GIL, so
a slow, frozen or vanished browser never delays a note. A web process that dies takes the
page with it, never the music.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import mido

from companion.config import Config, ConfigError, check_of
from companion.encoding.key import SCALES
from companion.live_controls import CONTROLS, LIVE_SETTINGS, stops
from companion.realtime.controls import ACTIONS
from companion.realtime.live import PORT_CONTROLS, Live
from companion.ui.guard import Guard, check_midi, is_loopback

#: Frames a second sent to the page (the roll is drawn at the browser's own rate).
FRAME_HZ = 60
#: The status (key, tempo, state, counts) goes out this often, events as they come.
STATUS_EVERY_S = 0.25
#: The port list is looked up at most this often.
PORTS_EVERY_S = 2.0
#: How long the web process may take to start listening.
START_TIMEOUT_S = 30.0


class UiError(ConfigError):
    """The control surface cannot start (exit 2, one line)."""


def describe_settings(cfg: Config, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of LIVE_SETTINGS with its value, its range or choices (config.yaml's checks), the
    CC mapped to it and the registry's label, description, step, unit and scale with the
    slider's stops (``live_controls.stops``) and the word for null, then the actions, for the
    page to draw its controls."""
    out = []
    for c in CONTROLS:
        if c.kind not in ("setting", "switch", "trigger"):
            continue
        d: dict[str, Any] = {"name": c.key, "label": c.label, "description": c.description,
                             "cc": getattr(cfg.controls, c.name) if c.cc else None}
        if c.kind == "setting":
            check = check_of(c.key)
            d |= {"value": values[c.key], **check, "step": c.step, "unit": c.unit,
                  "scale": c.scale, "none": c.none}
            if check["kind"] == "range":
                d["stops"] = stops(c, check)
        else:
            d["kind"] = "switch" if c.kind == "switch" else "action"
        out.append(d)
    return out


def _lan_address() -> str:
    """This machine's address on its network, for the URL a tablet opens (no packet sent)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        return s.getsockname()[0]
    return socket.gethostname()


def _plain(data: dict) -> dict:
    """An event's data as JSON takes it (numbers, text, true/false, null; an answer's notes,
    lists of numbers, as they are)."""
    return {k: v if v is None or isinstance(v, bool | int | float | str | list) else str(v)
            for k, v in data.items()}


def midi_message(data: Any) -> mido.Message | str:
    """One MIDI message from the page, checked (``guard.check_midi``) -> the message, or why
    not (one line)."""
    checked = check_midi(data)
    return checked if isinstance(checked, str) else mido.Message.from_bytes(checked)


def qr_text(text: str) -> str:
    """``text`` as a QR code (segno, error correction M) in block characters, two rows of
    modules a line, the light modules drawn (``█`` both, ``▀`` the upper, ``▄`` the lower)
    with a quiet zone of 2 modules."""
    import segno

    rows = [list(r) for r in segno.make(text, error="m").matrix_iter(border=2)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    chars = {(0, 0): "█", (0, 1): "▀", (1, 0): "▄", (1, 1): " "}  # (upper, lower) dark
    return "\n".join("".join(chars[(bool(a), bool(b))] for a, b in zip(up, low, strict=True))
                     for up, low in zip(rows[::2], rows[1::2], strict=True))


class UiServer:
    """Serves the page for one running ``Live`` until ``stop``. ``recorder``: the session's
    SessionRecorder (for the MIDI download), or None. The models the page may switch to are
    ``Live.models()``, by name (never a path from the browser)."""

    def __init__(self, live: Live, host: str, port: int, token: str | None = None,
                 recorder: Any = None, log: Any = None):
        try:
            import aiohttp  # noqa: F401 - the web process's; said here, before it starts
            import segno  # noqa: F401 - the QR codes of the URL
        except ModuleNotFoundError:
            from companion.extras import install_hint

            raise UiError(f"--ui needs the web server of the `ui` extra (aiohttp, segno): "
                          f"{install_hint('ui')}") from None
        self.live = live
        self.guard = Guard(host, port, token)
        self.recorder = recorder
        self.log = log or (lambda line: None)
        self.tap = live.tap()
        self.url = ""
        #: Pages open and frames they lost (as the web process last said); frames this side
        #: dropped while the web process was behind.
        self.pages = 0
        self.web_frames_dropped = 0
        self.frames_dropped = 0
        #: MIDI messages from the pages' Web MIDI inputs: handed to ``Live.hear``, refused.
        self.midi_heard = 0
        self.midi_refused = 0
        self._replies: deque[tuple[int, str | None]] = deque()  # from the engine thread
        self._ports: tuple[float, dict[str, Any]] = (-1e9, {})
        self._out = b""  # bytes for the web process not yet written
        self._in = b""  # bytes from it not yet read as a line
        self._session_dir: Path | None = None
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._bridge, name="companion-ui", daemon=True)

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> str:
        """Start the web process and the bridge; the page's URL (with the token when one is
        needed). UiError if it cannot listen."""
        g = self.guard
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "companion.ui.web"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env)
        self._write_now({"op": "config", "host": g.host, "port": g.port, "token": g.token})
        first = self._read_first_line()
        msg = json.loads(first) if first else {"op": "error", "message": "ui: the web "
                                                                         "server did not start"}
        if msg["op"] != "ready":
            self.stop()
            raise UiError(msg["message"])
        g.set_port(msg["port"])
        shown = "127.0.0.1" if is_loopback(g.host) else (
            _lan_address() if g.host in ("0.0.0.0", "::", "") else g.host)
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{g.port}/" + (f"?token={g.token}" if g.token else "")
        self._write_now({"op": "url", "url": self.url})  # for the page's QR code
        os.set_blocking(self._proc.stdin.fileno(), False)
        self._thread.start()
        return self.url

    def qr(self) -> str | None:
        """The URL as a QR code for a terminal (text, two rows of modules a line: light
        modules drawn, so it reads on a dark background; phone cameras read either), for a
        tablet to open; None where only this computer can open it (a loopback address)."""
        if not self.url or is_loopback(self.guard.host):
            return None
        return qr_text(self.url)

    @property
    def web_pid(self) -> int | None:
        """The web process's id (None before ``start``)."""
        return None if self._proc is None else self._proc.pid

    def _read_first_line(self) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"\n" not in buf and time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
        line, _, self._in = buf.partition(b"\n")
        return line

    def _write_now(self, obj: dict) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self._proc.stdin.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()  # the web process ends when its stdin closes
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(Exception):
                proc.stdout.close()
        self.live.untap(self.tap)
        if self._session_dir is not None:
            shutil.rmtree(self._session_dir, ignore_errors=True)

    # -- the bridge thread -----------------------------------------------------------------

    def _bridge(self) -> None:
        assert self._proc is not None
        fd_in = self._proc.stdout.fileno()
        period = 1.0 / FRAME_HZ
        next_frame = time.monotonic()
        last_status = -1e9
        while not self._stop.is_set():
            wait = max(0.0, next_frame - time.monotonic())
            r, _, _ = select.select([fd_in], [], [], wait)
            if r:
                chunk = os.read(fd_in, 65536)
                if not chunk:
                    self.log("control surface: the web server stopped; the music goes on")
                    return
                self._in += chunk
                while b"\n" in self._in:
                    line, _, self._in = self._in.partition(b"\n")
                    self._request(json.loads(line))
            while self._replies:
                ident, error = self._replies.popleft()
                self._queue({"op": "reply", "id": ident, "error": error}, always=True)
            now = time.monotonic()
            if now < next_frame:
                continue
            next_frame = max(next_frame + period, now)
            events = [[kind, t, _plain(data)] for kind, t, data in self.tap.drain()]
            frame: dict[str, Any] = {"type": "frame", "now": self.live.clock.now(),
                                     "events": events}
            if now - last_status >= STATUS_EVERY_S:
                last_status = now
                frame["status"] = self.status()
                frame["settings"] = self.live.engine.settings()
                frame["muted"] = self.live.engine.muted
            elif not events:
                self._flush()
                continue
            self._queue(frame)

    def _queue(self, obj: dict, always: bool = False) -> None:
        """To the web process without waiting: a frame while earlier bytes still wait is
        dropped (replies never are)."""
        if self._out and not always:
            self.frames_dropped += 1
            self._flush()
            return
        self._out += json.dumps(obj).encode() + b"\n"
        self._flush()

    def _flush(self) -> None:
        if not self._out or self._proc is None:
            return
        try:
            n = os.write(self._proc.stdin.fileno(), self._out)
        except BlockingIOError:
            return
        except OSError:  # the web process is gone
            self._out = b""
            return
        self._out = self._out[n:]

    def _request(self, msg: dict) -> None:
        op, ident = msg.get("op"), msg.get("id")
        if op == "stats":
            self.pages, self.web_frames_dropped = msg["pages"], msg["frames_dropped"]
        elif op == "state":
            self._queue({"op": "reply", "id": ident, "error": None, "data": self.state()},
                        always=True)
        elif op == "session":
            self._queue({"op": "reply", "id": ident, "error": None, "data": self._session()},
                        always=True)
        elif op == "midi":  # checked by the web process, and again here: never trusted
            msg = midi_message(msg.get("data"))
            if isinstance(msg, str) or not self.live.hear(msg):
                self.midi_refused += 1
            else:
                self.midi_heard += 1
        elif op == "control":
            error = self._check(msg.get("name"), msg.get("value"))
            if error is not None:
                self._queue({"op": "reply", "id": ident, "error": error}, always=True)
                return

            def reply(err: str | None) -> None:  # on the engine thread
                self._replies.append((ident, err))

            if not self.live.post(msg["name"], msg.get("value"), reply):
                self._queue({"op": "reply", "id": ident, "error": f"{msg['name']}: the "
                             f"engine's queue is full; not applied"}, always=True)

    def names(self) -> tuple[str, ...]:
        """The controls the page may send: those ``Live.apply`` takes."""
        return (*LIVE_SETTINGS, *ACTIONS, *PORT_CONTROLS, "model")

    def model_names(self) -> list[str]:
        """The model packages the page may switch to."""
        return [m["name"] for m in self.live.models()]

    def _check(self, name: Any, value: Any) -> str | None:
        """What the engine thread would refuse before it gets there: an unknown control, a
        model that is not one of those listed."""
        if name not in self.names():
            return f"{name}: no such control (controls: {', '.join(self.names())})"
        if name == "model" and value not in self.model_names():
            return (f"model: expected one of the models ({', '.join(self.model_names())}), "
                    f"got {value!r}")
        return None

    # -- what the page shows -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``Live.status``, the scale of its key (pitch classes) and the frames dropped."""
        status = self.live.status()
        tonic, mode = status["tonic"], status["mode"]
        status["scale"] = None if tonic is None else sorted((tonic + d) % 12 for d in SCALES[mode])
        status["frames_dropped"] = (self.frames_dropped + self.web_frames_dropped
                                    + self.tap.dropped)
        return status

    def state(self) -> dict[str, Any]:
        """Everything the page shows that is not an event: status, settings and their
        controls, ports, models."""
        live = self.live
        values = live.engine.settings()
        status = self.status()
        status |= {"input_connected": True, "output_connected": True}
        ports = self._port_list()
        if live.backend is not None and ports["inputs"] + ports["outputs"]:
            names = ports["inputs"] + ports["outputs"]
            status |= {"input_connected": live.input_label in names,
                       "output_connected": live.output_label in names}
        return {"status": status, "settings": values,
                "controls": describe_settings(live.cfg, values), "ports": ports,
                "models": self.model_names(), "model": live.engine.model_name,
                "muted": live.engine.muted}

    def _port_list(self) -> dict[str, Any]:
        at, ports = self._ports
        if time.monotonic() - at < PORTS_EVERY_S:
            return ports
        ports = {"inputs": [], "outputs": []}
        if self.live.backend is not None:
            from companion.midi.ports import get_backend, list_ports

            with contextlib.suppress(Exception):
                ins, outs = list_ports(get_backend(self.live.backend))
                ports = {"inputs": ins, "outputs": outs}
        self._ports = (time.monotonic(), ports)
        return ports

    def _session(self) -> dict[str, str] | None:
        """The session so far, written to a file of its own for the web process to send."""
        rec = self.recorder
        if rec is None or not rec.has_notes():
            return None
        if self._session_dir is None:
            self._session_dir = Path(tempfile.mkdtemp(prefix="companion-session-"))
        for old in self._session_dir.iterdir():  # sent by now: one download at a time
            old.unlink()
        path = rec.save(self._session_dir)
        return None if path is None else {"path": str(path), "name": path.name}
