"""Corpus SPECs to melodies: music21 parsing in a process pool, cached per file."""

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

from companion.encoding.curves import write_atomic
from companion.encoding.melody import EXTRACTOR_VERSION, SUFFIXES, Melody, read_melodies

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """A corpus SPEC that names nothing readable (exit 2)."""


@dataclass
class Corpus:
    melodies: list[Melody] = field(default_factory=list)
    files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    cached: int = 0

    def summary(self) -> str:
        notes = sum(len(m) for m in self.melodies)
        return (
            f"{self.files} files ({self.cached} from cache), {len(self.melodies)} melodies, "
            f"{notes} notes, {len(self.failed)} unreadable"
        )


def cache_dir() -> Path:
    base = os.environ.get("COMPANION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "midi-companion"
    )
    return Path(base) / "melodies"


def resolve(spec: str) -> list[Path]:
    """Files of one SPEC: a file, a folder (recursively), or ``music21:NAME``."""
    if spec.startswith("music21:"):
        name = spec.split(":", 1)[1]
        from music21 import corpus

        paths = [Path(p) for p in corpus.getComposer(name)]
        if not paths:
            raise CorpusError(f"{spec}: no corpus of that name ships with music21")
        return sorted(p for p in paths if p.suffix.lower() in SUFFIXES)
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    raise CorpusError(f"{spec}: no such file or folder (expected a file, folder or music21:NAME)")


def _cache_key(path: Path) -> str:
    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{EXTRACTOR_VERSION}"
    return hashlib.sha1(raw.encode()).hexdigest()


def _load_file(path: Path, use_cache: bool) -> tuple[list[Melody] | None, str | None, bool]:
    """(melodies, error, from_cache) for one file; never raises."""
    try:
        key = _cache_key(path)
    except OSError as e:
        return None, str(e), False
    cfile = cache_dir() / f"{key}.pkl"
    if use_cache and cfile.exists():
        try:
            with open(cfile, "rb") as f:
                return pickle.load(f), None, True
        except Exception:  # a damaged cache entry is rebuilt
            pass
    try:
        mels = read_melodies(path)
    except Exception as e:  # music21 raises many types on bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"{type(e).__name__}: {msg[:200]}", False
    if use_cache:
        try:
            write_atomic(cfile, pickle.dumps(mels))
        except OSError:
            pass
    return mels, None, False


def _load_one(args: tuple[Path, bool]):
    return _load_file(*args)


def load_corpus(
    specs: Sequence[str], workers: int | None = None, use_cache: bool = True, progress: bool = True
) -> Corpus:
    """Every melody of every SPEC; unreadable files are skipped with a warning and counted."""
    files: list[Path] = []
    for spec in specs:
        files.extend(resolve(spec))
    if not files:
        raise CorpusError(f"{' '.join(specs)}: no music files ({', '.join(SUFFIXES)}) found")
    out = Corpus(files=len(files))
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    jobs = [(f, use_cache) for f in files]
    bar = _bar(len(files), progress)
    if workers > 1 and len(files) > 1:
        # forkserver, not fork: TensorFlow's threads may run in this process, and a forked
        # child would inherit any lock one of them holds
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = pool.map(_load_one, jobs, chunksize=4)
            _collect(files, results, out, bar)
    else:
        _collect(files, map(_load_one, jobs), out, bar)
    bar.close()
    for path, why in out.failed:
        log.warning("skipped %s: %s", path, why)
    return out


def _collect(files, results, out: Corpus, bar) -> None:
    for path, (mels, err, hit) in zip(files, results, strict=True):
        if err is not None:
            out.failed.append((str(path), err))
        else:
            out.melodies.extend(mels)
            out.cached += hit
        bar.update(1)


def _bar(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # the companion runtime has no tqdm; respond reads single files
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc="reading corpus", unit="file", leave=False)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass
