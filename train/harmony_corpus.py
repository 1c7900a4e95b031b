"""Harmony corpora: each tune's melody and its chords, read with music21, cached per file.

Chords come from the tune's chord symbols (the Nottingham ABC files: ``"G"``, ``"D7/f+"``,
read by companion.encoding.chords.parse_symbol) or, for a score without any (the Bach
chorales), from its voices (``identify``: at each change of the sounding notes, the chord
of QUALITIES that best covers its pitch classes, the bass from the lowest note). The
melody is read as every corpus reads it (companion.encoding.melody.melody_from_score).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from companion.encoding.chords import QUALITIES, Chord, parse_symbol
from companion.encoding.curves import write_atomic
from companion.encoding.melody import EXTRACTOR_VERSION, Melody, melody_from_score
from train.corpus import CorpusError, cache_dir, resolve

log = logging.getLogger(__name__)

#: Bump when what is read changes: part of the cache key.
READER_VERSION = 1
#: The qualities ``identify`` names from voices (the plainer ones of QUALITIES).
VOICE_QUALITIES = ("maj", "min", "7", "min7", "maj7", "dim", "dim7", "hdim7")


@dataclass
class Tune:
    """One tune: its melody and its chord changes ``(time, chord)`` on the melody's time
    line (None: no chord from then on), and where the chords came from."""

    melody: Melody
    changes: list[tuple[float, Chord | None]]
    source: str  # "symbols" or "voices"


@dataclass
class HarmonyCorpus:
    tunes: list[Tune] = field(default_factory=list)
    files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    no_chords: int = 0  # tunes left out: no chord read
    unread_symbols: int = 0  # chord symbols that could not be read (dropped)

    def summary(self) -> str:
        return (f"{self.files} files, {len(self.tunes)} tunes with chords "
                f"({self.no_chords} without left out), {self.unread_symbols} chord symbols "
                f"unread, {len(self.failed)} files unreadable")


def identify(pcs: set[int], bass_pc: int) -> Chord | None:
    """The chord of VOICE_QUALITIES that best covers the pitch classes ``pcs`` sounding
    together (bass ``bass_pc``): one point a note of the chord, minus one a note outside it,
    minus 0.6 a note of the chord missing, plus 0.3 for the root in the bass, minus 0.1 for
    a seventh. None for fewer than two pitch classes."""
    if len(pcs) < 2:
        return None
    best, best_score = None, -1e9
    for q in VOICE_QUALITIES:
        intervals = QUALITIES[q]
        for root in range(12):
            tpl = {(root + i) % 12 for i in intervals}
            score = (len(pcs & tpl) - len(pcs - tpl) - 0.6 * len(tpl - pcs)
                     + 0.3 * (root == bass_pc) - 0.1 * (len(tpl) > 3))
            if score > best_score + 1e-9:
                best_score = score
                bass = (bass_pc - root) % 12
                best = Chord(root, q, bass if bass in intervals else 0)
    return best


def _symbol_changes(score) -> tuple[list[tuple[float, Chord | None]], int]:
    from music21 import harmony

    changes, unread = [], 0
    flat = score.flatten()
    for el in flat.getElementsByClass(harmony.ChordSymbol):
        c = parse_symbol(el.figure or "")
        if c is None:
            unread += 1
            continue
        changes.append((float(el.offset), c))
    changes.sort(key=lambda x: x[0])
    return changes, unread


def _voice_changes(score) -> list[tuple[float, Chord | None]]:
    changes: list[tuple[float, Chord | None]] = []
    flat = score.chordify().flatten()
    last = None
    for el in flat.notes:
        pitches = [p.midi for p in el.pitches]
        if not pitches:
            continue
        c = identify({p % 12 for p in pitches}, min(pitches) % 12)
        if c is None or c == last:
            continue
        changes.append((float(el.offset), c))
        last = c
    return changes


def read_tunes(path: str | Path, chords: str = "auto") -> tuple[list[Tune], int, int]:
    """(tunes, tunes without chords, chord symbols unread) of one file. ``chords``:
    ``symbols`` (chord symbols only), ``voices`` (from the voices), ``auto`` (symbols where
    a score has any, else its voices when it has several parts)."""
    from music21 import converter, harmony, stream

    path = Path(path)
    parsed = converter.parse(str(path))
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    out, none, unread = [], 0, 0
    for i, sc in enumerate(scores):
        label = path.name if len(scores) == 1 else f"{path.name}#{i + 1}"
        title = getattr(getattr(sc, "metadata", None), "title", None)
        if title:
            label += f" ({title})"
        has_symbols = any(True for _ in sc.flatten().getElementsByClass(harmony.ChordSymbol))
        if chords == "symbols" or (chords == "auto" and has_symbols):
            changes, bad = _symbol_changes(sc)
            unread += bad
            source = "symbols"
        elif len(getattr(sc, "parts", [])) > 1:
            changes, source = _voice_changes(sc), "voices"
        else:
            changes, source = [], "none"
        m = melody_from_score(sc, label)
        if len(m) < 2 or not changes:
            none += 1
            continue
        out.append(Tune(m, changes, source))
    return out, none, unread


def _load(args: tuple[Path, str, bool]):
    path, chords, use_cache = args
    try:
        st = path.stat()
        raw = (f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{EXTRACTOR_VERSION}|"
               f"{READER_VERSION}|{chords}")
    except OSError as e:
        return None, str(e)
    cfile = cache_dir().parent / "harmony" / f"{hashlib.sha1(raw.encode()).hexdigest()}.pkl"
    if use_cache and cfile.exists():
        try:
            with open(cfile, "rb") as f:
                return pickle.load(f), None
        except Exception:  # a damaged entry is read again
            pass
    try:
        got = read_tunes(path, chords)
    except Exception as e:  # music21 raises many types on bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"{type(e).__name__}: {msg[:200]}"
    if use_cache:
        try:
            write_atomic(cfile, pickle.dumps(got))
        except OSError:
            pass
    return got, None


def load_tunes(specs: Sequence[str], chords: str = "auto", workers: int | None = None,
               use_cache: bool = True) -> HarmonyCorpus:
    """Every tune with chords of every SPEC (train.corpus.resolve); unreadable files are
    skipped with a warning and counted."""
    files: list[Path] = []
    for spec in specs:
        files.extend(resolve(spec))
    if not files:
        raise CorpusError(f"{' '.join(specs)}: no music files found")
    out = HarmonyCorpus(files=len(files))
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    jobs = [(f, chords, use_cache) for f in files]
    if workers > 1 and len(files) > 1:
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(pool.map(_load, jobs))
    else:
        results = [_load(j) for j in jobs]
    for path, (got, err) in zip(files, results, strict=True):
        if err is not None:
            out.failed.append((str(path), err))
            log.warning("skipped %s: %s", path, err)
            continue
        tunes, none, unread = got
        out.tunes.extend(tunes)
        out.no_chords += none
        out.unread_symbols += unread
    return out
