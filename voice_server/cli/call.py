"""``soma call``: talk to the avatar from WAV files in this process (the work is in `voice_server.local_call`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from voice_server.cli.common import EXIT_CONFIG, EXIT_STARTUP, fail
from voice_server.logs import configure_logging


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``call`` command."""
    call = subparsers.add_parser(
        "call",
        help="talk to the avatar from WAV files in this process (no server): prints the conversation",
        description="Each WAV is one thing you say, played at real time through the voice pipeline; each next "
        "one follows the avatar's answer to the previous. --say adds typed turns after them.",
    )
    call.add_argument("wavs", nargs="*", type=Path, metavar="WAV", help="16-bit PCM WAV, any rate, mono or stereo")
    call.add_argument("--say", action="append", default=[], metavar="TEXT", help="a typed turn (repeatable)")
    call.add_argument("--out", type=Path, help="write the avatar's audio (24 kHz WAV) here")
    call.add_argument("--profile", choices=["ci", "full"], default="full", help="model profile (default full)")
    call.add_argument("--voice", choices=["fast", "quality"], default="fast", help="Piper (fast) or Kokoro")
    call.set_defaults(func=_cmd_call)


def _cmd_call(args: argparse.Namespace) -> int:
    from models.paths import ModelMissingError
    from voice_server.local_call import WavError, call_main

    if not args.wavs and not args.say:
        return fail("call: give at least one WAV file or --say TEXT", EXIT_CONFIG)
    configure_logging("warning", "auto")
    try:
        return call_main(args.wavs, args.say, args.out, args.profile, args.voice)
    except (WavError, ModelMissingError) as exc:
        return fail(str(exc), EXIT_STARTUP)
