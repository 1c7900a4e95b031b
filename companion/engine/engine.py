"""The call-and-response logic, free of I/O: performer's messages in, timed answer notes out.

The model state follows the music as it is heard: one ONNX step per melody note of the
call as it arrives, one per note of the answer as it is generated. An answer therefore
starts from the primed state without replaying the call, and the next call continues
from the state after the last answer note that actually sounded (a cut answer keeps
the state of each generated note for that).

Time is whatever clock the caller uses (seconds): the live companion passes callback
timestamps from the monotonic clock, `companion respond` and the tests a virtual one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from companion import live_controls
from companion.config import Config, ConfigError, override
from companion.encoding import meter
from companion.encoding.curves import curve
from companion.encoding.key import STABLE, KeyBias, KeyEstimator
from companion.encoding.names import key_name, note_name, parse_key
from companion.engine.accompany import Accompanist, settings_from
from companion.engine.along import PlayAlong
from companion.engine.grid import Grid
from companion.engine.harmony import HarmonyModel
from companion.engine.listener import NEW_NOTE, NOTHING, TOP_CHANGED, Listener, MelodyNote
from companion.engine.midiclock import CLOCK_TYPES, ClockFollower
from companion.engine.model import State, StepModel
from companion.engine.protocols import Clock, Player, TimedNote
from companion.engine.sampler import Sampler
from companion.engine.style import StyleMemory
from companion.engine.tempo import Pace
from companion.engine.timekeeper import LinkSession, Timekeeper
from companion.engine.turn import (
    DEFAULT_BAR_BEATS,
    GRID_ONSETS,
    GRID_TOL_BEATS,
    GRID_TOL_S,
    LONG_NOTE_BEATS,
    RESUME_BEATS,
    BarPlan,
    Turn,
    grid_shift,
    plan,
)

#: A runaway guard: no answer has more notes than this (16 per beat at 256 beats).
MAX_ANSWER_NOTES = 4096
#: Trading bars, an answer's last note is over this many beats before its bars end.
ANSWER_GAP_BEATS = 0.05

#: The settings that may change while playing (by MIDI controls, the page and OSC), as
#: config keys: those of the registry of live controls. Each is checked as in config.yaml,
#: by the field's own range or choices: none has a check across keys.
LIVE_SETTINGS = live_controls.LIVE_SETTINGS

#: ``on_event(kind, t, **data)``; kinds: "note_in" (a melody note, after the model
#: advanced: ``received`` = callback time, ``pitch``, ``velocity``, ``steps``, ``chord``:
#: True when a higher note of a chord replaced the melody note just heard),
#: "phrase_end" (t = answer generated; ``deadline``, ``decided``, ``answer`` id, ``start``
#: of its first note, ``beats``, ``notes``, ``call`` = melody notes heard),
#: "barge_in" (``answer``, ``played``), "reset" (the model restarted after a silence),
#: "held" (a call not answered: the Link session's transport is stopped; ``call``),
#: "stuck" (keys that stopped counting as held at the held limit, listen.held_limit_beats:
#: ``keys`` pressed without their note-off, ``pedal`` the keys the sustain pedal held, each
#: (channel 0..15, note); ``beats``, the limit),
#: "chord" (accompanying: a new chord decided, ``chord`` its symbol, ``beat`` its beat's time,
#: ``decided``, ``notes`` each [pitch, start, duration, velocity, channel 0..15]).
EventHook = Callable[..., None]
#: Loads the harmony package of ``accompany.model`` (called once, when accompanying starts).
HarmonyLoader = Callable[[], HarmonyModel]


@dataclass
class Answer:
    id: int
    call: list[MelodyNote]
    start: float  # first note's onset, on the beat grid of the call
    beats: float  # planned length
    decided: float  # when the phrase end was decided
    call_last: tuple[int, float]  # the call's last melody note: pitch, onset
    call_end: float  # when the call's last key was released
    bars: BarPlan | None = None  # trading bars: the bar line it starts on, the call's bars
    notes: list[TimedNote] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # the curve token of each note
    #: states[i] is the model state after answer note i (buffers reused by the next answer)
    states: list[State] = field(default_factory=list)


class Engine:
    """One performer, one model: feed it messages with ``on_message``, call ``poll`` when
    ``next_deadline`` passes; answers go to the ``player`` note by note as they are sampled.

    The engine keeps its own copy of the config: the settings changed while playing
    (``set``, ``set_muted``, ``reset_style``) never change the Config others hold.
    """

    def __init__(
        self,
        model: StepModel,
        cfg: Config,
        player: Player,
        clock: Clock,
        seed: int | None = None,
        on_event: EventHook | None = None,
        harmony: HarmonyLoader | None = None,
    ):
        self.player = player
        self.clock = clock
        self.on_event = on_event
        cfg = self._cfg = copy.deepcopy(cfg)
        lc = cfg.listen
        self.beat_s = 60.0 / lc.tempo_bpm
        ch = cfg.midi.input_channel
        self.listener = Listener(
            self.beat_s, lc.phrase_end_beats, lc.chord_window_ms / 1000.0,
            None if ch == "omni" else int(ch) - 1,
            melody=lc.melody, overlap_s=lc.legato_overlap_ms / 1000.0,
            pedal_tone_beats=lc.pedal_tone_beats, split_note=lc.split_note,
            melody_channel=lc.melody_channel - 1, held_limit_beats=lc.held_limit_beats,
        )
        self.accompaniment_key_weight = lc.accompaniment_key_weight
        self.reset_after_s = lc.reset_after_beats * self.beat_s
        self.rng = np.random.default_rng(seed)
        self._init_musicianship(cfg)
        self._init_time(cfg)
        self._model_parts(model, self.fixed_key)
        self.model_name = model.dir.name
        self._pending: tuple[StepModel, str] | None = None  # a model to swap in (use_model)
        self.steps = 0  # ONNX steps taken: the cost of listening and answering
        self.answer: Answer | None = None  # the last answer, until the next call begins
        self._answers = 0
        self._before_prev: tuple[int, float] | None = None
        self._stepped = False  # whether the last call note took a step
        self._anchor = 0.0  # first onset of the current call: origin of its beats
        self._bos_due = False  # a positional model's bos waits for the first note's position
        self._centre = 0.0  # the mean pitch of the call being answered (register_pull)
        self.last_sound = -math.inf  # when the last melody note (call or answer) ended
        self.turn = Turn()  # the performer's turns: where a call ends when trading bars
        self._plan: tuple[tuple, BarPlan | None] | None = None  # (what it was made from, it)
        self._not_end: float | None = None  # a bar line judged not the call's end
        self._not_end_bars = 0  # the call's bars up to that line: its length if it ends after
        self._learned = 0  # notes of the call in progress already learnt (a resumed call)
        self._previous_bars: int | None = None  # the turn's length before the last answer
        self.state = model.zero_state()
        self.prev: tuple[int, float] | None = None  # last melody note the state has seen
        self._restart()
        self._harmony = harmony
        self._seed = seed
        #: accompanying live (companion.engine.along): None until accompany.mode is first on
        self.along: PlayAlong | None = None
        if cfg.accompany.mode != "off":
            self._accompany()

    def _init_musicianship(self, cfg: Config) -> None:
        """Key awareness, absolute range, style memory and the repeat guard: all buffers
        and tables allocated here, once, so that a step of the answer allocates nothing."""
        kc = cfg.key
        self.range_cfg = cfg.range
        self.key_estimator = KeyEstimator(kc.half_life_beats)
        self.fixed_key = parse_key(kc.fixed) if kc.fixed is not None else None
        self.max_repeat = cfg.style.max_repeat
        self._call_tokens: list[int] = []  # curves within the call being played
        self._history: list[int] = []  # n-gram context while answering
        self._last_token = 0
        self._muted = False  # listen, learn, but do not answer

    def _init_time(self, cfg: Config) -> None:
        """Playing in time (config.time): the MIDI clock, the tempo estimate, the pace of the
        phrase end, the explicit ends of a call, the answer grid."""
        tc = cfg.time
        self.reset_after_beats = cfg.listen.reset_after_beats
        #: whose beat the engine follows (a MIDI clock, a Link session, its own tempo)
        self.timekeeper = Timekeeper(tc, cfg.listen.tempo_bpm)
        #: whether the input port's clock messages count (not when a clock port is set)
        self.clock_from_input = tc.clock_port is None
        lst = self.listener
        lst.sustain_holds = tc.sustain_holds
        lst.end_on_pedal_release = tc.end_on_pedal_release
        lst.end_cc, lst.end_note = tc.end_cc, tc.end_note
        if tc.phrase_end == "adaptive":
            lst.pace = Pace(tc.phrase_end_ioi, tc.phrase_end_min_s, tc.phrase_end_max_s,
                            tc.pace_notes)

    def _model_parts(self, model: StepModel, key: tuple[int, int] | None) -> None:
        """What belongs to one model's vocabulary and state: the sampler and its tables, the
        key bias (biased to ``key``), the style memory, the answer grid, the state buffers."""
        cfg = self._cfg
        ac, sc, tc = cfg.answer, cfg.style, cfg.time
        self.model = model
        self.vocab = model.vocab
        self.sampler = Sampler(self.vocab, self.rng, ac.temperature, ac.top_p)
        self.pitch_diff = self.sampler.pitch_diff
        self.time_diff = self.sampler.time_diff
        self.key_bias = KeyBias(self.pitch_diff, self.sampler.playable, cfg.key.strength)
        self.key_bias.key = key
        self.style = StyleMemory(self.vocab.size, sc.order, sc.weight, sc.memory)
        self._scores = np.empty(self.vocab.size, dtype=np.float64)
        self._moved = np.empty(self.vocab.size, dtype=np.float64)  # register_pull's buffer
        self.grid = None if tc.quantize == "off" else Grid(tc.quantize, self.time_diff, tc.swing)
        self._pool: list[State] = []  # per-answer-note state buffers, reused
        self._before = model.zero_state()  # before the last call step: a chord's top may change
        self._base = model.zero_state()  # state after the call, before its answer

    # -- switching models ---------------------------------------------------------------

    def use_model(self, model: StepModel, name: str | None = None) -> bool:
        """Answer with ``model`` (called ``name``, else its folder's name) from the next
        answer on, never within one: swapped in at once unless an answer is playing, else
        when it has played out, is cut, or the next call begins. Returns whether it is in.

        The new model starts afresh where the old one's vocabulary and state meant something:
        its state is the start state, then bos, then the call in progress (if any) heard again
        by it; the style memory (counts of the old vocabulary's curves) is empty; the answer
        grid forgets the swing heard; the last answer is not continued from. The key
        estimate, the tempo, the settings, mute and the listener go on."""
        self._pending = (model, name or model.dir.name)
        return self._swap_if_due()

    @property
    def swap_pending(self) -> bool:
        """A model given to ``use_model`` waits for the answer playing to end."""
        return self._pending is not None

    def _swap_if_due(self, relisten: bool = True) -> bool:
        """Swap the pending model in if no answer is playing; with ``relisten``, the new
        model hears the call so far (not at a call's first note: its caller advances it)."""
        if self._pending is None:
            return False
        a = self.answer
        if a is not None and self.player.busy(a.id):
            return False
        (model, name), self._pending = self._pending, None
        self._model_parts(model, self.key_bias.key)
        self.model_name = name
        self.answer = None
        self._restart()
        self._call_tokens.clear()
        if relisten:
            for note in self.listener.notes:  # the call so far, heard by the new model
                self._advance(note)
        if self.on_event is not None:
            self.on_event("model", self.clock.now(), name=name, path=str(model.dir))
        return True

    # -- settings changed while playing --------------------------------------------------

    def set(self, name: str, value: Any) -> Any:
        """Set ``name`` (one of LIVE_SETTINGS) to ``value`` with config.yaml's check; the value
        as kept (a number made float) is returned. Anything else is a ConfigError naming the
        key, and nothing changes. Sampling settings apply from the next curve sampled, the
        others from the next answer. Like every change to the engine, call it on the thread
        that feeds the engine."""
        self.setting(name)  # a ConfigError unless it is one of LIVE_SETTINGS
        before = self.setting(name)
        override(self._cfg, name, value)
        cfg = self._cfg
        if name.startswith("accompany."):
            try:
                self._accompany()
            except ConfigError:
                override(cfg, name, before)
                raise
        self.sampler.temperature = cfg.answer.temperature
        self.sampler.top_p = cfg.answer.top_p
        self.style.weight = cfg.style.weight
        self.max_repeat = cfg.style.max_repeat
        self.key_bias.strength = cfg.key.strength
        self.listener.held_limit_beats = cfg.listen.held_limit_beats
        return self.setting(name)

    # -- accompanying (companion.engine.along) -----------------------------------------------

    def _accompany(self) -> None:
        """The accompaniment as ``accompany:`` says now: off stops it; on, the harmony package
        is loaded the first time (a ConfigError where there is none to load)."""
        ac = self._cfg.accompany
        if ac.mode == "off":
            self.stop_accompaniment(forget=True)
            return
        if self.along is None:
            if self._harmony is None:
                raise ConfigError("accompany.mode: no harmony package to accompany with")
            try:
                harmony = self._harmony()
            except Exception as e:  # noqa: BLE001 - ModelError, or the package's own
                raise ConfigError(f"accompany.mode: harmony package not loaded ({e})") from e
            self.along = PlayAlong(Accompanist(harmony, settings_from(self._cfg), self._seed),
                                   self.timekeeper, self.player, ac.lookahead_ms / 1000.0,
                                   self._decided)
        self.along.acc.settings = settings_from(self._cfg)

    @property
    def accompanying(self) -> bool:
        """accompany.mode is not off (and the harmony package is loaded)."""
        return self.along is not None and self._cfg.accompany.mode != "off"

    @property
    def accompany_only(self) -> bool:
        """Accompanying with accompany.during: only: the calls are never answered."""
        return self.accompanying and self._cfg.accompany.during == "only"

    def stop_accompaniment(self, forget: bool = False) -> None:
        """The accompaniment's run ends now, every note of it off (panic, mute, mode off); the
        next melody note starts another while accompany.mode is on, with what was heard of
        the tune (its key and form) unless ``forget`` (mode off)."""
        if self.along is not None and (self.along.running or forget):
            self.along.stop(forget)

    def chord_name(self) -> str:
        """The accompaniment's chord sounding now (``-``: none)."""
        return self.along.chord_name() if self.accompanying else "-"

    def _decided(self, d, at: float) -> None:
        if d.changed and d.chord is not None and self.on_event is not None:
            self.on_event("chord", self.clock.now(), chord=d.chord.name, beat=at,
                          decided=d.decided, notes=[
                              [n.pitch, at + (n.start - d.beat) * self.beat_s,
                               n.duration * self.beat_s, n.velocity, n.channel]
                              for n in d.notes])

    def setting(self, name: str) -> Any:
        """The value of one of LIVE_SETTINGS now."""
        if name not in LIVE_SETTINGS:
            raise ConfigError(f"{name}: not a setting that can change while playing (those "
                              f"are: {', '.join(LIVE_SETTINGS)})")
        section, key = name.split(".")
        return getattr(getattr(self._cfg, section), key)

    def settings_of(self, section: str) -> Any:
        """A section of the engine's own config (read only: change it with ``set``)."""
        return getattr(self._cfg, section)

    def settings(self) -> dict[str, Any]:
        """Every one of LIVE_SETTINGS and its value now."""
        return {name: self.setting(name) for name in LIVE_SETTINGS}

    @property
    def muted(self) -> bool:
        """Muted: the engine listens and learns but does not answer."""
        return self._muted

    def set_muted(self, muted: bool) -> bool:
        """Mute or unmute; True if that changed anything."""
        changed = bool(muted) != self._muted
        self._muted = bool(muted)
        if self._muted:
            self.stop_accompaniment()
        return changed

    def reset_style(self) -> None:
        """Forget the performer's style learnt so far."""
        self.style.reset()

    def on_clock(self, msg, t: float) -> None:
        """A MIDI clock message (tick, start, stop, continue, song position) received at t.
        When it shows that the clock has moved (a JACK graph that stalled), what the answer
        still has to play moves with it, so that it stays on the clock's beats."""
        moved = self.timekeeper.feed_clock(msg, t)
        if moved != 0.0:
            self.player.shift(t, moved)

    @property
    def midiclock(self) -> ClockFollower | None:
        """The MIDI clock followed (time.clock follow / auto), else None."""
        return self.timekeeper.midiclock

    def use_link(self, link: LinkSession | None) -> None:
        """Follow a Link session (companion.realtime.link.LinkFollower) while it has peers,
        after a MIDI clock (time.clock auto) if there is one."""
        self.timekeeper.use_link(link)

    def next_beat(self, t: float) -> float | None:
        """The external time's first beat at or after ``t`` (the clicks follow it); None
        without a running one."""
        return self.timekeeper.next_beat(t)

    def link_stopped(self, t: float) -> bool:
        """The Link session is followed and its transport stopped: no answer is started."""
        return self.timekeeper.link_stopped(t)

    def link_just_stopped(self, t: float) -> bool:
        """True once when the followed Link session's transport stops (the answer playing
        is then cut by the caller)."""
        return self.timekeeper.link_just_stopped(t)

    def set_beat(self, beat_s: float) -> None:
        """A new tempo: what is counted in beats follows it."""
        self.beat_s = beat_s
        self.listener.set_beat(beat_s)
        self.reset_after_s = self.reset_after_beats * beat_s

    def _follow_tempo(self, t: float, call: list[MelodyNote], lead: bool = False) -> None:
        """The beat as the timekeeper has it at ``t`` (``Timekeeper.tempo``)."""
        beat = self.timekeeper.tempo(t, call, lead)
        if beat is not None and beat != self.beat_s:
            self.set_beat(beat)

    def time_note(self, t: float) -> str:
        """For the log: what the tempo follows now."""
        return self.timekeeper.describe(t, self.beat_s)

    def _place(self, onset: float, ioi: float) -> tuple[float, float, float]:
        """An answer note at ``onset`` followed by a curve of ``ioi`` (beats): where it is
        played, the onset step to the next note, and the played time to it (grid, swing)."""
        g = self.grid
        if g is None:
            return onset, ioi, ioi
        nxt = max(g.snap(onset + ioi), onset + g.step)  # on the grid already, but for a
        at = g.place(onset)  # vocabulary with no curve that lands there
        return at, nxt - onset, g.place(nxt) - at

    @property
    def key(self) -> tuple[int, int] | None:
        """(tonic pitch class, mode) the answers are biased to; None before any evidence."""
        return self.key_bias.key

    # -- listening -------------------------------------------------------------------

    def on_message(self, msg, t: float) -> None:
        """One message from the performer, received at ``t``."""
        if msg.type in CLOCK_TYPES:
            if self.clock_from_input:
                self.on_clock(msg, t)
            return
        self._forget_stuck(t)
        code = self.listener.feed(msg, t)
        if msg.type == "note_on" and msg.velocity > 0:
            self._not_end = None  # a bar line judged not the end counts until played past
        along = self.along if self.accompanying and not self._muted else None
        if along is not None and msg.type in ("note_on", "note_off"):
            along.keys(t, bool(self.listener.held_keys()))
        if code == NOTHING:
            return
        note = self.listener.notes[-1]
        if code == NEW_NOTE:
            if len(self.listener.notes) == 1:
                self._call_starts(t)
            self._follow_tempo(t, self.listener.notes)
            self._advance(note)
            if along is not None:
                along.hear(note.pitch, note.velocity, note.time, self.beat_s)
        elif code == TOP_CHANGED:
            self._restep(note)
        if self.on_event is not None:
            self.on_event("note_in", self.clock.now(), received=t, pitch=note.pitch,
                          velocity=note.velocity, steps=self.steps, chord=code == TOP_CHANGED)

    def next_deadline(self) -> float | None:
        """When ``poll`` may find the phrase ended: trading bars, a little before the bar line
        the call may end on (``bar_plan``); else the end of the phrase-end silence (keys still
        held counted as released at the held limit); None while nothing is played."""
        p = self.bar_plan()
        d = p.decide if p is not None else self.listener.deadline()
        a = self.along.deadline() if self.along is not None else None
        return d if a is None else a if d is None else min(a, d)

    def bar_plan(self) -> BarPlan | None:
        """Where the call in progress may end when trading bars (companion.engine.turn):
        None with ``answer.start: beat``, before a call, after an explicit end, and while
        no bar is in sight (free playing: the phrase-end silence decides). A call of too
        few notes to judge is in time when the previous call was traded on bars."""
        lst = self.listener
        if self._cfg.answer.start != "bar" or not lst.notes or lst.ended_at is not None:
            return None
        last = lst.notes[-1].time
        if lst.accompaniment:
            last = max(last, lst.accompaniment[-1].time)
        made_of = (len(lst.notes), len(lst.accompaniment), last, self._not_end, self.beat_s,
                   self._anchor, self._cfg.time.meter)
        if self._plan is not None and self._plan[0] == made_of:
            return self._plan[1]
        p = None
        tk = self.timekeeper
        beat = self.beat_s
        onsets = [(n.time - self._anchor) / beat for n in lst.notes]
        tol = max(GRID_TOL_BEATS, GRID_TOL_S / beat)
        shift = grid_shift(onsets, tol) if len(onsets) >= GRID_ONSETS else None
        # too few onsets to judge the grid: in time if the previous call was traded on bars
        if (tk.external(last) is not None or shift is not None
                or (len(onsets) < GRID_ONSETS and self.turn.last_bars is not None)):
            beats_last, bar = tk.grid_at(last, self._call_beats(last) - (shift or 0.0))
            beats_first, _ = tk.grid_at(self._anchor, -(shift or 0.0))
            bar = bar or DEFAULT_BAR_BEATS
            p = plan(last, beats_last / bar, beats_first / bar, bar, beat, self._not_end)
        self._plan = (made_of, p)
        return p

    def _forget_stuck(self, t: float) -> None:
        """Keys held past the held limit at ``t`` stop counting as held: said in a "stuck"
        event."""
        keys, pedal = self.listener.forget_stuck(t)
        if (keys or pedal) and self.on_event is not None:
            self.on_event("stuck", self.clock.now(), keys=keys, pedal=pedal,
                          beats=self.listener.held_limit_beats)

    def _restart(self) -> None:
        """A fresh melody: zero state, then bos. A positional model (format 2) takes bos at
        the position of the melody's first note, so its bos step waits for that note."""
        z = self.model.zero_state()
        self.state = z
        self.prev = None
        if self.model.positional:
            self._bos_due = True
            self.logits = np.zeros(self.vocab.size, dtype=np.float32)
        else:
            self._bos_due = False
            self.logits = self.model.step(self.vocab.bos, self.state)
            self.steps += 1

    def _call_starts(self, t: float) -> None:
        """The first note of a call: settle the previous answer, maybe start afresh. Trading
        bars, a note before the bar line the answer starts on, or just after it, stops the
        answer and the call goes on (``_resume``)."""
        self._call_tokens.clear()
        a = self.answer
        if a is not None:
            if self._cfg.answer.barge_in == "stop" and self.player.busy(a.id):
                played = self.player.cancel(a.id)
                if a.bars is not None and t < a.start + RESUME_BEATS * self.beat_s:
                    self._resume(a, played, t)
                    return
                if self.on_event is not None:
                    self.on_event("barge_in", self.clock.now(), answer=a.id, played=played)
            else:
                played = self.player.started(a.id)
            self._continue_after(a, played, t)
            self.answer = None
        self._anchor = t
        self.timekeeper.call_starts(t)
        if self._swap_if_due(relisten=False):
            return  # a fresh start with the new model: nothing to continue or reset
        silence = t - self.last_sound
        if self.prev is not None and 0 < self.reset_after_s < silence:
            self._restart()
            if self.on_event is not None:
                self.on_event("reset", self.clock.now())

    def _resume(self, a: Answer, played: int, t: float) -> None:
        """The answer ``a`` stopped by a note at ``t`` that continues the call it answered
        (``turn.RESUME_BEATS``): that call goes on, from the model state after what of the
        answer sounded (``played`` notes); its turn's length does not count."""
        self.listener.resume(a.call)
        self._anchor = a.call[0].time
        self._learned = len(a.call)
        self.turn.withdrawn(self._previous_bars)
        self._continue_after(a, played, t)
        self.answer = None
        if self.on_event is not None:
            self.on_event("barge_in", self.clock.now(), answer=a.id, played=played,
                          resumed=True)

    def _continue_after(self, a: Answer, played: int, t: float) -> None:
        """The model goes on from the last answer note that sounded (none: from the call)."""
        src = a.states[played - 1] if played > 0 else self._base
        np.copyto(self.state.h, src.h)
        np.copyto(self.state.c, src.c)
        if played > 0:
            last = a.notes[played - 1]
            self.prev = (last.pitch, last.start)
            self.last_sound = min(last.end, t)
        else:
            self.prev = a.call_last
            self.last_sound = a.call_end

    def _call_beats(self, t: float) -> float:
        """Beats from the current call's first onset to ``t``, at the beat followed now."""
        return (t - self._anchor) / self.beat_s

    def _position(self, t: float) -> int:
        """The metrical position (meter.position) of an onset at ``t``."""
        return meter.position(*self.timekeeper.grid_at(t, self._call_beats(t)))

    def _advance(self, note: MelodyNote) -> None:
        self._before_prev = self.prev
        self._stepped = self.prev is not None
        if self._bos_due:  # a positional model: bos at the melody's first note
            self._bos_due = False
            self.logits = self.model.step(self.vocab.bos, self.state, self._position(note.time))
            self.steps += 1
        if self._stepped:
            np.copyto(self._before.h, self.state.h)
            np.copyto(self._before.c, self.state.c)
            self._step_curve(self.prev, note)
            if len(self.listener.notes) > 1:  # a curve within the call: the performer's style
                self._call_tokens.append(self._last_token)
        self.prev = (note.pitch, note.time)

    def _restep(self, note: MelodyNote) -> None:
        """A chord's higher note came within the window: it is the melody note after all."""
        if self._stepped:
            np.copyto(self.state.h, self._before.h)
            np.copyto(self.state.c, self._before.c)
            self._step_curve(self._before_prev, note)
            if self._call_tokens and len(self.listener.notes) > 1:
                self._call_tokens[-1] = self._last_token
        self.prev = (note.pitch, note.time)

    def _step_curve(self, prev: tuple[int, float], note: MelodyNote) -> None:
        pd, td = curve(prev[0], self._call_beats(prev[1]), note.pitch,
                       self._call_beats(note.time))
        self._last_token = self.vocab.token(pd, td)
        pos = self._position(note.time) if self.model.positional else None
        self.logits = self.model.step(self._last_token, self.state, pos)
        self.steps += 1

    # -- answering -------------------------------------------------------------------

    def poll(self, t: float) -> Answer | None:
        """At ``t``: if the phrase has ended, decide, and generate the answer into the player.
        Trading bars, the answer starts on the bar line the call ended on and lasts as many
        bars (``answer.length: call``). Accompanying, the chords stop where an answer is
        decided, else the next slot's chord is decided when it is due."""
        answer = self._poll_turn(t)
        if self.along is not None:
            if answer is not None:
                self.stop_accompaniment()
            elif self.accompanying and not self._muted:
                self.along.poll(t, self.beat_s)
        return answer

    def _poll_turn(self, t: float) -> Answer | None:
        self._swap_if_due()
        self._forget_stuck(t)
        lst = self.listener
        p = self.bar_plan()
        if p is not None:
            if t < p.decide:
                return None
            if not self._ended_on(p):
                self._not_end, self._not_end_bars = p.line, p.bars
                return None
            if self._not_end is not None:  # silent since the line before: it ended there
                p = dataclasses.replace(p, bars=self._not_end_bars)
            deadline = p.decide
            call_end = lst.silence_since if lst.silence_since is not None else p.line
        elif not lst.phrase_ended(t):
            return None
        else:
            deadline = lst.deadline()
            call_end = lst.silence_since
        accompaniment = lst.accompaniment
        call = lst.take_phrase()
        learned, self._learned, self._not_end = self._learned, 0, None
        if call_end is None:  # ended explicitly, keys still down
            call_end = t
        self.last_sound = call_end
        self._follow_tempo(t, call, lead=True)
        self._learn(call, call_end, accompaniment, learned)
        if self._muted or self.accompany_only:
            return None  # the state stays after the call, as if the answer had been cut
        if self.link_stopped(t):
            if self.on_event is not None:
                self.on_event("held", self.clock.now(), call=len(call))
            return None  # the band has stopped: as muted
        if p is not None:
            self._previous_bars = self.turn.last_bars
            self.turn.answered(p.bars)
        answer = self._generate(call, call_end, t, p)
        if self.on_event is not None:
            self.on_event("phrase_end", self.clock.now(), deadline=deadline, decided=t,
                          answer=answer.id, start=answer.start, beats=answer.beats,
                          notes=len(answer.notes), call=len(call))
        return answer

    def waiting(self, t: float) -> str:
        """What the companion waits for at ``t``, in a performer's words (the status; the
        page shows them). It only reads: the plans as last made by the engine's thread."""
        if self._muted:
            return "muted: listening, not answering"
        if self.accompany_only:
            return ("accompanying: chords under what you play" if self.along.running
                    else "accompanying: play and it follows")
        a = self.answer
        if a is not None and self.player.busy(a.id):
            if a.start > t:
                return ("answering on the bar line" if a.bars is not None
                        else "answering on the next beat")
            return ("answering to the end" if self._cfg.answer.barge_in == "keep"
                    else "answering: play to take over")
        lst = self.listener
        held = [note_name(n) for _, n in lst.held_keys()]
        if held:
            names = held[:4] + ([f"{len(held) - 4} more"] if len(held) > 4 else [])
            said = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            return f"holding: {said} {'is' if len(held) == 1 else 'are'} down"
        if lst.pedal and lst.sustained:
            return "holding: the pedal is down"
        if not lst.notes:
            return "listening: play a phrase"
        made = self._plan
        if made is not None and made[1] is not None and made[1].line > t:
            return "answering on the bar line unless you play on"
        d = lst.deadline()
        if d is not None and d > t:
            return f"answering in {d - t:.1f} s"
        return "answering now"

    def _ended_on(self, p: BarPlan) -> bool:
        """Whether the call has ended on the bar line of ``p`` (``Turn.ended``), from what is
        known just before it: how its last note sounds, and the performer's previous turn."""
        lst = self.listener
        note = lst.notes[-1]
        beat = self.beat_s
        released = lst.silence_since
        sounded = (released if released is not None else p.line) - note.time
        long_end = sounded >= LONG_NOTE_BEATS * beat - 1e-9 or (
            released is None or p.line - released <= 0.25 * beat)
        key = self.key
        stable = key is not None and (note.pitch - key[0]) % 12 in STABLE[key[1]]
        return self.turn.ended(p.bars, long_end, stable, self._not_end is not None)

    def _learn(self, call: list[MelodyNote], call_end: float,
               accompaniment: list[MelodyNote], learned: int = 0) -> None:
        """The finished call into the key estimate (each note weighted by its time to the
        next onset of its line, at most 4 beats; an accompaniment note also by
        ``listen.accompaniment_key_weight``) and, the melody only, the style memory. The
        first ``learned`` notes of the call are in the key estimate already (a call resumed
        after its answer was withdrawn), and so is the accompaniment before them."""
        if self.fixed_key is None:
            b = self.beat_s
            w = self.accompaniment_key_weight
            notes = []
            since = call[learned].time if learned < len(call) else math.inf
            for line, weight in ((call, 1.0), (sorted(accompaniment, key=lambda n: n.time), w)):
                if weight <= 0.0:
                    continue
                for i, n in enumerate(line):
                    if n.time < since:
                        continue
                    nxt = line[i + 1].time if i + 1 < len(line) else call_end
                    notes.append((n.time, n.pitch, min(max(nxt - n.time, 0.0) / b, 4.0), weight))
            notes.sort()
            est = self.key_estimator
            for t, pitch, beats, weight in notes:
                est.add(pitch, t / b, beats, weight)
            self.key_bias.key = est.estimate()
        self.style.learn(self._call_tokens)

    def key_name(self) -> str | None:
        return key_name(*self.key) if self.key is not None else None

    def _choose(self, pitch: int, lo: int, hi: int, tokens: list[int],
                gap: float | None = None, onset: float | None = None,
                end: float | None = None) -> int:
        """The next curve from ``pitch``: in range, on the scale (by the key strength), in
        the performer's style (by the style weight), never a curve repeated more than
        ``max_repeat`` times in a row in one answer (``tokens``, its curves so far); with
        ``end`` (beats to a planned last onset), never past it, and onto it on a stable
        degree where it can."""
        s = self.sampler
        mask = self.key_bias.restrict(s.allowed(pitch, lo, hi), pitch)
        if gap is not None:
            mask = s.near_time(mask, gap)
        if onset is not None:  # quantized: the curves that land the next onset on the grid
            mask = self.grid.mask(onset, mask)
        if end is not None:
            mask = s.ending(mask, end, self.key_bias.resting(pitch))
        k = self.max_repeat
        if len(tokens) >= k:
            last = tokens[-1]
            if mask[last] and tokens[-k:].count(last) == k:
                mask[last] = False
                if not mask.any():
                    mask[last] = True
        scores = self.style.mix(self.logits, self._history, self._scores)
        self.key_bias.apply(scores, pitch)
        self._pull(scores, pitch)
        return s.sample(scores, mask)

    def _pull(self, scores: np.ndarray, pitch: int) -> None:
        """``answer.register_pull`` nats per octave off each curve's log-score for the
        distance it adds between the melody and the call's mean pitch (and on, for the
        distance it takes away), in place."""
        g = self._cfg.answer.register_pull
        if g <= 0.0:
            return
        c = self._centre
        d = np.subtract(self.pitch_diff, c - pitch, out=self._moved)  # where each lands
        np.abs(d, out=d)
        d -= abs(pitch - c)
        d *= g / 12.0
        scores -= d

    def answer_beats(self, call: list[MelodyNote], call_end: float) -> float:
        ac = self._cfg.answer
        if ac.length == "call":
            # whole beats, halves rounded up (Python's round() would take 2.5 to 2)
            beats = max(1.0, float(math.floor((call_end - call[0].time) / self.beat_s + 0.5)))
        else:
            beats = float(ac.length)
        return min(max(beats, ac.min_beats), ac.max_beats)

    def _cadence_end(self, beats: float, first: float = 0.0,
                     bar: float | None = None) -> float | None:
        """The last onset (beats from the answer's start) of an answer of ``beats`` planned
        to end as a phrase ends: the last whole beat at least a beat before its end; where
        the bar is known (``bar`` beats long, the answer's first onset ``first`` beats into
        the count of bars), the last first beat of a bar among those beats after the first
        one, else that last whole beat. Planned for a share ``answer.cadence`` of the
        answers; None for the others, and for answers too short to have a note before it."""
        c = self._cfg.answer.cadence
        end = math.floor(beats - 1.0 + 1e-9)
        if c <= 0.0 or end < 1:
            return None
        if c < 1.0 and self.rng.random() >= c:
            return None
        if bar is not None and round(bar) >= 1:
            downbeat = end - (round(first) + end) % round(bar)
            if downbeat >= 1:
                return float(downbeat)
        return float(end)

    def _velocity(self, vels: np.ndarray, vmean: float) -> int:
        """An answer note's velocity: one of the call's, halfway to their mean."""
        j = int(self.rng.integers(len(vels)))
        return min(127, max(1, round(vmean + 0.5 * (vels[j] - vmean))))  # np.clip: ~50 us

    def _play(self, answer: Answer, note: TimedNote) -> None:
        answer.notes.append(note)
        self.player.add(answer.id, note)

    def _generate(self, call: list[MelodyNote], call_end: float, decided: float,
                  bars: BarPlan | None = None) -> Answer:
        """The answer to ``call``, into the player: from the first beat after ``decided``, or
        trading bars (``bars``), from its bar line, as many bars long (``length: call``) and
        every note over by the end of those bars."""
        ac = self._cfg.answer
        beat = self.beat_s
        anchor = call[0].time
        tk = self.timekeeper
        start = tk.first_beat(decided, anchor, beat) if bars is None else bars.line
        at_decided, bar = tk.grid_at(decided, self._call_beats(decided))
        first = at_decided + (start - decided) / beat  # the first onset's beat count
        if bars is not None:
            bar = bars.bar_beats
        if self.grid is not None:  # the call's swing, on the grid the answer starts on
            self.grid.hear([(n.time - start) / beat for n in call])
        beats = self.answer_beats(call, call_end)
        if bars is not None and ac.length == "call":
            beats = min(max(float(bars.bars * bars.bar_beats), ac.min_beats), ac.max_beats)
        until = beats - ANSWER_GAP_BEATS if bars is not None else math.inf
        pitches = [n.pitch for n in call]
        rc = self.range_cfg
        lo = max(rc.lowest, min(pitches) - ac.range_widen)
        hi = min(rc.highest, max(pitches) + ac.range_widen)
        if lo > hi:  # the call lies outside the part's range: the part's range wins
            lo, hi = rc.lowest, rc.highest
        vels = np.array([n.velocity for n in call], dtype=np.float64)
        vmean = float(vels.mean())
        self._centre = float(np.mean(pitches))

        self._answers += 1
        answer = Answer(self._answers, call, start, beats, decided, self.prev, call_end, bars)
        self.player.begin(answer.id)
        self.answer = answer
        np.copyto(self._base.h, self.state.h)
        np.copyto(self._base.c, self.state.c)

        pitch, prev_t = self.prev  # the call's last note
        # The first curve must match the real gap from the call's last note to the grid.
        hist = self._history
        hist.clear()
        hist.extend(self._call_tokens[-self.style.order:])
        tok = self._choose(pitch, lo, hi, answer.tokens, (start - prev_t) / beat)
        onset = 0.0  # beats from start
        end = self._cadence_end(beats, first, bar)
        positional = self.model.positional
        while True:
            pitch += int(self.pitch_diff[tok])
            answer.tokens.append(tok)
            hist.append(tok)
            if len(hist) > 2 * self.style.order:
                del hist[:-self.style.order]
            pos = meter.position(first + onset, bar) if positional else None
            self.logits = self.model.step(tok, self.state, pos)
            self.steps += 1
            i = len(answer.notes)
            if i == len(self._pool):
                self._pool.append(self.state.copy())
            else:
                np.copyto(self._pool[i].h, self.state.h)
                np.copyto(self._pool[i].c, self.state.c)
            answer.states.append(self._pool[i])
            if end is not None and onset >= end - 1e-9:  # the last note, held to the end
                at = self.grid.place(onset) if self.grid is not None else onset
                length = max(min(ac.articulation * (beats - onset), ac.max_note_beats), 1.0)
                length = max(min(length, until - at), ANSWER_GAP_BEATS)
                self._play(answer, TimedNote(pitch, start + at * beat, length * beat,
                                             self._velocity(vels, vmean)))
                break
            # the next curve, sampled now, gives this note's inter-onset time
            tok = self._choose(pitch, lo, hi, answer.tokens,
                               onset=onset if self.grid is not None else None,
                               end=None if end is None else end - onset)
            ioi = float(self.time_diff[tok])
            if end is not None and self.sampler.landing[tok]:  # onto the planned last onset
                ioi = end - onset
            at, ioi, played = self._place(onset, ioi)
            length = min(ac.articulation * played, ac.max_note_beats)
            if length > until - at:  # trading bars: over before the bars end
                length = max(until - at, ANSWER_GAP_BEATS)
            self._play(answer, TimedNote(pitch, start + at * beat, length * beat,
                                         self._velocity(vels, vmean)))
            onset += ioi
            if (end is None and onset >= beats - 1e-9) or len(answer.notes) >= MAX_ANSWER_NOTES:
                break
        last = answer.notes[-1]
        self.prev = (last.pitch, last.start)
        self.last_sound = last.end
        return answer
