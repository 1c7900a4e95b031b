"""Helpers for the tests (imported as `support`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import mido

from companion.engine.engine import Answer, Engine
from companion.midi.jacklib import SETTLE_S, close_in_turn
from companion.realtime.clock import VirtualClock
from companion.realtime.scheduler import VirtualScheduler

if TYPE_CHECKING:
    from companion.config import Config
    from companion.encoding.melody import Melody
    from companion.engine.model import StepModel

ROOT = Path(__file__).resolve().parents[1]

#: The music21 corpus whose first tunes make the tests' vocabulary and calls: it ships with
#: music21, so these tests need no data beside the repository.
TUNES = "music21:oneills1850"


class Heard:
    """What a test's MIDI input port receives, stamped on arrival (its callback side)."""

    def __init__(self) -> None:
        self.got: list[tuple[float, object]] = []
        self.lock = threading.Lock()

    def _heard(self, msg) -> None:
        with self.lock:
            self.got.append((time.monotonic(), msg))

    def received(self) -> list:
        with self.lock:
            return list(self.got)


def delete_rtmidi(port) -> None:
    """Closes a python-rtmidi port, then its client SETTLE_S later, as the companion closes its
    own: a JACK2 client closed while its notification thread still handles the port just
    unregistered crashes the process."""
    close_in_turn([port.close_port, port.delete], SETTLE_S)


@cache
def tunes(first: int, count: int) -> tuple[Melody, ...]:
    """Melodies of TUNES numbered ``first`` .. ``first + count - 1`` (1-based), read with
    companion.encoding.melody like any corpus file, one tune at a time."""
    from music21 import converter

    from companion.encoding.melody import melody_from_score
    from train.corpus import resolve

    opus = resolve(TUNES)[0]  # tunes 1-50
    if first < 1 or first + count - 1 > 50:
        raise ValueError(f"tunes {first}..{first + count - 1}: {opus.name} holds tunes 1-50")
    return tuple(melody_from_score(converter.parse(str(opus), number=i), f"{opus.name}#{i}")
                 for i in range(first, first + count))


def write_tune(path: Path, number: int) -> Path:
    """Tune ``number`` of TUNES as a one-track MIDI file at ``path`` (a call file)."""
    from companion.encoding.phrases import Phrase, PhraseNote
    from companion.midi.files import write_tracks

    m = tunes(number, 1)[0]
    notes = [PhraseNote(int(p), float(s), float(d), int(v))
             for p, s, d, v in zip(m.pitches, m.onsets, m.durations, m.velocities, strict=True)]
    write_tracks(path, [("call", Phrase(m.name, notes).messages())], 120.0)
    return path


def _config_data(model_pkg: Path | None, sections: dict) -> dict:
    """``section={key: value}`` overrides as config data. A test that names
    ``listen.tempo_bpm`` or ``listen.phrase_end_beats`` plays at that tempo and waits that
    phrase end: its time.tempo and time.phrase_end are "fixed" unless it sets them."""
    data: dict = {k: dict(v) for k, v in sections.items()}
    listen, time = data.get("listen", {}), data.setdefault("time", {})
    if "tempo_bpm" in listen:
        time.setdefault("tempo", "fixed")
    if "phrase_end_beats" in listen:
        time.setdefault("phrase_end", "fixed")
    if not time:
        del data["time"]
    if model_pkg is not None:
        data["model"] = str(model_pkg)
    return data


def make_config(model_pkg: Path | None = None, **sections: dict) -> Config:
    """A Config from defaults and ``section={key: value}`` overrides, checked like a file."""
    from companion import config

    return config.from_dict(_config_data(model_pkg, sections))


def write_config(path: Path, model_pkg: Path | None = None, **sections: dict) -> Path:
    """The same config data as ``make_config``, written as a config file."""
    import yaml

    path.write_text(yaml.safe_dump(_config_data(model_pkg, sections)))
    return path


class EngineRig:
    """The engine on a virtual clock, as `companion respond` runs it: a VirtualScheduler that
    records what it sends, and time that moves only when the test moves it.

    Moving time to ``t`` first plays every answer note due by then, each at its own time,
    so what the engine hears at ``t`` finds playback where it would be live. ``sent`` holds
    (time, message) as sent; ``events`` (kind, time, data) from the engine's event hook.
    """

    def __init__(self, model: StepModel, cfg: Config, seed: int | None = 1) -> None:
        self.clock = VirtualClock()
        self.sent: list[tuple[float, mido.Message]] = []
        self.player = VirtualScheduler(lambda m: self.sent.append((self.clock.now(), m)),
                                       self.clock, 0)
        self.events: list[tuple[str, float, dict]] = []
        self.engine = Engine(model, cfg, self.player, self.clock, seed,
                             on_event=lambda k, t, **d: self.events.append((k, t, d)))
        self.beat = 60.0 / cfg.listen.tempo_bpm  # seconds: ``play`` counts in these beats

    def to(self, t: float) -> None:
        """Move time to ``t`` (never back), playing what is due on the way."""
        self.player.advance(t)
        self.clock.set(t)

    def at(self, t: float, msg: mido.Message) -> None:
        """The engine hears ``msg`` at ``t``."""
        self.to(t)
        self.engine.on_message(msg, t)

    def poll(self, t: float) -> Answer | None:
        """The engine's poll at ``t``: the answer decided then, or None."""
        self.to(t)
        return self.engine.poll(t)

    def play(self, notes: Iterable[tuple[int, float, float]], t0: float = 0.0,
             velocity: int | Callable[[int], int] = 80) -> float:
        """Play ``notes`` (pitch, start_beats, duration_beats: beats of the config's tempo)
        from ``t0`` seconds, events in time order (at one time note-offs first); the velocity
        is fixed or a function of the pitch. Returns the time of the last release."""
        beat = self.beat
        events = []
        for p, s, d in notes:
            v = velocity(p) if callable(velocity) else velocity
            events.append((t0 + s * beat, 1, mido.Message("note_on", note=p, velocity=v)))
            events.append((t0 + (s + d) * beat, 0, mido.Message("note_off", note=p)))
        events.sort(key=lambda e: (e[0], e[1]))
        for t, _, m in events:
            self.at(t, m)
        return events[-1][0]

    def until(self, t: float) -> None:
        """Every phrase end and every scheduled note up to ``t``, each at its own time."""
        while True:
            d = self.engine.next_deadline()
            if d is None or d > t:
                break
            self.poll(max(d, self.clock.now()))
        self.to(t)

    def feed(self, t: float, msg: mido.Message) -> None:
        """``msg`` at ``t`` (or now, if ``t`` is past), after every phrase end before it."""
        t = max(t, self.clock.now())
        self.until(t)
        self.engine.on_message(msg, t)

    def finish(self) -> tuple[float, Answer | None]:
        """Poll at the next deadline and play the answer out: (deadline, answer)."""
        d = self.engine.next_deadline()
        answer = self.poll(d)
        self.player.flush()
        return d, answer

    def events_of(self, kind: str) -> list[dict]:
        """The data of each event of ``kind``, with its time as ``t``."""
        return [d | {"t": t} for k, t, d in self.events if k == kind]
