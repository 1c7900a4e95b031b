"""MIDI I/O. python-rtmidi is reached through `jacklib.load_rtmidi` only, so that its JACK
calls bind to the system's libjack; importing this package loads nothing."""
