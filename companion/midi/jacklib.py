"""Which libjack python-rtmidi's JACK clients speak through.

python-rtmidi's Linux wheels carry a libjack of their own (1.9.22 in python-rtmidi 1.5.8),
linked by a private name. A JACK client should speak its server's own version: the system's
libjack is the one installed with its jackd (or PipeWire's, which ``pw-jack`` puts first),
and the wheel's speaks to either only by chance. Loaded first and global, the system's
``libjack.so.0`` is the one rtmidi's JACK calls bind to (Python loads an extension with
RTLD_NOW, so the binding is made when rtmidi is imported). Where the system has no libjack,
the wheel's own serves.
"""

from __future__ import annotations

import ctypes
import sys

#: The system's JACK client library, by its soname (jackd2's and PipeWire's alike).
SONAME = "libjack.so.0"

_system: ctypes.CDLL | None = None


def use_system_libjack() -> bool:
    """Load the system's libjack global, on Linux, if rtmidi is not imported yet; whether
    rtmidi's JACK calls go to it (False: no system libjack, rtmidi came first, not Linux)."""
    global _system
    if _system is None and sys.platform.startswith("linux") and "rtmidi" not in sys.modules:
        try:
            _system = ctypes.CDLL(SONAME, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            return False
    return _system is not None
