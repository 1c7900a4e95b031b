"""The control surface in the browser: a page that shows what the companion hears and plays
and steers it through ``Live.post`` (the path the MIDI controls take). See docs/ui.md."""
