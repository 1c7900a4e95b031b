"""`companion demo`: the built-in performer, the loopback, the live view."""

from __future__ import annotations

import io

from support import make_config

from companion.commands import demo
from companion.encoding.phrases import builtin


def test_builtin_calls_are_short_phrases():
    calls = builtin()
    assert len(calls) >= 3
    for c in calls:
        assert 3 <= len(c.notes) <= 32
        assert max(n.start + n.duration for n in c.notes) <= 16


def test_demo_plays_a_call_and_shows_the_answer(model_pkg):
    cfg = make_config(model_pkg, listen={"tempo_bpm": 300, "phrase_end_beats": 1},
                      answer={"max_beats": 4, "seed": 1})
    out = io.StringIO()
    assert demo.run(cfg, out, calls=builtin()[2:3]) == 0  # the one with chords
    text = out.getvalue()
    assert "performer" in text and "chord top now" in text
    assert "phrase end" in text and "answer note 1," in text
    assert text.rstrip().endswith("demo over")
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if "phrase end" in line)
    assert not any("answer note" in line for line in lines[:end])


def test_an_answer_note_that_leaves_before_its_announcement_is_shown_after_it():
    from companion.realtime.clock import RealClock

    out = io.StringIO()
    view = demo.View(out, RealClock())
    view.line("companion", "C4 answer note 1", answer=1)  # the scheduler thread was first
    view.line("performer", "D4 vel 90")
    view.line("companion", "phrase end: answer of 2 notes", answer=1, announce=True)
    view.line("companion", "E4 answer note 2", answer=1)
    texts = [ln.split(maxsplit=3)[3] for ln in out.getvalue().splitlines()]
    assert texts == ["D4 vel 90", "phrase end: answer of 2 notes", "C4 answer note 1",
                     "E4 answer note 2"]
