"""The page itself in headless Chromium (Debian's ``chromium``, driven by Playwright), on a
Live on the in-process loopback (tests/support.py UiRig, 240 BPM): the answers heard through
the page's own piano (WebAudio voices scheduled at the notes' times, read from the page's
synth), a keyboard on the computer through Web MIDI (the browser's Web MIDI replaced by a
scripted one) reaching the companion and answered, the answer in the "next" lane before it
sounds, the controls in a performer's words with steps that fit, what the companion waits
for in words, the QR code of the URL (read back from the page's pixels and from the
terminal's text)."""

from __future__ import annotations

import os
import time

import mido
import numpy as np
import pytest
from support import UI_CALL, UiRig

from bench.page import FAKE_MIDI  # the browser's Web MIDI, replaced by a scripted one
from companion.config import check_of
from companion.live_controls import CONTROLS, stops
from companion.ui.server import qr_text

pytestmark = pytest.mark.slow


@pytest.fixture
def rig(model):
    r = UiRig(model)
    yield r
    r.close()


def open_page(browser, url: str, width: int = 1280, midi: bool = False):
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    if midi:
        ctx.add_init_script(FAKE_MIDI)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.connected === 'yes'")
    return page


def sound_on(page) -> None:
    """The first tap: the page's piano starts (browsers start audio on a gesture only)."""
    page.click("#sound")
    page.wait_for_function("document.body.dataset.sound === 'on'")
    assert page.evaluate("companion.synth.ctx.state") == "running"


def answered(r: UiRig, answers: int = 1, timeout: float = 15) -> list:
    """The answer's notes as the engine decided them, once it has played them all."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if r.live.answers >= answers and not r.live.answering:  # decided, and played
            return list(r.live.engine.answer.notes)
        time.sleep(0.05)
    raise AssertionError("no answer played")


def voices(page) -> list[dict]:
    """The page's synth's voices of the answers: pitch, their start on the server's clock (from
    the AudioContext's time they were scheduled at), how far ahead they were scheduled."""
    return page.evaluate("""companion.synth.log.filter(v => v.tag && v.tag.answer !== undefined)
        .map(v => ({pitch: v.pitch, answer: v.tag.answer, index: v.tag.index,
                    server: companion.serverOf(v.start), start: v.start, made: v.made,
                    end: v.end}))""")


def test_the_page_plays_the_answer_through_its_synth_at_the_notes_times(browser, rig):
    page = open_page(browser, rig.url)
    sound_on(page)
    rig.play(UI_CALL)
    notes = answered(rig)
    sent = [t for t, m in rig.outport.messages() if m.type == "note_on" and m.velocity]
    assert len(sent) == len(notes)
    page.wait_for_function(f"companion.synth.log.filter(v => v.tag && v.tag.answer).length "
                           f">= {len(notes)}")
    got = sorted(voices(page), key=lambda v: v["index"])
    assert [v["pitch"] for v in got] == [n.pitch for n in notes]
    for v, n, t in zip(got, notes, sent, strict=True):
        # each voice is a WebAudio node started at the note's time (the clocks mapped)...
        assert abs(v["server"] - n.start) < 0.015, (v, n)
        assert abs(v["server"] - t) < 0.02, (v, t)  # ...when the MIDI note was sent
        assert v["made"] < v["start"]  # scheduled ahead, not played as it came
        assert v["end"] - v["start"] == pytest.approx(n.duration, abs=0.005)
    page.context.close()


#: A note planned this long before it sounds is drawn in the "next" lane before it sounds:
#: a few frames of a page on a loaded machine. (An answer may start as little as
#: turn.DECIDE_AHEAD_S after it is decided: its first note may sound before a frame.)
AHEAD_S = 0.1


def test_the_next_lane_shows_the_answer_before_its_notes_sound(browser, rig):
    page = open_page(browser, rig.url)
    rig.play(UI_CALL)
    notes = answered(rig)
    sent = [t for t, m in rig.outport.messages() if m.type == "note_on" and m.velocity]
    planned = page.evaluate("companion.planned.map(n => ({pitch: n.pitch, start: n.start, "
                            "shownAt: n.shownAt, heardAt: n.heardAt, index: n.index}))")
    assert [p["pitch"] for p in planned] == [n.pitch for n in notes]
    ahead = [(p, t) for p, t in zip(planned, sent, strict=True)
             if p["start"] > p["heardAt"] + AHEAD_S]
    assert ahead, planned  # 240 BPM: the answer's later notes come a beat or more after
    for p, t in ahead:
        assert p["shownAt"] is not None, planned
        assert p["shownAt"] < p["start"] and p["shownAt"] < t, planned
    page.context.close()


def test_a_web_midi_keyboard_chosen_on_the_page_is_answered(browser, rig):
    page = open_page(browser, rig.url, midi=True)
    sound_on(page)  # the same tap asks for Web MIDI
    page.wait_for_function("[...document.getElementById('webmidi-in').options]"
                           ".some(o => o.text === 'Test Keyboard')")
    page.select_option("#webmidi-in", label="Test Keyboard")
    page.select_option("#webmidi-out", label="Test Synth")
    assert page.is_checked("#my-notes")  # its notes on the page's piano too
    page.evaluate("__midi.phrase([[67, 0], [69, 150], [71, 300], [72, 450]])")
    notes = answered(rig)
    assert rig.live.notes_heard == 4  # heard as the input port's notes are
    heard = [m.note for _, m in rig.outport.messages() if m.type == "note_on" and m.velocity]
    assert heard == [n.pitch for n in notes]  # and answered on the companion's output
    # the keyboard's own notes sounded on the page at once, the answer at its times
    mine = page.evaluate("companion.synth.log.filter(v => v.tag && v.tag.who === 'performer')"
                         ".map(v => v.pitch)")
    assert mine == [67, 69, 71, 72]
    # and the answer went to the Web MIDI output, stamped with the notes' times
    page.wait_for_function(f"__midi.sent.filter(m => m.data[0] === 0x90).length >= {len(notes)}")
    out = page.evaluate("__midi.sent.filter(m => m.data[0] === 0x90)"
                        ".map(m => [m.data[1], m.ts, companion.perfOfServer(0)])")
    for (pitch, ts, zero), n in zip(out, notes, strict=True):
        assert pitch == n.pitch
        assert abs((ts - zero) / 1000 - n.start) < 0.015
    # what is not one whole channel message is refused in one line, and nothing breaks
    page.evaluate("companion.synth && __midi.play([0x90, 200, 1])")
    page.wait_for_function("document.getElementById('error').textContent.includes('midi:')")
    page.context.close()


def set_stop(page, name: str, value) -> None:
    """What a finger does on a slider: moves it to ``value``'s stop, lets go."""
    page.evaluate("""([name, value]) => {
        const el = document.getElementById('ctl-' + name);
        el.dispatchEvent(new PointerEvent('pointerdown'));
        el.value = companion.stopOf(companion.controls[name], value);
        el.dispatchEvent(new Event('input'));
        el.dispatchEvent(new Event('change'));
    }""", [name, value])


def wait_setting(r: UiRig, key: str, value) -> None:
    end = time.monotonic() + 10
    while r.live.engine.setting(key) != value:
        assert time.monotonic() < end, f"{key} is {r.live.engine.setting(key)!r}, not {value!r}"
        time.sleep(0.02)


def test_controls_in_a_performers_words_with_steps_that_fit(browser, rig):
    page = open_page(browser, rig.url)
    for c in CONTROLS:
        if c.kind != "setting":
            continue
        box = page.locator(f"[id='ctl-{c.key}']").locator("..")
        assert box.locator("label span").first.text_content() == c.label, c.name
        assert box.locator(".hint").text_content().startswith(c.description), c.name
        if check_of(c.key)["kind"] == "range":
            n = page.evaluate(f"document.getElementById('ctl-{c.key}').max")
            assert int(n) == len(stops(c, check_of(c.key))) - 1
    assert page.text_content("label[for='ctl-answer.temperature'] span") == "adventure"
    # whole beats: the shortest answer can be 2 beats
    set_stop(page, "answer.min_beats", 2)
    wait_setting(rig, "answer.min_beats", 2)
    # a log scale: 16 beats is well up the longest answer's slider, not at 6% of it
    at = page.evaluate("companion.stopOf(companion.controls['answer.max_beats'], 16) / "
                       "document.getElementById('ctl-answer.max_beats').max")
    assert 0.3 < at < 0.6
    # the meter back to unknown
    set_stop(page, "time.meter", 3)
    wait_setting(rig, "time.meter", 3)
    set_stop(page, "time.meter", None)
    wait_setting(rig, "time.meter", None)
    page.wait_for_function("document.querySelector(\"label[for='ctl-time.meter'] output\")"
                           ".textContent === 'unknown'")
    # the length's bottom stop: as long as the call
    set_stop(page, "answer.length", 4)
    wait_setting(rig, "answer.length", 4)
    set_stop(page, "answer.length", "call")
    wait_setting(rig, "answer.length", "call")
    # panic: red, set apart from the everyday buttons
    red = page.evaluate("getComputedStyle(document.getElementById('panic')).backgroundColor")
    r, g, b = (int(x) for x in red[red.index("(") + 1:red.index(")")].split(",")[:3])
    assert r > 150 and g < 60 and b < 80, red
    gap = page.evaluate("document.getElementById('panic').getBoundingClientRect().left - "
                        "document.getElementById('reset-style').getBoundingClientRect().right")
    assert gap > 100
    # the session's scroll is a timeline (times marked on a canvas), not one more slider
    assert page.locator("#timeline").count() == 1 and page.locator("#scroll").count() == 0
    page.context.close()


def test_the_header_is_one_line_at_a_tablets_width(browser, rig):
    page = open_page(browser, rig.url, width=768)
    rig.inport.deliver(mido.Message("note_on", note=48, velocity=80))  # words as long as any
    page.wait_for_function("document.getElementById('waiting').textContent.startsWith("
                           "'holding')")
    boxes = page.evaluate("[...document.querySelectorAll('header > *')]"
                          ".map(e => e.getBoundingClientRect()).filter(r => r.height > 0)"
                          ".map(r => [r.top, r.bottom])")
    height = page.evaluate("document.querySelector('header').getBoundingClientRect().height")
    # one line: a horizontal line crosses every item, and the header is one item high
    assert max(t for t, _ in boxes) < min(b for _, b in boxes) and height < 70, (boxes, height)
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    rig.inport.deliver(mido.Message("note_off", note=48))
    page.context.close()


def test_what_it_waits_for_in_words(browser, rig):
    page = open_page(browser, rig.url)
    words = "document.getElementById('waiting').textContent"
    page.wait_for_function(f"{words}.startsWith('listening')")
    rig.inport.deliver(mido.Message("note_on", note=48, velocity=80))
    page.wait_for_function(f"{words}.startsWith('holding: C3 is down')")
    rig.inport.deliver(mido.Message("note_on", note=52, velocity=80))
    page.wait_for_function(f"{words}.startsWith('holding: C3 and E3 are down')")
    rig.inport.deliver(mido.Message("note_off", note=48))
    rig.inport.deliver(mido.Message("note_off", note=52))
    answered(rig)
    page.click("#mute")
    page.wait_for_function(f"{words}.startsWith('muted')")
    page.click("#mute")
    page.wait_for_function(f"{words}.startsWith('listening')")
    page.context.close()


def test_the_page_shows_its_url_as_a_qr_code_and_so_does_the_terminal(browser, model):
    zxingcpp = pytest.importorskip("zxingcpp")
    r = UiRig(model, host="0.0.0.0")
    try:
        assert "?token=" in r.url
        page = open_page(browser, r.url)
        page.wait_for_function("document.getElementById('qr').complete && "
                               "document.getElementById('qr').naturalWidth > 0")
        assert page.text_content("#url") == r.url
        gray = page.evaluate("""() => {
            const img = document.getElementById('qr'), n = img.naturalWidth;
            const c = document.createElement('canvas'); c.width = c.height = n;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, n, n).data, out = [];
            for (let i = 0; i < d.length; i += 4) out.push(d[i]);
            return [n, out];
        }""")
        n, pixels = gray
        image = np.array(pixels, dtype=np.uint8).reshape(n, n)
        assert [b.text for b in zxingcpp.read_barcodes(image)] == [r.url]
        page.context.close()
        # the terminal's: light modules drawn as blocks, two rows a line
        text = r.server.qr()
        assert text == qr_text(r.url)
        assert decode_terminal(text.splitlines()) == [r.url]
    finally:
        r.close()


def test_no_qr_in_the_terminal_where_only_this_computer_can_open_it(rig):
    assert rig.server.qr() is None


def decode_terminal(lines: list[str]) -> list[str]:
    """The texts of a QR code printed as qr_text draws it (light modules as blocks)."""
    zxingcpp = pytest.importorskip("zxingcpp")
    rows = []
    for line in lines:
        rows.append([c in "█▀" for c in line])
        rows.append([c in "█▄" for c in line])
    width = max(len(r) for r in rows)
    modules = np.array([r + [True] * (width - len(r)) for r in rows], dtype=np.uint8) * 255
    image = np.pad(np.kron(modules, np.ones((4, 4), dtype=np.uint8)), 16, constant_values=255)
    return [b.text for b in zxingcpp.read_barcodes(image)]


def test_companion_prints_the_qr_code_where_a_tablet_can_open_the_page(tmp_path):
    """`companion demo --ui 0.0.0.0:0`: the URL, with its token, and under it the same URL as a
    QR code that reads back."""
    import re
    import subprocess
    import sys
    import threading

    from support import ROOT

    lines: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", "companion", "demo", "--ui", "0.0.0.0:0"],
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                   PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout),
                     daemon=True).start()
    try:
        end = time.monotonic() + 30
        while not any(line.startswith("call 1 of") for line in lines):
            assert time.monotonic() < end and proc.poll() is None, "\n".join(lines)
            time.sleep(0.1)
        url = next(m.group(1) for line in lines
                   if (m := re.search(r"control surface: (http://\S+)", line)))
        assert "?token=" in url
        qr = [line for line in lines if line and set(line) <= set("█▀▄ ")]
        assert decode_terminal(qr) == [url]
    finally:
        proc.terminate()
        proc.wait(15)
