"""``soma train [--user U] [--minutes N] [--steps S]``: train the avatar's own model from the command line, with a
progress bar (stage, step, loss, tokens/s, ETA) on stderr, then the evaluation and whether it was switched on.

Runs the same job as ``POST /v1/training/jobs`` (`voice_server.avatar.training`), in this process, with the
configured profile's LLM loaded for the comparison. Next to a running server it uses the server's database, but
it cannot see that server's calls, so it does not step aside for them: start training from the web page or the
API while the server is taking calls. Ctrl-C stops the job (the trainer checkpoints first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from voice_server.cli.common import StartupError, account_id, cli_database, cli_keyring
from voice_server.config import load_settings
from voice_server.logs import configure_logging

if TYPE_CHECKING:  # the service pulls in the stores; imported when the command runs
    from voice_server.avatar.training.service import TrainingService

EXIT_OK, EXIT_NOT_ON, EXIT_ERROR, EXIT_FAILED = 0, 1, 2, 3
BAR_WIDTH = 30
FINAL = ("done", "failed", "cancelled")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``train`` command."""
    cmd = subparsers.add_parser(
        "train",
        help="train the avatar's own model on your imported chats (LoRA on the base LLM, evaluated, sealed)",
        description="Exit status 0 when the trained model beat the prompt-only avatar and was switched on, 1 when "
        "it was kept but not switched on, 2 for bad input (e.g. too little data), 3 when training failed.",
    )
    cmd.add_argument("--user", help="the account to train for (default: the only account)")
    cmd.add_argument("--minutes", type=float, help="time budget of the training stage (default 60)")
    cmd.add_argument("--steps", type=int, help="step budget, batches of 4 replies (default 250)")
    cmd.add_argument("--config", type=Path)
    cmd.set_defaults(func=_cmd_train)


class TrainBar:
    """One line of progress on a terminal (a line per stage and per 10 % of the steps elsewhere)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._stage = ""
        self._tenth = -1
        self._last = 0.0

    def show(self, live: dict[str, Any]) -> None:
        stage = str(live["stage"])
        total = int(live["total_steps"] or 0)
        fraction = live["step"] / total if total else 0.0
        now = time.monotonic()
        if stage != self._stage:
            if self._tty and self._stage:
                self._stream.write("\n")
            self._stage = stage
        elif self._tty and now - self._last < 0.2:
            return
        elif not self._tty and int(fraction * 10) == self._tenth:
            return
        self._tenth, self._last = int(fraction * 10), now
        filled = int(fraction * BAR_WIDTH)
        parts = [f"{stage:<10}"]
        if stage == "training" and total:
            parts.append(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] step {live['step']}/{total}")
            if live["loss"] is not None:
                parts.append(f"loss {live['loss']:.3f}")
            if live["tokens_per_s"]:
                parts.append(f"{live['tokens_per_s']:.0f} tok/s")
            if live["eta_s"] is not None:
                parts.append(f"ETA {int(live['eta_s']) // 60}:{int(live['eta_s']) % 60:02d}")
        line = "  ".join(parts)
        self._stream.write(("\r" + line.ljust(100)) if self._tty else line + "\n")
        self._stream.flush()

    def end(self) -> None:
        if self._tty:
            self._stream.write("\n")


def _cmd_train(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    configure_logging("warning", settings.log_format)
    try:
        return asyncio.run(_train(settings, args))
    except StartupError as exc:
        print(f"soma: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


async def _train(settings: Any, args: argparse.Namespace) -> int:
    from models.llm import CT2Llm, load_llm
    from models.paths import ModelMissingError
    from voice_server.accounts import get_user
    from voice_server.avatar.imports.job import worker_id
    from voice_server.avatar.persona.service import PersonaService
    from voice_server.avatar.training.job import TrainingSettings
    from voice_server.avatar.training.pairs import TooLittleDataError
    from voice_server.avatar.training.service import TrainingService, TrainingUnavailableError
    from voice_server.conversations import ConversationStore
    from voice_server.live_calls import LiveCalls

    keys = cli_keyring(settings)
    try:
        llm = await asyncio.to_thread(load_llm, settings.models_dir, settings.model_profile)
    except ModelMissingError as exc:
        raise StartupError(str(exc)) from None
    try:
        async with cli_database(settings) as db:
            async with db.pool.connection() as conn:
                await keys.open_server_keys(conn)
                user_id = await account_id(conn, args.user)
                account = await get_user(conn, user_id)
            if account is None:
                raise StartupError("the account vanished")
            persona = PersonaService(db, keys, None, turns=ConversationStore(db, keys))
            service = TrainingService(
                db, keys,
                TrainingSettings(llm.model_dir, llm.model_dir.name, settings.data_dir / "tuned",
                                 threads=settings.training_threads,
                                 compare_pairs=settings.training_compare_pairs),
                # A worker id of its own: starting fails only what an earlier `soma train` left unfinished, never
                # a running server's job.
                LiveCalls(), llm, CT2Llm, persona.prompt_for, f"{worker_id(settings.data_dir)}-cli", 0,
            )
            await service.start()
            try:
                return await _run(service, user_id, str(account["username"]), args)
            except TooLittleDataError as exc:
                print(f"soma: error: {exc}; import more of your chats first", file=sys.stderr)
                return EXIT_ERROR
            except TrainingUnavailableError as exc:
                print(f"soma: error: {exc}", file=sys.stderr)
                return EXIT_ERROR
            finally:
                await service.aclose()
    finally:
        await asyncio.to_thread(llm.close, 10.0)


async def _run(service: TrainingService, user_id: uuid.UUID, username: str, args: argparse.Namespace) -> int:
    summary = await service.data(user_id)
    print(f"{summary['replies']} of your replies: {summary['train']} to learn from, {summary['heldout']} kept aside "
          "to test it", file=sys.stderr)
    row = await service.submit(user_id, username, minutes=args.minutes, max_steps=args.steps)
    if row is None:
        print("soma: error: a training job of yours is already queued or running", file=sys.stderr)
        return EXIT_ERROR
    bar = TrainBar(sys.stderr)
    try:
        while True:
            progress = service.progress(row["id"])
            if progress is None:
                break
            bar.show(progress.as_json())
            changed = progress.changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await changed.wait()
    except (KeyboardInterrupt, asyncio.CancelledError):
        await service.cancel(user_id, row["id"])
        raise
    finally:
        bar.end()
    job = await service.job(user_id, row["id"])
    if job is None or job["state"] != "done":
        if job is None:
            return EXIT_FAILED
        print(f"training {job['state']}: {job['error'] or ''}", file=sys.stderr)
        return EXIT_FAILED
    result = job["result"]
    ppl, dist = result["perplexity"], result["style_distance"]
    print(f"held-out perplexity: base {ppl['base']:.2f} -> trained {ppl['tuned']:.2f}", file=sys.stderr)
    print(f"style distance to your real replies: generic {dist['base']:.3f}, today's avatar {dist['prompt_only']:.3f}, "
          f"trained {dist['tuned']:.3f}", file=sys.stderr)
    print(("switched on: " if result["passed"] else "kept, not switched on: ") + result["reason"], file=sys.stderr)
    return EXIT_OK if result["passed"] else EXIT_NOT_ON
