"""``unas-cli`` (``python -m unas_lightning.cli``): LightningCLI with the project's parser, checks and outputs."""

from unas_lightning.cli.app import UnasCLI, main

__all__ = ["UnasCLI", "main"]
