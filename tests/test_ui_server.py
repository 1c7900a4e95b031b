"""The control surface's server (companion/ui/): a real aiohttp server on a real Live (the
in-process loopback, the real clock), talked to by real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import signal
import socket
import time
from importlib import resources

import aiohttp
import mido
import pytest
from support import UI_CALL as CALL
from support import UiRig as Rig
from support import make_config

from companion.config import ConfigError, UiConfig
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.live import Live
from companion.ui import guard as guard_mod
from companion.ui.guard import Guard, RateLimit, check_midi, parse_address
from companion.ui.server import UiServer, midi_message
from companion.ui.web import CONTROL_BURST


@pytest.fixture
def rig(model):
    r = Rig(model)
    yield r
    r.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def get(url: str, **headers: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, await r.read()


async def frames_until(ws, pred, timeout: float = 10.0) -> dict:
    """WebSocket messages until one for which ``pred`` is true (returned)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = await ws.receive(timeout=end - time.monotonic())
        data = json.loads(msg.data)
        if pred(data):
            return data
    raise AssertionError("no such message")


def control_event(name):
    def pred(m):
        return m["type"] == "frame" and any(
            e[0] == "control" and e[2]["name"] == name for e in m["events"])
    return pred


# -- the page ------------------------------------------------------------------------------


def test_page_and_its_files_are_served_from_the_package_and_nothing_from_the_web(rig):
    status, body = run(get(rig.url))
    assert status == 200 and b"<canvas id=\"roll\"" in body
    for name in ("app.js", "style.css"):
        status, _ = run(get(f"{rig.base}/static/{name}"))
        assert status == 200
    assert run(get(f"{rig.base}/static/..%2Fserver.py"))[0] == 404
    assert run(get(f"{rig.base}/static/server.py"))[0] == 404
    static = resources.files("companion.ui") / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert not re.search(r"https?://", text), f"{f.name} loads something from the web"


def test_state_endpoint_has_status_settings_and_controls_with_ranges(rig):
    status, body = run(get(f"{rig.base}/api/state"))
    state = json.loads(body)
    assert status == 200
    assert state["status"]["state"] == "listening"
    assert state["settings"]["answer.temperature"] == rig.live.engine.setting("answer.temperature")
    temp = next(c for c in state["controls"] if c["name"] == "answer.temperature")
    assert (temp["min"], temp["max"]) == (0, 5)
    barge = next(c for c in state["controls"] if c["name"] == "answer.barge_in")
    assert barge["choices"] == ["stop", "keep"]


# -- security --------------------------------------------------------------------------------


def test_binds_to_loopback_by_default():
    assert UiConfig().host == "127.0.0.1"
    assert Guard("127.0.0.1", 1, None).token is None


def test_a_hostile_page_on_another_origin_cannot_open_the_websocket(rig):
    async def attempt(origin):
        async with aiohttp.ClientSession() as s:
            headers = {"Origin": origin} if origin else {}
            try:
                async with s.ws_connect(f"{rig.base}/ws", headers=headers):
                    return 101
            except aiohttp.WSServerHandshakeError as e:
                return e.status

    assert run(attempt("http://evil.example")) == 403
    assert run(attempt(f"http://evil.example:{rig.port}")) == 403
    assert run(attempt(None)) == 403
    assert run(attempt(rig.origin)) == 101


def test_dns_rebinding_a_foreign_host_name_is_refused(rig):
    status, body = run(get(f"{rig.base}/api/state", Host=f"evil.example:{rig.port}"))
    assert (status, body) == (403, b"")
    status, body = run(get(f"{rig.base}/", Host=f"127.0.0.1:{rig.port + 1}"))
    assert (status, body) == (403, b"")
    assert run(get(f"{rig.base}/", Host=f"localhost:{rig.port}"))[0] == 200


def test_the_token_is_compared_in_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guard_mod.hmac, "compare_digest", spy)
    g = Guard("0.0.0.0", 1, None)
    assert g.token and not g.token_ok("x") and not g.token_ok(None) and g.token_ok(g.token)
    assert len(compared) == 3


def test_any_other_address_needs_the_token_and_a_wrong_one_gets_403_and_nothing(model):
    r = Rig(model, host="0.0.0.0")
    try:
        token = r.server.guard.token
        assert token and len(token) >= 16 and f"?token={token}" in r.url
        assert run(get(f"{r.base}/")) == (403, b"")
        assert run(get(f"{r.base}/?token=wrong")) == (403, b"")
        assert run(get(f"{r.base}/api/state?token={token[:-1]}")) == (403, b"")
        assert run(get(f"{r.base}/static/app.js")) == (403, b"")
        status, body = run(get(f"{r.base}/?token={token}"))
        assert status == 200 and f"static/app.js?token={token}".encode() in body
    finally:
        r.close()


def test_a_configured_token_is_required_on_loopback_too(model):
    r = Rig(model, token="s3cret")
    try:
        assert run(get(f"{r.base}/"))[0] == 403
        assert run(get(f"{r.base}/?token=s3cret"))[0] == 200
    finally:
        r.close()


def test_ui_address_option():
    cfg = UiConfig()
    assert parse_address("", cfg) == ("127.0.0.1", 8765)
    assert parse_address("9000", cfg) == ("127.0.0.1", 9000)
    assert parse_address("0.0.0.0:9001", cfg) == ("0.0.0.0", 9001)
    for bad in ("host:", "x:y", "1.2.3.4:99999"):
        with pytest.raises(ConfigError, match="--ui"):
            parse_address(bad, cfg)


def test_a_port_in_use_is_one_clear_error(rig, model):
    cfg = make_config(None, session={"enabled": False})
    live = Live(cfg, model, LoopbackIn(), LoopbackOut())
    server = UiServer(live, "127.0.0.1", rig.port)
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{rig.port}"):
        server.start()


# -- controls --------------------------------------------------------------------------------


async def _session(rig, script):
    async with aiohttp.ClientSession() as s, s.ws_connect(
            f"{rig.base}/ws", headers={"Origin": rig.origin}) as ws:
        hello = json.loads((await ws.receive(timeout=10)).data)
        assert hello["type"] == "hello"
        return await script(ws, hello)


async def ask(ws, ident, name, value=None, raw=None) -> str | None:
    await ws.send_str(raw if raw is not None else json.dumps(
        {"id": ident, "name": name, "value": value}))
    reply = await frames_until(ws, lambda m: m["type"] == "reply" and m["id"] == ident)
    return reply["error"]


def test_a_control_goes_through_the_engine_and_comes_back_to_every_page(rig):
    async def script(ws, hello):
        await ws.send_str(json.dumps({"id": 1, "name": "answer.temperature", "value": 1.3}))
        got: dict = {}  # the reply and the event, in either order
        while len(got) < 2:
            m = json.loads((await ws.receive(timeout=10)).data)
            if m["type"] == "reply" and m["id"] == 1:
                got["reply"] = m
            elif control_event("answer.temperature")(m):
                got["event"] = m
        return got

    got = run(_session(rig, script))
    assert got["reply"]["error"] is None
    assert rig.live.engine.setting("answer.temperature") == 1.3
    assert [e[2]["value"] for e in got["event"]["events"] if e[0] == "control"] == [1.3]


def test_bad_controls_get_an_error_and_change_nothing(rig):
    before = rig.live.engine.settings()

    async def script(ws, hello):
        return [
            await ask(ws, 1, "answer.temperature", 99),
            await ask(ws, 2, "answer.temperature", "hot"),
            await ask(ws, 3, "answer.barge_in", "sometimes"),
            await ask(ws, 4, "listen.tempo_bpm", 100),
            await ask(ws, 5, "model", "../../etc"),
            await ask(ws, 6, "model", str(rig.live.engine.model.dir)),
            await ask(ws, 7, "answer.top_p", {"a": 1}),
            await ask(ws, 8, "output", "anything"),
            await ask(ws, None, None, raw="{not json"),
            await ask(ws, None, None, raw="[1, 2]"),
        ]

    errors = run(_session(rig, script))
    assert all(errors), errors
    assert "answer.temperature" in errors[0] and "0..5" in errors[0]
    assert "no such control" in errors[3]
    assert "model" in errors[4] and "model" in errors[5]
    assert "cannot be switched" in errors[7]
    assert rig.live.engine.settings() == before


def test_a_mapped_cc_moves_the_control_on_the_page(model):
    r = Rig(model, controls={"temperature": 21})
    try:
        async def script(ws, hello):
            temp = next(c for c in hello["state"]["controls"]
                        if c["name"] == "answer.temperature")
            assert temp["cc"] == 21
            r.inport.deliver(mido.Message("control_change", control=21, value=127))
            return await frames_until(ws, control_event("answer.temperature"))

        ev = run(_session(r, script))
        value = next(e[2]["value"] for e in ev["events"] if e[0] == "control")
        assert value == r.live.cfg.controls.temperature_max == r.live.engine.setting(
            "answer.temperature")
    finally:
        r.close()


BAD_MIDI = ([0xF8], [0xF0, 1, 0xF7], [0x90, 60], [0x90, 60, 200], [0xC0, 5, 1], "90 3c 40",
            [0x90, 60, 64, 1], [True, 60, 64], [0x90, 60, 64.0], [], None, {"a": 1})


def test_web_midi_is_one_whole_channel_message():
    for bad in BAD_MIDI:
        error = check_midi(bad)
        assert isinstance(error, str) and error.startswith("midi: ") and "\n" not in error, bad
        assert isinstance(midi_message(bad), str)
    for good in ([0x90, 60, 64], [0x80, 60, 0], [0xB0, 64, 127], [0xC3, 5], [0xE0, 0, 64]):
        assert check_midi(good) == good
        assert midi_message(good).bytes() == good


def test_web_midi_from_the_socket_is_checked_and_heard_as_the_input_port(rig):
    """What is not one whole channel message never reaches the engine (said to the page in
    one line, once a second at most); a note does, by Live.hear, the input port's path."""
    async def script(ws, hello):
        for bad in BAD_MIDI:
            await ws.send_str(json.dumps({"id": 1, "type": "midi", "data": bad}))
        await ws.send_str(json.dumps({"type": "midi", "data": [0x90, 60, 64]}))
        await ws.send_str(json.dumps({"type": "midi", "data": [0x80, 60, 0]}))
        first = await frames_until(ws, lambda m: m["type"] == "reply")
        heard = await frames_until(ws, lambda m: m["type"] == "reply" or (
            m["type"] == "frame" and any(e[0] == "heard" and e[2]["velocity"] == 0
                                         for e in m["events"])))
        return first, heard

    first, heard = run(_session(rig, script))
    assert first["error"].startswith("midi: ") and "\n" not in first["error"]
    assert heard["type"] == "frame"  # no second error within the second
    assert rig.live.notes_heard == 1 and rig.server.midi_heard == 2
    assert rig.server.midi_refused == 0  # the web process let nothing bad through


def test_a_flood_of_controls_is_rate_limited_and_the_engine_keeps_answering(rig):
    async def script(ws, hello):
        for i in range(400):
            await ws.send_str(json.dumps({"id": i, "name": "answer.top_p",
                                          "value": (i % 10) / 10}))
        replies = {}
        while len(replies) < 400:
            m = json.loads((await ws.receive(timeout=10)).data)
            if m["type"] == "reply":
                replies[m["id"]] = m["error"]
        return replies

    t0 = time.monotonic()
    replies = run(_session(rig, script))
    elapsed = time.monotonic() - t0
    applied = [i for i, e in replies.items() if e is None]
    limited = [e for e in replies.values() if e and "rate limited" in e]
    assert len(applied) + len(limited) == 400
    assert len(applied) <= CONTROL_BURST + 20 * elapsed + 1
    assert len(limited) >= 400 - CONTROL_BURST - 20 * elapsed - 1
    # the music goes on: a call is still heard and answered
    heard = rig.live.notes_heard
    rig.play()
    deadline = time.monotonic() + 10
    while not any(m.type == "note_on" for _, m in rig.outport.messages()):
        assert time.monotonic() < deadline, "no answer after the flood of controls"
        time.sleep(0.05)
    assert rig.live.notes_heard == heard + len(CALL)


def test_the_roll_streams_what_is_heard_and_answered(rig):
    async def script(ws, hello):
        await asyncio.get_running_loop().run_in_executor(None, rig.play)
        kinds: set[str] = set()
        status: dict = {}
        end = time.monotonic() + 10
        while time.monotonic() < end and not (
                {"heard", "phrase_end", "note_on"} <= kinds and status.get("answers")):
            m = json.loads((await ws.receive(timeout=10)).data)
            if m["type"] == "frame":
                kinds |= {e[0] for e in m["events"]}
                status = m.get("status") or status
        return kinds, status

    kinds, status = run(_session(rig, script))
    assert {"heard", "phrase_end", "note_on"} <= kinds
    assert status["notes_heard"] == len(CALL) and status["answers"] == 1


def test_a_frozen_browser_loses_frames_and_delays_nothing(rig):
    """A client that opens the socket and never reads: its frames are dropped, the other
    page gets them, and the answer is played."""
    frozen = socket.create_connection(("127.0.0.1", rig.port))
    frozen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    frozen.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{rig.port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    f"Sec-WebSocket-Version: 13\r\nOrigin: {rig.origin}\r\n\r\n").encode())
    try:
        deadline = time.monotonic() + 10
        while rig.server.pages < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)

        def flood() -> None:  # some 6000 events in 3 s, then a call
            for i in range(3000):
                rig.inport.deliver(mido.Message("note_on", note=40 + i % 40, velocity=60))
                rig.inport.deliver(mido.Message("note_off", note=40 + i % 40))
                if i % 50 == 0:
                    time.sleep(0.05)
            time.sleep(0.5)
            rig.play()

        async def script(ws, hello):
            await asyncio.get_running_loop().run_in_executor(None, flood)
            return await frames_until(ws, lambda m: m["type"] == "frame" and any(
                e[0] == "note_on" for e in m["events"]))

        run(_session(rig, script))
        deadline = time.monotonic() + 5
        while rig.server.status()["frames_dropped"] == 0:
            assert time.monotonic() < deadline, "the frozen client's frames were not dropped"
            time.sleep(0.1)
    finally:
        frozen.close()


def test_the_web_server_dying_never_stops_the_music(model):
    lines: list[str] = []
    r = Rig(model)
    r.server.log = lines.append
    try:
        os.kill(r.server.web_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not lines:
            assert time.monotonic() < deadline, "the bridge did not notice"
            time.sleep(0.05)
        assert "the music goes on" in lines[0]
        r.play()
        while not any(m.type == "note_on" for _, m in r.outport.messages()):
            assert time.monotonic() < deadline + 10, "no answer without the web server"
            time.sleep(0.05)
    finally:
        r.close()


def test_rate_limit_bucket():
    now = [0.0]
    r = RateLimit(10, 3, clock=lambda: now[0])
    assert [r.allow() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.1
    assert r.allow() and not r.allow()


def test_the_bench_figure_takes_both_sides_in_one_run(model_pkg):
    """`companion bench`'s ui figures: p99 without the page and with two browsers."""
    from bench.figures import Plan, Result
    from bench.ui import measure_ui

    res = Result()
    measure_ui(model_pkg, Plan.quick(), res, quiet=True)
    for key in ("ui_answer_latency_ms", "ui_schedule_error_ms"):
        v = res.figures[key]
        assert set(v) == {"without", "with"} and all(x >= 0 for x in v.values()), res.notes
        frames = int(re.search(r"(\d+) frames read", res.notes[key]).group(1))
        assert frames > 0, res.notes[key]


def test_a_pinned_token_is_one_a_url_carries_as_it_is():
    assert make_config(None, ui={"token": "Stage-Left_2024"}).ui.token == "Stage-Left_2024"
    for bad in ("short", "with space here", "a/b?c=d&e", "x" * 129, 12345678):
        with pytest.raises(ConfigError, match="ui.token"):
            make_config(None, ui={"token": bad})
