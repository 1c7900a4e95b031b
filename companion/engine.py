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

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from companion.clock import Clock
from companion.config import Config
from companion.curves import curve
from companion.listener import NEW_NOTE, NOTHING, TOP_CHANGED, Listener, MelodyNote
from companion.model import State, StepModel
from companion.sampler import Sampler
from companion.scheduler import Player, TimedNote

#: A runaway guard: no answer has more notes than this (16 per beat at 256 beats).
MAX_ANSWER_NOTES = 4096

#: ``on_event(kind, t, **data)``; kinds: "note_in" (a melody note, after the model
#: advanced: ``received`` = callback time, ``pitch``, ``velocity``, ``steps``, ``chord``:
#: True when a higher note of a chord replaced the melody note just heard),
#: "phrase_end" (t = answer generated; ``deadline``, ``decided``, ``answer`` id, ``start``
#: of its first note, ``beats``, ``notes``, ``call`` = melody notes heard),
#: "barge_in" (``answer``, ``played``), "reset" (the model restarted after a silence).
EventHook = Callable[..., None]


@dataclass
class Answer:
    id: int
    call: list[MelodyNote]
    start: float  # first note's onset, on the beat grid of the call
    beats: float  # planned length
    decided: float  # when the phrase end was decided
    call_last: tuple[int, float]  # the call's last melody note: pitch, onset
    call_end: float  # when the call's last key was released
    notes: list[TimedNote] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # the curve token of each note
    #: states[i] is the model state after answer note i (buffers reused by the next answer)
    states: list[State] = field(default_factory=list)


class Engine:
    """One performer, one model: feed it messages with ``on_message``, call ``poll`` when
    ``next_deadline`` passes; answers go to the ``player`` note by note as they are sampled.
    """

    def __init__(
        self,
        model: StepModel,
        cfg: Config,
        player: Player,
        clock: Clock,
        seed: int | None = None,
        on_event: EventHook | None = None,
    ):
        self.model = model
        self.vocab = model.vocab
        self.player = player
        self.clock = clock
        self.on_event = on_event
        lc, ac = cfg.listen, cfg.answer
        self.answer_cfg = ac
        self.beat_s = 60.0 / lc.tempo_bpm
        ch = cfg.midi.input_channel
        self.listener = Listener(
            self.beat_s, lc.phrase_end_beats, lc.chord_window_ms / 1000.0,
            None if ch == "omni" else int(ch) - 1,
        )
        self.reset_after_s = lc.reset_after_beats * self.beat_s
        self.rng = np.random.default_rng(seed)
        self.sampler = Sampler(self.vocab, self.rng, ac.temperature, ac.top_p)
        self.pitch_diff = self.sampler.pitch_diff
        self.time_diff = self.sampler.time_diff
        self.steps = 0  # ONNX steps taken: the cost of listening and answering
        self.answer: Answer | None = None  # the last answer, until the next call begins
        self._answers = 0
        self._pool: list[State] = []  # per-answer-note state buffers, reused
        self._before = model.zero_state()  # before the last call step: a chord's top may change
        self._base = model.zero_state()  # state after the call, before its answer
        self._before_prev: tuple[int, float] | None = None
        self._stepped = False  # whether the last call note took a step
        self._anchor = 0.0  # first onset of the current call: origin of its beats
        self.last_sound = -math.inf  # when the last melody note (call or answer) ended
        self.state = model.zero_state()
        self.prev: tuple[int, float] | None = None  # last melody note the state has seen
        self._restart()

    # -- listening -------------------------------------------------------------------

    def on_message(self, msg, t: float) -> None:
        """One message from the performer, received at ``t``."""
        code = self.listener.feed(msg, t)
        if code == NOTHING:
            return
        note = self.listener.notes[-1]
        if code == NEW_NOTE:
            if len(self.listener.notes) == 1:
                self._call_starts(t)
            self._advance(note)
        elif code == TOP_CHANGED:
            self._restep(note)
        if self.on_event is not None:
            self.on_event("note_in", self.clock.now(), received=t, pitch=note.pitch,
                          velocity=note.velocity, steps=self.steps, chord=code == TOP_CHANGED)

    def next_deadline(self) -> float | None:
        """When ``poll`` may find the phrase ended; None while keys are held or nothing played."""
        return self.listener.deadline()

    def _restart(self) -> None:
        """A fresh melody: zero state, then bos."""
        z = self.model.zero_state()
        self.state = z
        self.logits = self.model.step(self.vocab.bos, self.state)
        self.steps += 1
        self.prev = None

    def _call_starts(self, t: float) -> None:
        """The first note of a call: settle the previous answer, maybe start afresh."""
        self._anchor = t
        a = self.answer
        if a is not None:
            if self.answer_cfg.barge_in == "stop" and self.player.busy(a.id):
                played = self.player.cancel(a.id)
                if self.on_event is not None:
                    self.on_event("barge_in", self.clock.now(), answer=a.id, played=played)
            else:
                played = self.player.started(a.id)
            self._continue_after(a, played, t)
            self.answer = None
        silence = t - self.last_sound
        if self.prev is not None and 0 < self.reset_after_s < silence:
            self._restart()
            if self.on_event is not None:
                self.on_event("reset", self.clock.now())

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

    def _q(self, t: float) -> float:
        return (t - self._anchor) / self.beat_s

    def _advance(self, note: MelodyNote) -> None:
        self._before_prev = self.prev
        self._stepped = self.prev is not None
        if self._stepped:
            np.copyto(self._before.h, self.state.h)
            np.copyto(self._before.c, self.state.c)
            self._step_curve(self.prev, note)
        self.prev = (note.pitch, note.time)

    def _restep(self, note: MelodyNote) -> None:
        """A chord's higher note came within the window: it is the melody note after all."""
        if self._stepped:
            np.copyto(self.state.h, self._before.h)
            np.copyto(self.state.c, self._before.c)
            self._step_curve(self._before_prev, note)
        self.prev = (note.pitch, note.time)

    def _step_curve(self, prev: tuple[int, float], note: MelodyNote) -> None:
        pd, td = curve(prev[0], self._q(prev[1]), note.pitch, self._q(note.time))
        self.logits = self.model.step(self.vocab.token(pd, td), self.state)
        self.steps += 1

    # -- answering -------------------------------------------------------------------

    def poll(self, t: float) -> Answer | None:
        """At ``t``: if the phrase has ended, decide, and generate the answer into the player."""
        lst = self.listener
        if not lst.phrase_ended(t):
            return None
        deadline = lst.deadline()
        call_end = lst.silence_since
        call = lst.take_phrase()
        self.last_sound = call_end
        answer = self._generate(call, call_end, t)
        if self.on_event is not None:
            self.on_event("phrase_end", self.clock.now(), deadline=deadline, decided=t,
                          answer=answer.id, start=answer.start, beats=answer.beats,
                          notes=len(answer.notes), call=len(call))
        return answer

    def answer_beats(self, call: list[MelodyNote], call_end: float) -> float:
        ac = self.answer_cfg
        if ac.length == "call":
            # whole beats, halves rounded up (Python's round() would take 2.5 to 2)
            beats = max(1.0, float(math.floor((call_end - call[0].time) / self.beat_s + 0.5)))
        else:
            beats = float(ac.length)
        return min(max(beats, ac.min_beats), ac.max_beats)

    def _generate(self, call: list[MelodyNote], call_end: float, decided: float) -> Answer:
        ac = self.answer_cfg
        beat = self.beat_s
        anchor = call[0].time
        start = anchor + math.ceil((decided - anchor) / beat - 1e-9) * beat
        beats = self.answer_beats(call, call_end)
        pitches = [n.pitch for n in call]
        lo = max(0, min(pitches) - ac.range_widen)
        hi = min(127, max(pitches) + ac.range_widen)
        vels = np.array([n.velocity for n in call], dtype=np.float64)
        vmean = float(vels.mean())

        self._answers += 1
        answer = Answer(self._answers, call, start, beats, decided, self.prev, call_end)
        self.player.begin(answer.id)
        self.answer = answer
        np.copyto(self._base.h, self.state.h)
        np.copyto(self._base.c, self.state.c)

        pitch, prev_t = self.prev  # the call's last note
        sampler = self.sampler
        # The first curve must match the real gap from the call's last note to the grid.
        mask = sampler.near_time(sampler.allowed(pitch, lo, hi), (start - prev_t) / beat)
        tok = sampler.sample(self.logits, mask)
        onset = 0.0  # beats from start
        while True:
            pitch += int(self.pitch_diff[tok])
            answer.tokens.append(tok)
            self.logits = self.model.step(tok, self.state)
            self.steps += 1
            i = len(answer.notes)
            if i == len(self._pool):
                self._pool.append(self.state.copy())
            else:
                np.copyto(self._pool[i].h, self.state.h)
                np.copyto(self._pool[i].c, self.state.c)
            answer.states.append(self._pool[i])
            # the next curve, sampled now, gives this note's inter-onset time
            tok = sampler.sample(self.logits, sampler.allowed(pitch, lo, hi))
            ioi = float(self.time_diff[tok])
            length = min(ac.articulation * ioi, ac.max_note_beats)
            j = int(self.rng.integers(len(vels)))
            vel = int(np.clip(round(vmean + 0.5 * (vels[j] - vmean)), 1, 127))
            note = TimedNote(pitch, start + onset * beat, length * beat, vel)
            answer.notes.append(note)
            self.player.add(answer.id, note)
            onset += ioi
            if onset >= beats - 1e-9 or len(answer.notes) >= MAX_ANSWER_NOTES:
                break
        last = answer.notes[-1]
        self.prev = (last.pitch, last.start)
        self.last_sound = last.end
        return answer
