"""The main job (`idstream demo`, `make demo`): see demo/main.py."""

from idstream.demo.main import add_arguments, run

__all__ = ["add_arguments", "run"]
