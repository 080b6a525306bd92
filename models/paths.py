"""Where provisioned models live, and the error raised when one is not there."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

MODELS_DIR_ENV = "SOMA_MODELS_DIR"


def default_models_dir() -> Path:
    """Return the models directory: ``$SOMA_MODELS_DIR`` if set, else ``~/.cache/soma/models``.

    The directory is not created here; provisioning creates it.
    """
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "soma" / "models"


def provision_command(profile: str) -> str:
    """The exact shell command that provisions ``profile``."""
    return f"soma models provision --profile {profile}"


class ModelMissingError(RuntimeError):
    """A model the caller needs is absent or incomplete in the models directory.

    The message names every missing model and the one command that fixes it, so it can be shown to a
    user as is.

    Attributes:
        names: The missing model names.
        models_dir: The directory that was searched.
        profile: The profile whose provisioning installs the missing models.
    """

    def __init__(self, names: Sequence[str], models_dir: Path, profile: str) -> None:
        self.names = tuple(names)
        self.models_dir = models_dir
        self.profile = profile
        quoted = ", ".join(f"'{name}'" for name in self.names)
        noun, verb = ("model", "is") if len(self.names) == 1 else ("models", "are")
        super().__init__(
            f"{noun} {quoted} {verb} not provisioned under {models_dir}; run: {provision_command(profile)}"
        )
