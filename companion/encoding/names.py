"""Names of pitches and keys, read and written: "F#4", "D major", "Em". The config checks
``key.fixed`` with ``parse_key``; the engine's key awareness (companion.encoding.key) counts
keys as (tonic pitch class, mode), MAJOR or MINOR.
"""

from __future__ import annotations

import re

NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
_FLATS = {"Db": 1, "Eb": 3, "Gb": 6, "Ab": 8, "Bb": 10, "Cb": 11, "Fb": 4, "E#": 5, "B#": 0}
MAJOR, MINOR = 0, 1
MODES = ("major", "minor")

_KEY_RE = re.compile(r"^\s*([A-Ga-g])([#b]?)\s*(major|minor|maj|min|m)?\s*$")


def parse_key(text: str) -> tuple[int, int]:
    """``"D major"``, ``"F# minor"``, ``"Bb"``, ``"Em"`` -> (tonic pitch class, mode)."""
    m = _KEY_RE.match(text)
    if not m:
        raise ValueError(f"expected a key such as \"D major\", \"F# minor\" or \"Bb\", "
                         f"got {text!r}")
    name = m.group(1).upper() + m.group(2)
    tonic = _FLATS.get(name, NAMES.index(name[0]) + (1 if name.endswith("#") else 0)) % 12
    mode = MINOR if m.group(3) in ("minor", "min", "m") else MAJOR
    return tonic, mode


def note_name(pitch: int) -> str:
    """A MIDI pitch as a note name with its octave, middle C (60) being C4."""
    return f"{NAMES[pitch % 12]}{pitch // 12 - 1}"


def key_name(tonic: int, mode: int) -> str:
    return f"{NAMES[tonic % 12]} {MODES[mode]}"
