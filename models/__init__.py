"""The model packages installed with the companion: a folder ``NAME`` here is the model
``NAME`` (or ``models/NAME``) from any working folder (see companion.engine.model.locate)."""
