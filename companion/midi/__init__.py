"""MIDI I/O. Importing it first makes python-rtmidi's JACK clients speak through the
system's libjack (`jacklib`)."""

from companion.midi.jacklib import use_system_libjack

use_system_libjack()
