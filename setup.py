"""The one build step pyproject.toml cannot say: the repository's config.yaml (the shipped
settings, each documented) goes into the package as companion/config.yaml, for `companion
config --init` of an installed companion (in a clone it is read where it lies:
companion.config.shipped_config)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):  # an editable install reads the clone's
            self.copy_file("config.yaml", str(Path(self.build_lib, "companion", "config.yaml")))


setup(cmdclass={"build_py": BuildPy})
