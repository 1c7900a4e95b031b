"""The control surface's web server, in a process of its own (``python -m companion.ui.web``,
started by companion.ui.server.UiServer): aiohttp, the page's files, the WebSockets. None of
its work (HTTP, WebSocket frames, JSON, socket sends) holds the companion's GIL or shares its
threads.

It talks to the companion over its stdin and stdout, one JSON object a line. In: first
``{"op": "config", "host", "port", "token"}``, then ``{"op": "url", "url"}`` (the page's
URL, for its QR code), frames for the pages (``{"type": "frame", ...}``, passed on as they
are) and replies to its requests (``{"op": "reply", "id", "error", "data"}``). Out:
``{"op": "ready", "port"}`` or ``{"op": "error", "message"}``, then requests (``{"op":
"control" | "state" | "session", "id", ...}``), MIDI from the pages' Web MIDI inputs
(``{"op": "midi", "data": [BYTES]}``, checked, no reply) and ``{"op": "stats", "pages",
"frames_dropped"}`` when they change. Its stdin closing ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from companion.ui.guard import Guard, RateLimit, check_midi

#: Frames waiting for one page beyond this are dropped for that page.
CLIENT_QUEUE = 8
#: The kernel's send buffer for one page (bytes): a page that stops reading holds this much
#: (and aiohttp's own buffer) before its frames are dropped.
SEND_BUFFER = 32 * 1024
#: Events of the session kept for a page that connects later (its session roll).
HISTORY = 50_000
HISTORY_KINDS = ("heard", "note_on", "note_off", "phrase_end", "control")
#: Controls from one page: this many a second on average, in bursts of up to CONTROL_BURST.
CONTROL_RATE = 20.0
CONTROL_BURST = 40
#: Controls sent to the companion and not yet answered, all pages together.
MAX_IN_FLIGHT = 16
#: MIDI messages from one page's Web MIDI input: this many a second on average, in bursts of
#: up to MIDI_BURST (a keyboard played hard with a pedal and a bender stays well under it).
MIDI_RATE = 1000.0
MIDI_BURST = 2000
#: A page's refused MIDI is said to it at most this often (one line each time).
MIDI_ERROR_EVERY_S = 1.0
#: The longest control message taken (bytes).
MAX_MESSAGE = 4096
#: How long a request to the companion may take.
REQUEST_TIMEOUT_S = 5.0


class Page:
    """One open page: its frames queue, its control budget."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.frames: asyncio.Queue[str] = asyncio.Queue(CLIENT_QUEUE)
        self.limit = RateLimit(CONTROL_RATE, CONTROL_BURST)
        self.midi_limit = RateLimit(MIDI_RATE, MIDI_BURST)
        self.midi_error_at = -1e9


class Web:
    """The server: the guard on every request, the routes, the pages."""

    def __init__(self, guard: Guard):
        self.guard = guard
        self.pages: set[Page] = set()
        self.history: deque[list] = deque(maxlen=HISTORY)
        self.frames_dropped = 0
        self.in_flight = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._stats: tuple[int, int] | None = None
        self.url = ""  # the page's URL, as the companion prints it (for the QR code)
        self._static = resources.files("companion.ui") / "static"

    # -- the companion, over stdin/stdout ---------------------------------------------------

    @staticmethod
    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def ask(self, op: str, **data: Any) -> dict:
        """A request to the companion; its reply (``error``, ``data``)."""
        self._next_id += 1
        ident = self._next_id
        fut = asyncio.get_running_loop().create_future()
        self._waiting[ident] = fut
        self.say({"op": op, "id": ident, **data})
        try:
            return await asyncio.wait_for(fut, REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            return {"error": f"no reply from the companion within {REQUEST_TIMEOUT_S:g} s"}
        finally:
            self._waiting.pop(ident, None)

    def heard(self, line: bytes) -> None:
        """A line from the companion: a frame for the pages, or a reply."""
        msg = json.loads(line)
        if msg.get("op") == "url":
            self.url = msg["url"]
            return
        if msg.get("op") == "reply":
            fut = self._waiting.get(msg["id"])
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        self.history.extend(e for e in msg["events"] if e[0] in HISTORY_KINDS)
        text = line.decode().rstrip("\n")
        for p in list(self.pages):
            try:
                p.frames.put_nowait(text)
            except asyncio.QueueFull:
                self.frames_dropped += 1
        self.stats()

    def stats(self) -> None:
        now = (len(self.pages), self.frames_dropped)
        if now != self._stats:
            self._stats = now
            self.say({"op": "stats", "pages": now[0], "frames_dropped": now[1]})

    # -- the guard and the routes -------------------------------------------------------------

    @web.middleware
    async def check(self, request: web.Request, handler):
        g = self.guard
        if not g.host_ok(request.headers.get("Host")) or not g.token_ok(
                request.query.get("token")):
            return web.Response(status=403)
        resp = await handler(request)
        if not resp.prepared:
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["X-Frame-Options"] = "DENY"
            resp.headers["X-Content-Type-Options"] = "nosniff"
            resp.headers["Referrer-Policy"] = "no-referrer"  # the token stays here
        return resp

    async def page(self, request: web.Request) -> web.Response:
        page = (self._static / "index.html").read_text()
        token = self.guard.token
        page = page.replace("?TOKEN", f"?token={quote(token, safe='')}" if token else "")
        return web.Response(text=page, content_type="text/html")

    async def file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        ext = Path(name).suffix
        f = self._static / name
        if "/" in name or "\\" in name or name.startswith(".") or ext not in types \
                or not f.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=f.read_bytes(), content_type=types[ext])

    async def qr(self, request: web.Request) -> web.Response:
        """The page's URL (with its token) as a QR code, an SVG made here (segno)."""
        import io

        import segno

        if not self.url:
            raise web.HTTPNotFound()
        out = io.BytesIO()
        segno.make(self.url, error="m").save(out, kind="svg", scale=6, border=4,
                                              dark="#000", light="#fff", xmldecl=False)
        return web.Response(body=out.getvalue(), content_type="image/svg+xml")

    async def get_state(self) -> dict:
        reply = await self.ask("state")
        state = reply.get("data") or {}
        if "status" in state:
            state["status"]["pages"] = len(self.pages)
        state["url"] = self.url
        return state

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(await self.get_state())

    async def session(self, request: web.Request) -> web.Response:
        reply = await self.ask("session")
        data = reply.get("data")
        if not data:
            return web.Response(status=404, text="no notes played yet")
        body = Path(data["path"]).read_bytes()
        return web.Response(body=body, content_type="audio/midi", headers={
            "Content-Disposition": f'attachment; filename="{data["name"]}"'})

    async def socket(self, request: web.Request) -> web.WebSocketResponse | web.Response:
        if not self.guard.origin_ok(request.headers.get("Origin"), request.headers.get("Host")):
            return web.Response(status=403)
        ws = web.WebSocketResponse(heartbeat=10, max_msg_size=MAX_MESSAGE)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:  # a stalled page holds little, and its frames drop soon
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        await ws.prepare(request)
        page = Page(ws)
        state = await self.get_state()
        await ws.send_str(json.dumps({"type": "hello", "state": state,
                                      "history": list(self.history)}))
        self.pages.add(page)
        self.stats()
        writer = asyncio.create_task(self.write(page))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.control(page, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.pages.discard(page)
            self.stats()
            writer.cancel()
        return ws

    @staticmethod
    async def write(page: Page) -> None:
        with contextlib.suppress(Exception):
            while True:
                await page.ws.send_str(await page.frames.get())

    @staticmethod
    async def reply(page: Page, ident: Any, error: str | None) -> None:
        with contextlib.suppress(Exception):
            await page.ws.send_str(json.dumps({"type": "reply", "id": ident, "error": error}))

    async def control(self, page: Page, text: str) -> None:
        """``{"id": ANY, "name": NAME, "value": VALUE}`` -> to the companion, then a reply
        with the same id and ``error`` null or one line. Checked here: the shape, the rate;
        the name and value by the companion. ``{"type": "midi", "data": [BYTES]}``: see
        ``midi``."""
        try:
            msg = json.loads(text)
        except ValueError:
            await self.reply(page, None, "not JSON: expected {\"name\": ..., \"value\": ...}")
            return
        ident = msg.get("id") if isinstance(msg, dict) else None
        if not isinstance(ident, int | str | None) or isinstance(ident, bool):
            ident = None
        if isinstance(msg, dict) and msg.get("type") == "midi":
            await self.midi(page, ident, msg.get("data"))
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("name"), str) \
                or len(msg["name"]) > 100:
            await self.reply(page, ident, "expected an object with a \"name\"")
            return
        name, value = msg["name"], msg.get("value")
        if not page.limit.allow():
            await self.reply(page, ident, f"{name}: rate limited (at most {CONTROL_RATE:g} "
                             f"controls a second); not applied")
            return
        if not (value is None or isinstance(value, bool | int | float | str)) or (
                isinstance(value, str) and len(value) > 200):
            await self.reply(page, ident, f"{name}: expected a number, text or true/false, "
                             f"got {type(value).__name__}")
            return
        if self.in_flight >= MAX_IN_FLIGHT:
            await self.reply(page, ident, f"{name}: busy ({MAX_IN_FLIGHT} controls waiting "
                             f"for the engine); not applied")
            return
        self.in_flight += 1
        try:
            answer = await self.ask("control", name=name, value=value)
        finally:
            self.in_flight -= 1
        await self.reply(page, ident, answer.get("error"))

    async def midi(self, page: Page, ident: Any, data: Any) -> None:
        """One MIDI message from the page's Web MIDI input, to the companion's input queue
        (``Live.hear``, the path of the input port's messages), no reply. A message that is
        not one whole channel message, or beyond the page's MIDI rate, is dropped and said
        to the page in one line, at most once every MIDI_ERROR_EVERY_S."""
        checked = check_midi(data)
        if not isinstance(checked, str) and not page.midi_limit.allow():
            checked = (f"midi: rate limited (at most {MIDI_RATE:g} messages a second); "
                       f"dropped")
        if isinstance(checked, str):
            now = asyncio.get_running_loop().time()
            if now - page.midi_error_at >= MIDI_ERROR_EVERY_S:
                page.midi_error_at = now
                await self.reply(page, ident, checked)
            return
        self.say({"op": "midi", "data": checked})


async def serve(guard: Guard, reader: asyncio.StreamReader) -> None:
    """Until stdin closes."""
    w = Web(guard)
    app = web.Application(middlewares=[w.check], client_max_size=MAX_MESSAGE)
    app.router.add_get("/", w.page)
    app.router.add_get("/static/{name}", w.file)
    app.router.add_get("/api/state", w.state)
    app.router.add_get("/api/session.mid", w.session)
    app.router.add_get("/api/qr.svg", w.qr)
    app.router.add_get("/ws", w.socket)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, guard.host, guard.port, reuse_address=True)
        await site.start()
    except OSError as e:
        w.say({"op": "error", "message": f"ui: cannot listen on {guard.host}:{guard.port} "
                                         f"({e.strerror or e})"})
        await runner.cleanup()
        return
    server = site._server  # noqa: SLF001 - the port the system chose for port 0
    guard.set_port(server.sockets[0].getsockname()[1] if server else guard.port)
    w.say({"op": "ready", "port": guard.port})
    try:
        while line := await reader.readline():
            w.heard(line)
    finally:
        for p in list(w.pages):
            with contextlib.suppress(Exception):
                await p.ws.close()
        await runner.cleanup()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cfg = json.loads(await reader.readline())
    await serve(Guard(cfg["host"], cfg["port"], cfg["token"]), reader)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the companion stops it (stdin closes)
    asyncio.run(main())
