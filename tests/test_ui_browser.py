"""The control surface in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright for Python, against `companion demo --ui` and `companion live --ui` on the JACK
server of the live tests. With UI_SCREENSHOTS=FOLDER set, the screenshots are kept there
(docs/ holds the ones the README shows)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support import JACK_CALL as CALL
from support import JACK_CALL2 as CALL2
from support import (
    ROOT,
    UI_CALL,
    Companion,
    Heard,
    Performer,
    UiRig,
    jack_env,
    note_ons,
    wait_answer_heard,
    wait_for,
    write_config,
)

from companion.midi.input import open_input

pytestmark = pytest.mark.slow

#: The JACK test's tempo: what it checks does not depend on it, and a brisk one keeps it short.
TEMPO = 240.0
BEAT = 60.0 / TEMPO


def shot(page, name: str, tmp_path: Path) -> None:
    folder = os.environ.get("UI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path
    page.screenshot(path=str(path / name), full_page=True)


def url_in(lines: list[str], timeout: float = 30) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in list(lines):
            m = re.search(r"control surface: (http://\S+)", line)
            if m:
                return m.group(1)
        time.sleep(0.1)
    raise AssertionError("no URL printed:\n" + "\n".join(lines))


def state(url: str) -> dict:
    base, _, query = url.partition("?")
    with urllib.request.urlopen(f"{base}api/state{'?' + query if query else ''}") as r:
        return json.load(r)


def test_the_demo_in_the_browser(browser, tmp_path):
    """`companion demo --ui`: the roll fills with calls and answers, the status is shown."""
    lines: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", "companion", "demo", "--ui", "127.0.0.1:0"],
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                   PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=lambda: lines.extend(line.rstrip() for line in proc.stdout),
                     daemon=True).start()
    try:
        url = url_in(lines)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.wait_for_function("Number(document.body.dataset.companion) >= 4", timeout=40_000)
        assert int(page.evaluate("document.body.dataset.performer")) >= 4
        page.wait_for_function("document.getElementById('key').textContent !== '–'")
        assert page.text_content("#tempo").endswith("BPM")
        assert page.locator("[id='ctl-answer.temperature']").count() == 1
        frames = int(page.evaluate("document.body.dataset.frames"))
        time.sleep(1.0)
        assert int(page.evaluate("document.body.dataset.frames")) - frames >= 20  # it animates
        shot(page, "ui-demo.png", tmp_path)
        page.close()
    finally:
        proc.terminate()
        proc.wait(15)


def set_slider(page, name: str, value: float) -> None:
    """What a finger does: the slider moves (input events), then is let go (change)."""
    page.evaluate("""([name, value]) => {
        const el = document.getElementById('ctl-' + name);
        el.dispatchEvent(new PointerEvent('pointerdown'));
        el.value = companion.stopOf(companion.controls[name], value);  // the value's stop
        el.dispatchEvent(new Event('input'));
        el.dispatchEvent(new Event('change'));
    }""", [name, value])


@pytest.mark.jack
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_live_steered_from_the_browser_over_jack(browser, jack_server, monkeypatch, tmp_path,
                                                 model_pkg):
    jack_env(jack_server, monkeypatch)
    models = tmp_path / "models"
    for name in ("first", "second"):
        shutil.copytree(model_pkg, models / name)
    cfg = write_config(
        tmp_path / "config.yaml", models / "first",
        listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.0},
        answer={"length": 4, "min_beats": 1, "max_beats": 4, "seed": 3, "max_note_beats": 1},
        session={"folder": str(tmp_path / "sessions")}, time={"tempo": "fixed"},
    )
    comp = Companion(jack_server, "--config", str(cfg), "--ui", "127.0.0.1:0")
    performer = other = None
    log = lambda: "\n".join(comp.lines)  # noqa: E731
    try:
        comp.wait_ready()
        url = url_in(comp.lines)
        performer = Performer()
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.wait_for_function("document.body.dataset.connected === 'yes'")

        # a call: it and its answer in the roll; the key shown is the key of the call
        performer.play(CALL, BEAT)
        wait_answer_heard(comp, performer, 0, 0)
        assert note_ons(performer.received()), "no answer:\n" + log()
        page.wait_for_function(f"Number(document.body.dataset.performer) >= {len(CALL)} && "
                               "Number(document.body.dataset.companion) >= 1")
        logged = [line.split("key: ", 1)[1] for line in comp.lines if "key: " in line]
        assert logged, log()
        page.wait_for_function(f"document.getElementById('key').textContent === {logged[-1]!r}")
        shot(page, "ui-live.png", tmp_path)

        # the temperature slider moves the engine's temperature
        set_slider(page, "answer.temperature", 1.5)
        wait_for(lambda: state(url)["settings"]["answer.temperature"] == 1.5,
                 what="temperature not changed", context=log, timeout=20, poll=0.1)

        # mute: the next call gets no answer; unmute
        page.click("#mute")
        wait_for(lambda: state(url)["muted"], what="not muted", context=log, timeout=20, poll=0.1)
        n = len(performer.received())
        performer.wait_answer(performer.play(CALL2, BEAT), BEAT)
        assert not note_ons(performer.received()[n:]), "answered while muted"
        page.click("#mute")
        wait_for(lambda: not state(url)["muted"], what="not unmuted", context=log, timeout=20,
                 poll=0.1)

        # panic: All Notes Off arrives on the JACK port
        n = len(performer.received())
        page.click("button[data-control=panic]")
        wait_for(lambda: any(m.type == "control_change" and m.control == 123
                             for _, m in performer.received()[n:]), what="no All Notes Off",
                 context=log, timeout=20, poll=0.1)

        # switch the model while running: the next call is answered by the new model
        page.select_option("#model-select", "second")
        wait_for(lambda: any("model second in use" in line for line in comp.lines),
                 what="model not switched", context=log, timeout=20, poll=0.1)
        assert state(url)["model"] == "second"
        n, answers = len(performer.received()), comp.count("-> answer of")
        performer.play(CALL, BEAT)
        wait_answer_heard(comp, performer, answers, n)
        assert note_ons(performer.received()[n:]), "no answer by the new model:\n" + log()

        # switch the output port while running: the next call is answered on the new port
        heard_other = Heard()
        other = open_input("UNIX_JACK", "other", virtual=True, client_name="tester",
                           callback=heard_other._heard)
        page.wait_for_function("[...document.getElementById('output-select').options]"
                               ".some(o => o.value.startsWith('tester'))", timeout=20_000)
        name = page.evaluate("[...document.getElementById('output-select').options]"
                             ".find(o => o.value.startsWith('tester')).value")
        page.select_option("#output-select", name)
        wait_for(lambda: state(url)["status"]["output"] == name, what="output not switched",
                 context=log, timeout=20, poll=0.1)
        n, answers = len(performer.received()), comp.count("-> answer of")
        performer.play(CALL, BEAT)
        wait_answer_heard(comp, heard_other, answers, 0)
        time.sleep(0.3)  # what went to the old port as well is there by now
        assert note_ons(heard_other.received()), "no answer on the new port:\n" + log()
        assert not note_ons(performer.received()[n:]), "answered on the old port too"
        shot(page, "ui-controls.png", tmp_path)
        page.close()
    finally:
        for p in (performer, other):
            if p is not None:
                p.close()
        assert comp.stop() == 0, log()


def test_the_page_keeps_up_with_a_flood(browser, model):
    """A flood of input (as the reliability tests send): the page stays live and shows the
    notes, and the companion still answers the call after it."""
    import mido
    r = UiRig(model)
    try:
        page = browser.new_page(viewport={"width": 1024, "height": 700})
        page.goto(r.url)
        page.wait_for_function("document.body.dataset.connected === 'yes'")
        for i in range(3000):
            r.inport.deliver(mido.Message("note_on", note=40 + i % 40, velocity=60))
            r.inport.deliver(mido.Message("note_off", note=40 + i % 40))
            if i % 100 == 0:
                time.sleep(0.02)
        frames = int(page.evaluate("document.body.dataset.frames"))
        n = len(r.outport.messages())
        r.play(UI_CALL)
        page.wait_for_function("Number(document.body.dataset.companion) >= 1", timeout=20_000)
        assert any(m.type == "note_on" for _, m in r.outport.messages()[n:])
        # every note the companion heard is drawn, unless frames were dropped (and counted)
        page.wait_for_function(f"Number(document.body.dataset.performer) >= "
                               f"{r.live.notes_heard} || "
                               f"!document.getElementById('dropped').textContent"
                               f".endsWith(' 0 frames')", timeout=10_000)
        assert int(page.evaluate("document.body.dataset.frames")) > frames  # still drawing
        assert page.evaluate("document.body.dataset.connected") == "yes"
        page.close()
    finally:
        r.close()
