"""Trading bars with the companion: `python -m bench.trading [--quick] [--json]`.

A performer trades 1, 2 and 4 bars of 4/4 with the companion at each tempo of ``--tempi``:
a call of N bars, then N bars of rest in which the companion should answer, then the next
call on the next bar line whatever the companion did (a performer trading bars does not
wait), ``--rounds`` rounds per tune, one engine per tune as in one session. The calls are
cut from Nottingham tunes in 4/4 (none of the shipped models trained on them): each starts
with a note on a downbeat and sounds up to its last bar line (the note sounding there is
clipped to it). They are performed as ``bench.defaults.performance`` plays a call (onsets
and releases moved by up to ``--jitter-ms``, notes sounding ``LEGATO`` of their written
length), on the performer's grid (bar 0 is a bar of count-in, the first call starts on
bar 1), with velocities ``VELOCITY`` and ``ACCENT`` more on a bar's first beat (half that on
its third), plus or minus ``VELOCITY_SPREAD``. Each tune is traded once as written and once
with a pause inside every call (``with_rest``).

Everything runs through the real Engine on the virtual clock (a ``VirtualClock`` and a
``VirtualScheduler``, as ``companion respond`` drives it), polled at every phrase-end
deadline as the live loop is, under each condition of ``CONDITIONS``: no clock (``time.tempo:
auto``), ``time.meter: 4`` or not; a MIDI clock at the performer's tempo (Start at time 0,
then 24 ticks a beat, on the performer's grid); a Link session (``GridSession``, a session
on the virtual clock with the performer's tempo and bars).

Figures per condition and tempo (``score`` decides them call by call): ``calls`` traded as
written; ``answered``: an answer was decided after the call's last onset and before the
next call's first; ``on bar``: its first note on the bar line the call's bars end on (within
``ON_BAR_BEATS``), share of the calls; ``cut``: answers with notes still to start when the
next call began (the engine's barge-in, or notes planned from that call's first onset or
its bar line on, within ``ON_BAR_BEATS``; after the last call, the bar line the next would
start on); ``in tempo``: answers in a beat
(the engine's when it answered) within ``TEMPO_TOLERANCE`` of the performer's; ``into
pause``: paused calls with an answer decided inside them (before their last onset); ``wait``:
median beats from the call's last note-off to the answer's first note; ``ready``: answers
decided before their first note was due.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mido
import numpy as np

from bench.defaults import JITTER_MS, LEGATO, TEMPI, Setting, _spread, performance
from companion import config as config_mod
from companion.commands.respond import deliver
from companion.config import Config
from companion.encoding.melody import Melody, read_melodies
from companion.encoding.phrases import Phrase, PhraseNote
from companion.engine.engine import Answer, Engine
from companion.engine.midiclock import TICKS_PER_BEAT
from companion.engine.model import StepModel
from companion.realtime.clock import VirtualClock
from companion.realtime.scheduler import VirtualScheduler

BARS = (1, 2, 4)
BEATS_PER_BAR = 4
ROUNDS = 4
TUNES = 8
#: ``--quick``: this many tunes and rounds.
QUICK = (2, 2)
#: An answer is on the bar line within this many beats of it.
ON_BAR_BEATS = 1 / 16
#: An answer is in tempo within this share of the performer's tempo.
TEMPO_TOLERANCE = 0.04
VELOCITY = 76
ACCENT = 12
VELOCITY_SPREAD = 4
#: The pauses: rests of these many beats, taken in turn by the calls of a tune.
RESTS = (1.0, 2.0)


@dataclass(frozen=True)
class Condition:
    """How the performer and the companion share time: config keys over the base config,
    and the external time the engine hears (None, "midi" clock or "link" session)."""

    name: str
    keys: dict = field(default_factory=dict)
    sync: str | None = None

    def config(self, base: Config) -> Config:
        return Setting(self.name, self.keys).config(base)


CONDITIONS = (
    Condition("no clock"),
    Condition("no clock, meter 4", {"time.meter": 4}),
    Condition("MIDI clock", {"time.clock": "follow"}, "midi"),
    Condition("MIDI clock, meter 4", {"time.clock": "follow", "time.meter": 4}, "midi"),
    Condition("Link", {"time.clock": "auto", "time.link_quantum": BEATS_PER_BAR}, "link"),
)


# -- calls ---------------------------------------------------------------------------------


def in_common_time(melody: Melody) -> bool:
    """Every note of the melody lies in a known bar of four quarters (4/4, 2/2)."""
    onsets, lengths = melody.bars()
    return len(melody) > 0 and bool(np.all(np.isfinite(onsets)) and np.all(lengths == 4.0))


def bar_phrases(melody: Melody, bars: int, count: int,
                rng: np.random.Generator) -> list[Phrase]:
    """Up to ``count`` calls of ``bars`` bars from a melody in 4/4, one after another: each
    starts with a note on a downbeat and sounds up to its last bar line (the note sounding
    there is clipped to it); none from a melody in another meter. Beats from the call's
    first downbeat; velocities ``VELOCITY``, ``ACCENT`` more on a bar's first beat and half
    that on its third, plus or minus ``VELOCITY_SPREAD``."""
    if not in_common_time(melody):
        return []
    pitches, onsets = melody.pitches, np.asarray(melody.onsets, np.float64)
    ends = onsets + np.asarray(melody.durations, np.float64)
    bar_starts = onsets - melody.bars()[0]
    downbeats = [float(s) for s in onsets[np.abs(onsets - bar_starts) < 1e-6]]
    span = bars * BEATS_PER_BAR
    out: list[Phrase] = []
    after = -math.inf
    for s in downbeats:
        if s < after - 1e-6:
            continue
        inside = np.flatnonzero((onsets >= s - 1e-6) & (onsets < s + span - 1e-6))
        if len(inside) < 2 or ends[inside[-1]] < s + span - 1e-6:
            continue  # a rest before its last bar line: the call would not fill its bars
        notes = []
        for i in inside:
            start = float(onsets[i]) - s
            in_bar = start % BEATS_PER_BAR
            accent = ACCENT if in_bar < 1e-6 else ACCENT // 2 if abs(in_bar - 2) < 1e-6 else 0
            vel = VELOCITY + accent + int(rng.integers(-VELOCITY_SPREAD, VELOCITY_SPREAD + 1))
            notes.append(PhraseNote(int(pitches[i]), start,
                                    min(float(ends[i]) - s, span) - start, vel))
        out.append(Phrase(f"{melody.name} beats {s:g}-{s + span:g}", notes))
        after = s + span
        if len(out) == count:
            break
    return out


def rest_span(bars: int, rest: float) -> tuple[float, float]:
    """Where a call's pause lies (beats from its start): ``rest`` beats ending on its middle
    bar line, or for a call of one bar on beat ``1 + rest`` (the rest starts after its first
    beat)."""
    end = bars * BEATS_PER_BAR / 2 if bars > 1 else 1.0 + rest
    return end - rest, end


def with_rest(call: Phrase, bars: int, rest: float) -> Phrase:
    """The call with a pause of ``rest`` beats inside it (``rest_span``), not at its end:
    notes sounding into the pause end where it begins, notes starting in it are left out,
    and one still sounding at its end is struck again there."""
    a, b = rest_span(bars, rest)
    notes = []
    for n in call.notes:
        end = n.start + n.duration
        if n.start < a - 1e-9:
            notes.append(PhraseNote(n.pitch, n.start, min(end, a) - n.start, n.velocity))
        elif n.start >= b - 1e-9:
            notes.append(n)
        elif end > b + 1e-9:
            notes.append(PhraseNote(n.pitch, b, end - b, n.velocity))
    return Phrase(f"{call.name} (rest {rest:g} beats)", notes)


def tunes_from(folder: Path, count: int) -> list[Melody]:
    """Up to ``count`` melodies in 4/4 with a call of four bars, from the MIDI files of
    ``folder`` spread evenly over it (then the rest, in order)."""
    files = sorted(folder.glob("*.mid"))
    spread = _spread(files, 4 * count)
    out: list[Melody] = []
    for f in spread + [f for f in files if f not in set(spread)]:
        melodies = read_melodies(f)
        if melodies and bar_phrases(melodies[0], max(BARS), 1, np.random.default_rng(0)):
            out.append(melodies[0])
            if len(out) == count:
                break
    return out


# -- performing ----------------------------------------------------------------------------


@dataclass
class Call:
    """One call as performed, in seconds on the session's clock."""

    start: float  # the bar line it starts on
    end: float  # the bar line its bars end on: where its answer belongs
    first_on: float
    last_on: float
    last_off: float
    next_on: float  # the next call's first onset; after the last call, its bar line
    next_bar: float  # the bar line the next call starts on
    paused: bool


def perform(calls: Sequence[Phrase], bars: int, bpm: float, jitter_s: float,
            rng: np.random.Generator, paused: bool = False,
            ) -> tuple[list[tuple[float, mido.Message]], list[Call]]:
    """Trading: call ``k`` starts on bar ``1 + 2 * bars * k`` of the performer's grid (bar 0
    is the count-in), its answer's bars follow; the messages in time order, and the calls."""
    beat = 60.0 / bpm
    bar = BEATS_PER_BAR * beat
    events: list[tuple[float, mido.Message]] = []
    out: list[Call] = []
    for k, call in enumerate(calls):
        start = (1 + 2 * bars * k) * bar
        played, last_off = performance(call, bpm, jitter_s, rng, at=start)
        ons = [t for t, m in played if m.type == "note_on"]
        if out:
            out[-1].next_on = ons[0]
        out.append(Call(start, start + bars * bar, ons[0], ons[-1], last_off,
                        start + 2 * bars * bar, start + 2 * bars * bar, paused))
        events += played
    return events, out


def clock_ticks(bpm: float, until: float) -> list[tuple[float, mido.Message]]:
    """A MIDI clock at ``bpm`` on the performer's grid: Start at 0, then a tick every
    1/24 beat from 0 to ``until``."""
    tick = 60.0 / bpm / TICKS_PER_BEAT
    return [(0.0, mido.Message("start"))] + [
        (k * tick, mido.Message("clock")) for k in range(int(until / tick) + 1)]


class GridSession:
    """A Link session on the virtual clock (the LinkSession protocol of
    companion.engine.timekeeper): beat 0 at time 0, ``bpm``, bars of ``quantum`` beats, one
    peer, its transport never stopped; proposals are ignored."""

    def __init__(self, bpm: float, quantum: float = BEATS_PER_BAR):
        self.beat, self.quantum = 60.0 / bpm, float(quantum)

    def present(self, t: float) -> bool:
        return True

    def stopped(self, t: float) -> bool:
        return False

    def beat_s(self, t: float) -> float:
        return self.beat

    def beats_at(self, t: float) -> float:
        return t / self.beat

    def _next(self, t: float, every: float) -> float:
        return math.ceil(self.beats_at(t) / every - 1e-9) * every * self.beat

    def next_beat(self, t: float) -> float:
        return self._next(t, 1.0)

    def next_bar(self, t: float) -> float:
        return self._next(t, self.quantum)

    def propose(self, bpm: float) -> None:
        pass

    def describe(self, t: float) -> str:
        return f", on the Link session at {60.0 / self.beat:.1f} BPM with 1 peer"


@dataclass
class Reply:
    """An answer the engine decided: when, its notes' planned onsets, the tempo it was
    placed in, and the notes it had started when a call cut it (None: not cut)."""

    id: int
    decided: float
    onsets: list[float]
    bpm: float
    barged: int | None = None


#: ``Engine``'s constructor, or a stand-in with the same one (the tests' fake engines).
EngineFactory = Callable[..., Any]


def trade(model: StepModel | None, cfg: Config, events: list[tuple[float, mido.Message]],
          end: float, seed: int, bpm: float, sync: str | None = None,
          make_engine: EngineFactory = Engine) -> list[Reply]:
    """The performance into a fresh engine on the virtual clock, polled at every deadline
    before each message as the live loop does, up to ``end``; with ``sync``, a MIDI clock
    (``clock_ticks``) or a Link session (``GridSession``) at ``bpm``. The answers decided."""
    clock = VirtualClock()
    player = VirtualScheduler(lambda m: None, clock, cfg.midi.output_channel - 1)
    barged: dict[int, int] = {}

    def on_event(kind: str, t: float, **data: Any) -> None:
        if kind == "barge_in":
            barged[data["answer"]] = data["played"]

    engine = make_engine(model, cfg, player, clock, seed, on_event=on_event)
    if sync == "midi":
        events = sorted(clock_ticks(bpm, end) + events, key=lambda e: e[0])
    elif sync == "link":
        engine.use_link(GridSession(bpm))
    replies: list[Reply] = []

    def poll_until(t: float) -> None:
        while (d := engine.next_deadline()) is not None and d <= t:
            at = max(d, clock.now())
            player.advance(at)
            clock.set(at)
            a: Answer | None = engine.poll(at)
            if a is not None:
                replies.append(Reply(a.id, a.decided, [n.start for n in a.notes],
                                     60.0 / engine.beat_s))

    for t, msg in events:
        poll_until(t)
        deliver(engine, player, clock, t, msg)
    poll_until(end)
    player.flush()
    for r in replies:
        r.barged = barged.get(r.id)
    return replies


# -- figures -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one call was answered."""

    paused: bool
    answered: bool = False
    into_pause: bool = False  # an answer decided inside the call (before its last onset)
    on_bar: bool = False
    cut: bool = False
    in_tempo: bool = False
    wait_beats: float | None = None
    ready: bool = False


def score(calls: Sequence[Call], replies: Sequence[Reply], bpm: float) -> list[Outcome]:
    """Each call's outcome: the answers decided from its first onset to the next call's
    are its own; one decided before its last onset went into the call, the first after it
    is its answer. It is cut when the next call stopped it with notes still to start, or
    had notes planned from the next call's first onset or bar line (within
    ``ON_BAR_BEATS``) on."""
    beat = 60.0 / bpm
    out = []
    for c in calls:
        mine = [r for r in replies if c.first_on <= r.decided < c.next_on]
        o = Outcome(c.paused, into_pause=any(r.decided < c.last_on for r in mine))
        after = [r for r in mine if r.decided >= c.last_on]
        if after:
            a = after[0]
            o.answered = True
            o.in_tempo = abs(a.bpm / bpm - 1.0) <= TEMPO_TOLERANCE
            late = min(c.next_on, c.next_bar - ON_BAR_BEATS * beat)
            o.cut = ((a.barged is not None and a.barged < len(a.onsets))
                     or any(t >= late for t in a.onsets))
            if a.onsets:
                first = a.onsets[0]
                o.on_bar = abs(first - c.end) <= ON_BAR_BEATS * beat
                o.wait_beats = (first - c.last_off) / beat
                o.ready = a.decided < first
        out.append(o)
    return out


@dataclass
class Row:
    """Figures over the calls of one condition at one tempo (``bpm``) or one length
    (``bars``), None where the row takes them all; shares of the calls as written
    (``answered``, ``on_bar``), of their answers (``cut``, ``in_tempo``, ``ready``; ``wait``
    is their median in beats), of the paused calls (``into_pause``)."""

    condition: str
    bpm: float | None
    bars: int | None
    calls: int
    answered: float
    on_bar: float
    cut: float
    in_tempo: float
    paused: int
    into_pause: float
    wait_beats: float
    ready: float


def summary(condition: str, bpm: float | None, bars: int | None,
            outcomes: Sequence[Outcome]) -> Row:
    plain = [o for o in outcomes if not o.paused]
    paused = [o for o in outcomes if o.paused]
    answers = [o for o in plain if o.answered]
    waits = [o.wait_beats for o in answers if o.wait_beats is not None]

    def share(items: Sequence[Outcome], what: str) -> float:
        return sum(getattr(o, what) for o in items) / len(items) if items else math.nan

    return Row(condition, bpm, bars, len(plain), share(plain, "answered"),
               share(plain, "on_bar"), share(answers, "cut"), share(answers, "in_tempo"),
               len(paused), share(paused, "into_pause"),
               float(np.median(waits)) if waits else math.nan, share(answers, "ready"))


def measure(model: StepModel | None, base: Config, tunes: Sequence[Melody],
            conditions: Sequence[Condition] = CONDITIONS, tempi: Sequence[float] = TEMPI,
            bars: Sequence[int] = BARS, rounds: int = ROUNDS, jitter_ms: float = JITTER_MS,
            seed: int = 0, make_engine: EngineFactory = Engine,
            ) -> dict[tuple[str, float, int], list[Outcome]]:
    """Every tune traded in every condition, at every tempo, in calls of every length of
    ``bars``, as written and paused: the outcomes by (condition, tempo, bars). The same
    performances in every condition."""
    jitter_s = jitter_ms / 1000.0
    calls: dict[tuple[int, int], list[Phrase]] = {
        (n, i): bar_phrases(tune, n, rounds, np.random.default_rng((seed, i)))
        for n in bars for i, tune in enumerate(tunes)}
    out: dict[tuple[str, float, int], list[Outcome]] = {}
    for cond in conditions:
        cfg = cond.config(base)
        for bpm in tempi:
            for n in bars:
                got = out.setdefault((cond.name, float(bpm), n), [])
                for i in range(len(tunes)):
                    written = calls[n, i]
                    if not written:
                        continue
                    for paused in (False, True):
                        played = ([with_rest(c, n, RESTS[k % len(RESTS)])
                                   for k, c in enumerate(written)] if paused else written)
                        rng = np.random.default_rng((seed, int(bpm), n, i, paused))
                        events, performed = perform(played, n, bpm, jitter_s, rng, paused)
                        replies = trade(model, cfg, events, performed[-1].next_on,
                                        seed + i, bpm, cond.sync, make_engine)
                        got += score(performed, replies, bpm)
    return out


def rows(outcomes: dict[tuple[str, float, int], list[Outcome]], by: str) -> list[Row]:
    """The figures per condition and tempo (``by`` "bpm") or per condition and length
    ("bars"), in the order measured."""
    groups: dict[tuple[str, float | int], list[Outcome]] = {}
    for (cond, bpm, n), got in outcomes.items():
        groups.setdefault((cond, bpm if by == "bpm" else n), []).extend(got)
    return [summary(cond, key if by == "bpm" else None, key if by == "bars" else None, got)
            for (cond, key), got in groups.items()]


def _json(row: Row) -> dict:
    """The row for JSON: a figure over no calls (NaN) is null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(row).items()}


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0%}"


def table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table."""
    first = "BPM" if rows and rows[0].bpm is not None else "bars"
    lines = [f"| condition | {first} | calls | answered | on the bar line | cut | in tempo | "
             "paused calls | into the pause | wait (median beats) | ready |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        key = f"{r.bpm:g}" if r.bpm is not None else f"{r.bars}"
        wait = "-" if math.isnan(r.wait_beats) else f"{r.wait_beats:.2f}"
        lines.append(f"| {r.condition} | {key} | {r.calls} | {_pct(r.answered)} | "
                     f"{_pct(r.on_bar)} | {_pct(r.cut)} | {_pct(r.in_tempo)} | {r.paused} | "
                     f"{_pct(r.into_pause)} | {wait} | {_pct(r.ready)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.data import ORIGIN, nottingham_dir

    p = argparse.ArgumentParser(prog="python -m bench.trading",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", metavar="F", help="base config (default: the shipped defaults)")
    p.add_argument("--model", metavar="DIR", help="model package (default: the config's)")
    p.add_argument("--source", metavar="DIR",
                   help="a folder of MIDI tunes (default: the Nottingham melodies)")
    p.add_argument("--tunes", type=int, default=TUNES, help="tunes in 4/4 taken")
    p.add_argument("--rounds", type=int, default=ROUNDS, help="calls per tune and length")
    p.add_argument("--quick", action="store_true",
                   help=f"a small run: {QUICK[0]} tunes, {QUICK[1]} rounds")
    p.add_argument("--tempi", type=float, nargs="+", default=list(TEMPI), metavar="BPM")
    p.add_argument("--bars", type=int, nargs="+", default=list(BARS), metavar="N")
    p.add_argument("--condition", action="append", metavar="NAME",
                   choices=[c.name for c in CONDITIONS],
                   help="a condition to measure (repeatable; default: all)")
    p.add_argument("--jitter-ms", type=float, default=JITTER_MS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.quick:
        args.tunes, args.rounds = QUICK
    folder = Path(args.source) if args.source else nottingham_dir()
    try:
        base = config_mod.load(args.config) if args.config else config_mod.from_dict({})
        if args.model:
            config_mod.override(base, "model", str(Path(args.model).resolve()))
        model = StepModel(base.model_dir())
        if not any(folder.glob("*.mid")):
            raise OSError(f"{folder}: no MIDI tunes (*.mid) there"
                          + ("" if args.source else f"; {ORIGIN}"))
        tunes = tunes_from(folder, args.tunes)
    except (config_mod.ConfigError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not tunes:
        print(f"error: {folder}: no tune in 4/4 with a call of {max(BARS)} bars",
              file=sys.stderr)
        return 2
    conditions = [c for c in CONDITIONS if args.condition is None or c.name in args.condition]
    got = measure(model, base, tunes, conditions, args.tempi, args.bars, args.rounds,
                  args.jitter_ms, args.seed)
    by_bpm, by_bars = rows(got, "bpm"), rows(got, "bars")
    if args.json:
        print(json.dumps({"tunes": [t.name for t in tunes], "source": str(folder),
                          "rounds": args.rounds, "bars": args.bars,
                          "jitter_ms": args.jitter_ms, "model": str(base.model_dir()),
                          "rows": [_json(r) for r in by_bpm],
                          "by_bars": [_json(r) for r in by_bars]}))
    else:
        print(f"{len(tunes)} tunes in 4/4 from {folder}, trading {'/'.join(map(str, args.bars))}"
              f" bars, {args.rounds} rounds each, as written and paused; jitter "
              f"+-{args.jitter_ms:g} ms, legato {LEGATO:g}; model {base.model_dir()}")
        print()
        print(table(by_bpm))
        print()
        print(table(by_bars))
    return 0


if __name__ == "__main__":
    sys.exit(main())
