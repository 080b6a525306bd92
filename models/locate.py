"""Turning "which model" (a profile, a catalog name or a directory) into a checked model directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from models.catalog import CATALOG, PROFILES, Role, profile_model, smallest_profile_with
from models.manifest import Manifest, Status
from models.paths import ModelMissingError, default_models_dir


def locate(models_dir: Path | None, role: Role, which: str | Path) -> tuple[str, Path]:
    """Resolve ``which`` to ``(model name, model directory)`` for ``role``.

    Args:
        models_dir: The provisioned models directory; ``None`` means :func:`default_models_dir`.
        role: The role the caller loads (used to pick a profile's model).
        which: A profile name (``"ci"``, ``"full"``), a catalog model name (``"asr-base"``), or a
            :class:`~pathlib.Path` to any compatible model directory (a user's own fine-tuned CT2 model,
            a bigger Whisper...), which is used as is without a manifest check.

    Raises:
        ModelMissingError: The profile's or named model is not provisioned intact.
        KeyError: ``which`` is neither a profile nor a catalog model, or the model has another role.
    """
    if isinstance(which, Path):
        if not which.is_dir():
            raise FileNotFoundError(f"model directory {which} does not exist")
        return which.name, which
    base = (models_dir or default_models_dir()).expanduser()
    if which in PROFILES:
        name, profile = profile_model(which, role), which
    elif which in CATALOG:
        name, profile = which, smallest_profile_with(which)
        if CATALOG[name].role is not role:
            raise KeyError(f"model {name!r} is a {CATALOG[name].role.value} model, not {role.value}")
    else:
        raise KeyError(f"{which!r} is neither a profile ({', '.join(PROFILES)}) nor a known model")
    require_models(base, (name,), profile)
    return name, base / name


def require_models(models_dir: Path, names: Iterable[str], profile: str) -> None:
    """Raise one :class:`ModelMissingError` naming every model of ``names`` that is not valid.

    Only sizes are checked (cheap); ``soma models provision --verify`` re-hashes.
    """
    manifest = Manifest.load(models_dir)
    missing = [name for name in names if manifest.status(CATALOG[name], models_dir) is not Status.VALID]
    if missing:
        raise ModelMissingError(missing, models_dir, profile)
