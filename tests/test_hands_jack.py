"""Two hands over real MIDI ports: a pianist's call, melody and accompaniment on one
channel into `companion live` on a JACK server (dummy driver), is answered in the melody's
register and key, as the melody played alone is.

The shipped model (models/default) answers, so the answers are musical; the seed is fixed.
Assertions are about register and key, with a margin a musical answer keeps: none is a
tight timing.
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from support import (
    Companion,
    Performer,
    assert_matched,
    jack_env,
    jackd_log,
    note_ons,
    write_config,
)

pytestmark = pytest.mark.jack

#: The call's tempo (listen.tempo_bpm): register and key do not depend on it, and at a
#: brisk tempo the two calls and their answers take seconds less.
TEMPO = 240.0
PHRASE_END_BEATS = 1.0
ANSWER_BEATS = 8
SEED = 3

#: A C major tune opening in octave 5: (pitch, onset beat, beats to the next note).
MELODY = [(72, 0, 1), (76, 1, 1), (79, 2, 1), (76, 3, 1), (77, 4, 1), (74, 5, 0.5),
          (77, 5.5, 0.5), (79, 6, 1), (71, 7, 1), (72, 8, 2)]
#: The harmony of each beat: the bass note, two octaves below the melody, and the
#: close-position chord above it.
HARMONY = {"C": (48, (52, 55, 60)), "F": (53, (57, 60, 65)), "Dm": (50, (53, 57, 62)),
           "G": (43, (50, 55, 59))}
CHORDS = ["C", "C", "C", "C", "F", "Dm", "G", "G", "C", "C"]
#: The melody's key and its relative: the key the companion may log.
KEYS = {"C major", "A minor"}
#: The right hand's legato: each note released this long after the next one starts
#: (within listen.legato_overlap_ms); the left hand's, the same.
LEGATO_BEATS = 0.06
#: Human timing: every onset moved by up to this much (fixed seed).
JITTER_BEATS = 0.02


def right_hand(rng: np.random.Generator) -> list[tuple[int, float, float]]:
    """The melody, played legato: (pitch, start_beats, duration_beats)."""
    starts = [s + rng.uniform(-JITTER_BEATS, JITTER_BEATS) for _, s, _ in MELODY]
    starts[0] = max(starts[0], 0.0)
    ends = [*starts[1:], MELODY[-1][1] + MELODY[-1][2]]
    return [(p, s, e - s + (LEGATO_BEATS if i < len(MELODY) - 1 else 0.0))
            for i, ((p, _, _), s, e) in enumerate(zip(MELODY, starts, ends, strict=True))]


def left_hand(rng: np.random.Generator) -> list[tuple[int, float, float]]:
    """A bass note on each beat and the chord on the off-beat, each held legato into the
    next; the last chord released with the melody's last note."""
    notes = []
    end = MELODY[-1][1] + MELODY[-1][2]
    for beat, name in enumerate(CHORDS):
        bass, chord = HARMONY[name]
        s = max(beat + rng.uniform(-JITTER_BEATS, JITTER_BEATS), 0.0)
        notes.append((bass, s, beat + 0.5 + LEGATO_BEATS - s))
        c = beat + 0.5 + rng.uniform(-JITTER_BEATS, JITTER_BEATS)
        hold = end - c if beat == len(CHORDS) - 1 else beat + 1 + LEGATO_BEATS - c
        notes += [(p, c, hold) for p in chord]
    return notes


def play_and_hear(env: dict, config: Path, call: list[tuple[int, float, float]]
                  ) -> tuple[list[int], int, str, str]:
    """One fresh `companion live`: ``call`` played into companion:in, the answer heard on
    its out port. Returns (answer pitches, notes in the call it heard, the key it logged,
    its log for failure messages)."""
    comp = Companion(env, "--config", str(config))
    performer = None
    try:
        comp.wait_ready()
        performer = Performer()
        released = performer.play(call, beat=60.0 / TEMPO)
        # the log line of the phrase end says how many notes the answer has: wait for them all
        deadline = released + 30.0
        heard = None
        while time.monotonic() < deadline:
            got = performer.received()
            heard = next((m for line in comp.lines
                          if (m := re.search(r"call of (\d+) notes -> answer of (\d+) notes",
                                             line))), None)
            offs = sum(1 for _, m in got if m.type == "note_off"
                       or (m.type == "note_on" and m.velocity == 0))
            if heard is not None and offs >= int(heard[2]):
                break
            time.sleep(0.05)
        log = "\n".join(comp.lines) + "\n" + jackd_log(env)
        assert heard is not None, "no answer:\n" + log
        got = performer.received()
        assert_matched(got, log)
        pitches = [m.note for _, m in note_ons(got)]
        assert len(pitches) == int(heard[2]), f"{pitches}\n{log}"
        keys = [line.split("key: ", 1)[1] for line in comp.lines if "key: " in line]
        assert keys, "no key logged:\n" + log
        return pitches, int(heard[1]), keys[-1], log
    finally:
        if performer is not None:
            performer.close()
        comp.stop()


def assert_answers_the_melody(pitches: list[int], call_notes: int, key: str, log: str) -> None:
    """The call heard is the melody; the answer lies in its register; the key is its key."""
    melody = [p for p, _, _ in MELODY]
    context = f"answer {pitches}, key {key}\n{log}"
    assert call_notes == len(melody), context
    assert pitches, context
    lo, hi = min(melody) - 12, max(melody) + 12
    assert all(lo <= p <= hi for p in pitches), context
    assert abs(statistics.median(pitches) - statistics.median(melody)) <= 7, context
    assert key in KEYS, context


# every message of the call (several per beat with the left hand) must arrive: 21 ms cycles
# (1024 frames), so that a descheduled client on a busy machine is not an xrun
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_two_hand_call_is_answered_in_the_melodys_register_and_key(jack_server, monkeypatch,
                                                                   tmp_path):
    jack_env(jack_server, monkeypatch)
    config = write_config(
        tmp_path / "config.yaml", Path("models/default"),
        listen={"tempo_bpm": TEMPO, "phrase_end_beats": PHRASE_END_BEATS},
        answer={"length": ANSWER_BEATS, "max_beats": ANSWER_BEATS, "seed": SEED,
                "max_note_beats": 1.0},
        session={"enabled": False},
    )
    rng = np.random.default_rng(0)
    rh, lh = right_hand(rng), left_hand(rng)
    assert min(p for p, _, _ in lh) <= min(p for p, _, _ in rh) - 24  # two octaves below

    both = play_and_hear(jack_server, config, sorted(rh + lh, key=lambda n: n[1]))
    assert_answers_the_melody(*both)
    # the control: the same right hand alone is answered the same way
    alone = play_and_hear(jack_server, config, rh)
    assert_answers_the_melody(*alone)
