"""JACK's shared-memory registry, read, and cleaned of what servers whose process is gone
left (a killed jackd keeps it all: lab/README.md).

jackd2 (common/shm.c) keeps one registry for the machine, ``<SHM_DIR>/jack-shm-registry``,
locked by the System V semaphore ``0x282929``: eight server slots (pid and
``jack-<uid>:<name>:``) and 256 segment entries (allocator pid, size, POSIX shm name). A
server's other files in SHM_DIR: its segments (``jack-<uid>-<n>``), its socket
(``jack_<name>_<uid>_<n>``) and its semaphores (``jack_sem.<uid>_<name>_<client>``).

``clean()`` frees what servers whose pid is gone left, under the registry's lock, by the rules
jackd itself keeps: a slot or segment is freed only when its pid no longer runs (`alive`: a
pid of another user counts as alive, a zombie as gone), a file only when it belongs to a
dead server's name and to no live server's, and a socket only when nothing listens on it (a
socket whose server lost its slot is such a file once ORPHAN_AGE_S old). A registry of
another layout is left untouched (JackRegistryError).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import re
import socket
import stat
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Where Linux keeps POSIX shared memory, and so JACK's registry, segments and sockets.
SHM_DIR = Path("/dev/shm")
REGISTRY_NAME = "jack-shm-registry"
SEMAPHORE_KEY = 0x282929
LOCK_TIMEOUT_S = 5.0
#: A socket without a server slot is left over once this old and unanswered.
ORPHAN_AGE_S = 60.0

MAGIC = 0x4A41434B  # "JACK"
SHM_POSIX = 1
MAX_SERVERS = 8
MAX_SHM_ID = 256
_HEADER = struct.Struct("<6I")  # magic, protocol, type, size, hdr_len, entry_len
_SERVER_LEN = 264  # pid_t, char name[257], padding
_NAME_LEN = 257
_ENTRY_LEN = 268  # int16 index, padding, pid_t allocator, int32 size, char id[256]
_HDR_LEN = _HEADER.size + MAX_SERVERS * _SERVER_LEN
_SEM_UNDO = 0x1000
_SERVER_NAME = re.compile(r"jack-(\d+):(.*):")


class JackRegistryError(RuntimeError):
    """The registry could not be read or locked; nothing was changed."""


@dataclass(frozen=True)
class Server:
    """One server slot of the registry."""

    pid: int
    uid: int
    name: str


def alive(pid: int) -> bool:
    """Whether a process ``pid`` runs: it exists (one of another user counts) and is not a
    zombie (ended, only waiting for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def servers(shm_dir: Path = SHM_DIR) -> list[Server]:
    """The servers the registry holds, live or not (empty without a registry)."""
    path = shm_dir / REGISTRY_NAME
    if not path.exists():
        return []
    with _mapped(path) as buf:
        return [s for _, s in _slots(buf)]


def segments(shm_dir: Path = SHM_DIR) -> list[tuple[int, str]]:
    """The segments the registry holds: (allocator pid, shm name)."""
    path = shm_dir / REGISTRY_NAME
    if not path.exists():
        return []
    with _mapped(path) as buf:
        return [(pid, shm_id) for _, pid, shm_id in _segments(buf)]


def clean(shm_dir: Path = SHM_DIR, names: Iterable[str] = ()) -> list[str]:
    """Free the slots, segments and files of servers whose process is gone, and the files of
    the servers ``names`` (of this user) where no live server has that name. Returns the
    names of the servers cleaned. Raises JackRegistryError when the registry has another
    layout or its lock is not had within LOCK_TIMEOUT_S."""
    path = shm_dir / REGISTRY_NAME
    dead = {(os.getuid(), n) for n in names}
    if not path.exists():
        _remove_files(shm_dir, dead, live=set())
        return sorted(n for _, n in dead)
    with _locked(), _mapped(path) as buf:
        live: set[tuple[int, str]] = set()
        for offset, s in _slots(buf):
            if alive(s.pid):
                live.add((s.uid, s.name))
            else:
                dead.add((s.uid, s.name))
                buf[offset:offset + _SERVER_LEN] = bytes(_SERVER_LEN)
        _free_segments(buf, shm_dir)
        dead |= _orphans(shm_dir, live)
        dead -= live
        _remove_files(shm_dir, dead, live)
    return sorted(n for _, n in dead)


# -- the registry's layout and lock ----------------------------------------------------------


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        raise JackRegistryError(f"{path}: cannot open the JACK registry ({e.strerror})") from e
    try:
        size = os.fstat(fd).st_size
        if size < _HDR_LEN:
            raise JackRegistryError(f"{path}: {size} bytes, too short for a JACK registry")
        buf = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    try:
        magic, _, kind, total, hdr_len, entry_len = _HEADER.unpack_from(buf, 0)
        if (magic, kind, total, hdr_len, entry_len) != (
                MAGIC, SHM_POSIX, size, _HDR_LEN, _ENTRY_LEN) \
                or size != _HDR_LEN + MAX_SHM_ID * _ENTRY_LEN:
            raise JackRegistryError(
                f"{path}: not the jackd2 POSIX registry layout this reads (magic {magic:#x}, "
                f"type {kind}, size {total}, header {hdr_len}, entry {entry_len}); left as is")
        yield buf
        buf.flush()
    finally:
        buf.close()


def _slots(buf: mmap.mmap) -> Iterator[tuple[int, Server]]:
    """The used server slots: (offset, server)."""
    for i in range(MAX_SERVERS):
        offset = _HEADER.size + i * _SERVER_LEN
        (pid,) = struct.unpack_from("<i", buf, offset)
        if pid <= 0:
            continue
        raw = buf[offset + 4:offset + 4 + _NAME_LEN].split(b"\0", 1)[0]
        m = _SERVER_NAME.fullmatch(raw.decode("utf-8", "replace"))
        uid, name = (int(m.group(1)), m.group(2)) if m else (-1, raw.decode("utf-8", "replace"))
        yield offset, Server(pid, uid, name)


def _segments(buf: mmap.mmap) -> Iterator[tuple[int, int, str]]:
    """The allocated segment entries: (offset, allocator pid, shm name)."""
    for i in range(MAX_SHM_ID):
        offset = _HDR_LEN + i * _ENTRY_LEN
        (allocator,) = struct.unpack_from("<i", buf, offset + 4)
        if allocator > 0:
            raw = buf[offset + 12:offset + _ENTRY_LEN].split(b"\0", 1)[0]
            yield offset, allocator, raw.decode("utf-8", "replace")


def _free_segments(buf: mmap.mmap, shm_dir: Path) -> None:
    """Unlink and free each segment whose allocator is gone (as jackd's jack_cleanup_shm)."""
    for offset, allocator, shm_id in list(_segments(buf)):
        if alive(allocator):
            continue
        if re.fullmatch(r"/jack-\d+-\d+", shm_id):
            (shm_dir / shm_id[1:]).unlink(missing_ok=True)
        buf[offset + 4:offset + _ENTRY_LEN] = bytes(_ENTRY_LEN - 4)


def _remove_files(shm_dir: Path, dead: set[tuple[int, str]],
                  live: set[tuple[int, str]]) -> None:
    """Remove the sockets and semaphores of the ``dead`` servers that no ``live`` name also
    claims (a name may be another's prefix: ``a`` and ``a_b``)."""
    if not dead:
        return

    def pattern(uid: int, name: str) -> re.Pattern[str]:
        n = re.escape(name)
        return re.compile(rf"jack_{n}_{uid}_\d+|jack_sem\.{uid}_{n}_.+")

    doomed = [pattern(*d) for d in dead]
    kept = [pattern(*s) for s in live]
    for entry in os.scandir(shm_dir):
        if not any(p.fullmatch(entry.name) for p in doomed):
            continue
        if any(p.fullmatch(entry.name) for p in kept):
            continue
        if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode) and _listening(entry.path):
            continue
        Path(entry.path).unlink(missing_ok=True)


def _orphans(shm_dir: Path, live: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Servers of this user whose slot is gone but whose socket is left: no live server of
    that name, nothing listening, and older than ORPHAN_AGE_S (past any bind-to-listen)."""
    uid, found = os.getuid(), set()
    for entry in os.scandir(shm_dir):
        m = re.fullmatch(r"jack_(.+)_(\d+)_\d+", entry.name)
        if not m or int(m.group(2)) != uid or (uid, m.group(1)) in live:
            continue
        st = entry.stat(follow_symlinks=False)
        if (stat.S_ISSOCK(st.st_mode) and time.time() - st.st_mtime > ORPHAN_AGE_S
                and not _listening(entry.path)):
            found.add((uid, m.group(1)))
    return found


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class _Sembuf(ctypes.Structure):
    _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short),
                ("sem_flg", ctypes.c_short)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


@contextmanager
def _locked() -> Iterator[None]:
    """Hold jackd's registry semaphore (with SEM_UNDO, so a killed holder releases it)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    semid = libc.semget(SEMAPHORE_KEY, 0, 0)
    if semid == -1:
        if ctypes.get_errno() != errno.ENOENT:
            raise JackRegistryError(f"JACK registry lock: {os.strerror(ctypes.get_errno())}")
        semid = _create_semaphore(libc)

    def op(value: int, timeout: _Timespec | None) -> int:
        sb = _Sembuf(0, value, _SEM_UNDO)
        return libc.semtimedop(semid, ctypes.byref(sb), 1,
                               ctypes.byref(timeout) if timeout else None)

    if op(-1, _Timespec(int(LOCK_TIMEOUT_S), 0)) == -1:
        raise JackRegistryError(f"JACK registry lock {SEMAPHORE_KEY:#x} not had within "
                                f"{LOCK_TIMEOUT_S:g} s ({os.strerror(ctypes.get_errno())})")
    try:
        yield
    finally:
        op(1, None)


def _create_semaphore(libc: ctypes.CDLL) -> int:
    """Create the semaphore as jackd does (one owner), or take the one created meanwhile."""
    semid = libc.semget(SEMAPHORE_KEY, 1, 0o1000 | 0o2000 | 0o666)  # IPC_CREAT | IPC_EXCL
    if semid != -1:
        if libc.semop(semid, ctypes.byref(_Sembuf(0, 1, 0)), 1) == -1:
            raise JackRegistryError(f"JACK registry lock: {os.strerror(ctypes.get_errno())}")
        return semid
    semid = libc.semget(SEMAPHORE_KEY, 0, 0)
    if semid == -1:
        raise JackRegistryError(f"JACK registry lock: {os.strerror(ctypes.get_errno())}")
    return semid
