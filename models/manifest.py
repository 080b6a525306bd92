"""``manifest.json``: what provisioning built, and whether it is still intact on disk.

A model counts as provisioned only when its manifest entry exists, was built from the wheels the catalog
pins today, and every recorded file exists with its recorded size. Hashes are recorded too but only
checked on request, because hashing ~1.5 GB at every start would cost seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models.catalog import ModelSpec

MANIFEST_NAME = "manifest.json"
_FORMAT = 1
_HASH_BLOCK = 1 << 20
_BAR_MIN_BYTES = 8 << 20  # smaller files hash before a bar is readable


class Status(StrEnum):
    """State of one model in a models directory."""

    VALID = "valid"
    INVALID = "invalid"  # an entry exists but files are gone, resized or altered, or the recipe changed
    MISSING = "missing"  # never built (or the build never finished)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """Size and SHA-256 of one file of a model."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """Manifest record of one built model.

    Attributes:
        files: Relative path inside the model directory -> record.
        sources: The ``package==version`` requirements it was built from.
        created: ISO-8601 UTC time the build finished.
        profile: The profile whose provisioning built it.
        assembly: How it was assembled (see :class:`models.catalog.Assembly`).
        build_seconds: Wall time of the build, downloads included.
        recipe: The catalog recipe revision it was built with.
    """

    files: dict[str, FileRecord]
    sources: tuple[str, ...]
    created: str
    profile: str
    assembly: str
    build_seconds: float
    recipe: int = 1

    @property
    def size(self) -> int:
        """Total bytes of the model's files."""
        return sum(record.size for record in self.files.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> ModelEntry:
        return ModelEntry(
            files={path: FileRecord(**record) for path, record in data["files"].items()},
            sources=tuple(data["sources"]),
            created=str(data["created"]),
            profile=str(data["profile"]),
            assembly=str(data["assembly"]),
            build_seconds=float(data.get("build_seconds", 0.0)),
            recipe=int(data.get("recipe", 1)),
        )


@dataclass(slots=True)
class Manifest:
    """All model entries of one models directory. Mutable; persist with :meth:`save`."""

    models: dict[str, ModelEntry] = field(default_factory=dict)

    @staticmethod
    def load(models_dir: Path) -> Manifest:
        """Read ``manifest.json``; a missing or unreadable file yields an empty manifest.

        An unreadable manifest is treated as empty on purpose: every model then looks missing and the
        next provisioning rebuilds it, which is the safe recovery.
        """
        try:
            data = json.loads((models_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT:
                return Manifest()
            return Manifest({name: ModelEntry.from_json(entry) for name, entry in data["models"].items()})
        except (OSError, ValueError, KeyError, TypeError):
            return Manifest()

    def save(self, models_dir: Path) -> None:
        """Write ``manifest.json`` atomically (temp file + rename), so readers never see half a file."""
        models_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "models": {name: self.models[name].to_json() for name in sorted(self.models)},
        }
        tmp = models_dir / f".{MANIFEST_NAME}.tmp"
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, models_dir / MANIFEST_NAME)

    def status(self, spec: ModelSpec, models_dir: Path, *, verify: bool = False, progress: bool = False) -> Status:
        """Whether ``spec`` is built intact under ``models_dir``.

        Args:
            spec: The catalog entry to check.
            models_dir: The models directory.
            verify: Also recompute every file's SHA-256 (slow: reads every byte).
            progress: Show a hashing progress bar on stderr when verifying.
        """
        entry = self.models.get(spec.name)
        if entry is None:
            return Status.MISSING
        if entry.sources != tuple(wheel.requirement for wheel in spec.wheels) or entry.recipe != spec.recipe:
            return Status.INVALID
        model_dir = models_dir / spec.name
        for rel, record in entry.files.items():
            path = model_dir / rel
            try:
                if path.stat().st_size != record.size:
                    return Status.INVALID
            except OSError:
                return Status.INVALID
        if verify:
            for rel, record in entry.files.items():
                if sha256_file(model_dir / rel, progress=progress) != record.sha256:
                    return Status.INVALID
        return Status.VALID


def sha256_file(path: Path, *, progress: bool = False) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        path.open("rb") as src,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"hash {path.name}",
            disable=not progress or size < _BAR_MIN_BYTES,
            leave=False,
        ) as bar,
    ):
        while block := src.read(_HASH_BLOCK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def record_tree(model_dir: Path, known: dict[str, FileRecord], *, progress: bool = False) -> dict[str, FileRecord]:
    """Records for every file under ``model_dir``, hashing those not already in ``known``.

    ``known`` carries hashes computed while the files were written, so they are not read twice.
    """
    records: dict[str, FileRecord] = {}
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        size = path.stat().st_size
        hit = known.get(rel)
        if hit is not None and hit.size == size:
            records[rel] = hit
        else:
            records[rel] = FileRecord(size=size, sha256=sha256_file(path, progress=progress))
    return records
