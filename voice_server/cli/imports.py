"""``soma import FILE… --me NAME``: import export files from the command line, with a progress bar on stderr.

Runs the same job as ``POST /v1/imports`` (`run_import`), file after file, each in its own transaction,
reading the files where they are (they are the user's own files). Memories are created when the configured
profile's embedder is provisioned (``SOMA_LOAD_MODELS=false`` or a missing model: the messages are stored,
no memories, and the report says so). Audio and video files and WhatsApp archives with media are
transcribed with the profile's speech model, loaded only when such a file is given (the bar then counts
seconds of audio); the recordings (and a video's keyframes) are kept sealed in the media store, as the
server does. Works next to a running server (its database is used) or alone (the embedded database is
started and stopped here).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from voice_server.avatar.importers import FORMATS, HEAD_BYTES, MEDIA_FORMATS, Format, ImportFormatError, Me, detect
from voice_server.avatar.importers.recordings import seconds_label
from voice_server.avatar.imports.job import ImportFailed, ImportResult, Progress, create_import, run_import, worker_id
from voice_server.cli.common import StartupError, account_id, cli_database, cli_keyring
from voice_server.config import load_settings
from voice_server.logs import configure_logging

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
BAR_WIDTH = 30


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``import`` command."""
    cmd = subparsers.add_parser(
        "import",
        help="import exported chats/notes (WhatsApp, Telegram, generic JSON/CSV, notes, Facebook/Instagram, X), "
        "voice notes and other audio, videos, and WhatsApp exports with media (.zip)",
        description="Each file is imported in one transaction: a damaged file adds nothing. Importing a file "
        "again adds nothing it already added. Exit status 1 if any file failed.",
    )
    cmd.add_argument("files", nargs="+", type=Path, metavar="FILE")
    cmd.add_argument("--me", required=True, action="append", help="your name (or Telegram id) in the export; repeat")
    cmd.add_argument("--format", choices=FORMATS, help="the files' format (default: detected per file)")
    cmd.add_argument("--speaker", help="audio/video: who speaks in the recordings (default: you)")
    cmd.add_argument("--user", help="the account to import into (default: the only account)")
    cmd.add_argument("--config", type=Path)
    cmd.set_defaults(func=_cmd_import)


class ProgressBar:
    """A one-line progress bar on a terminal stream (a line per 10 % elsewhere, e.g. in logs)."""

    def __init__(self, stream: IO[str], label: str) -> None:
        self._stream = stream
        self._label = label
        self._tty = stream.isatty()
        self._shown = -1
        self._last = 0.0

    def update(self, p: Progress) -> None:
        transcribing = p.audio_total_s > 0 and p.read == 0 and p.skipped == 0
        if transcribing:
            fraction = min(1.0, p.audio_s / p.audio_total_s)
        else:
            fraction = p.position / p.size if p.size else 1.0
        tenth = int(fraction * 10)
        now = time.monotonic()
        if self._tty and now - self._last < 0.1 and fraction < 1:
            return
        if not self._tty and tenth == self._shown:
            return
        self._shown, self._last = tenth, now
        filled = int(fraction * BAR_WIDTH)
        done = (f"{seconds_label(p.audio_s)} of {seconds_label(p.audio_total_s)} of audio transcribed"
                if transcribing else f"{p.read} messages")
        line = f"{self._label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {done}"
        self._stream.write(("\r" + line) if self._tty else line + "\n")
        self._stream.flush()

    def end(self) -> None:
        if self._tty:
            self._stream.write("\n")


def _cmd_import(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    configure_logging("warning", settings.log_format)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"soma: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return asyncio.run(_import(settings, args))
    except StartupError as exc:
        print(f"soma: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


async def _import(settings: Any, args: argparse.Namespace) -> int:
    keys = cli_keyring(settings)
    embedder = await asyncio.to_thread(_load_embedder, settings)
    asr = await asyncio.to_thread(_load_asr, settings) if _any_media(args.files, args.format) else None
    failed = 0
    try:
        async with cli_database(settings) as db:
            async with db.pool.connection() as conn:
                await keys.open_server_keys(conn)
                user_id = await account_id(conn, args.user)
            from voice_server.avatar.imports.recordings_plan import MediaTools
            from voice_server.user_files import MediaStore

            media = MediaTools(asr, MediaStore(db, keys, settings.media_dir), settings.media_max_bytes)
            for path in args.files:
                fmt: Format | None = args.format
                async with db.pool.connection() as conn:
                    import_id = await create_import(
                        conn, keys, user_id, path.name, fmt, path.stat().st_size, worker=worker_id(settings.data_dir)
                    )
                bar = ProgressBar(sys.stderr, path.name)
                try:
                    result = await run_import(
                        db, keys, embedder, user_id=user_id, import_id=import_id,
                        open_file=functools.partial(_open, path), name=str(path), me=Me.of(args.me), fmt=fmt,
                        progress=bar.update, media=media, speaker=args.speaker,
                        modified=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                    )
                except ImportFailed as exc:
                    bar.end()
                    print(f"{path}: failed, nothing imported: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                bar.end()
                skipped = ", ".join(f"{n} {reason}" for reason, n in result.skipped.items()) or "none"
                memories = f"{result.memories} memories" if embedder is not None else "no memories (no embedder)"
                print(f"{path}: {result.format}: {result.read} messages read, {result.created} new, skipped: "
                      f"{skipped}; {memories}{_media_summary(result)}", file=sys.stderr)
    finally:
        if embedder is not None:
            embedder.close()
        if asr is not None:
            asr.close()
    return EXIT_FAILED if failed else EXIT_OK


def _media_summary(result: ImportResult) -> str:
    """``; 1 min 02 s of audio transcribed, 3 keyframes kept`` (empty for a text import)."""
    if not result.media:
        return ""
    frames = sum(len(entry.get("keyframes", ())) for entry in result.media)
    kept = f", {frames} keyframes kept" if frames else ""
    statuses = sorted({entry["status"] for entry in result.media} - {"transcribed"})
    other = f" ({', '.join(statuses)})" if statuses else ""
    return f"; {seconds_label(result.audio_s)} of audio transcribed{kept}{other}"


def _any_media(files: list[Path], fmt: Format | None) -> bool:
    """Whether any file is audio, video or an archive (then the speech model is loaded)."""
    if fmt is not None:
        return fmt in MEDIA_FORMATS
    for path in files:
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
        try:
            if detect(path, head) in MEDIA_FORMATS:
                return True
        except ImportFormatError:
            continue  # reported when the file's turn comes
    return False


def _load_asr(settings: Any) -> Any:
    if not settings.load_models:
        print("soma: warning: SOMA_LOAD_MODELS=false: audio and video cannot be transcribed", file=sys.stderr)
        return None
    from models.asr import load_asr
    from models.paths import ModelMissingError

    try:
        return load_asr(settings.models_dir, settings.model_profile)
    except ModelMissingError as exc:
        print(f"soma: warning: {exc}; audio and video cannot be transcribed", file=sys.stderr)
        return None


def _open(path: Path) -> IO[bytes]:
    return path.open("rb")


def _load_embedder(settings: Any) -> Any:
    if not settings.load_models:
        return None
    from models.embed import load_embedder
    from models.paths import ModelMissingError

    try:
        return load_embedder(settings.models_dir, settings.model_profile)
    except ModelMissingError as exc:
        print(f"soma: warning: {exc}; importing without creating memories", file=sys.stderr)
        return None
