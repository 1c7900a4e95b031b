"""Investigations of JACK2's behaviour (lab/README.md): not the product, never imported by
companion or bench."""
