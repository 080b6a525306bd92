"""The ``soma`` command: ``serve``, ``call``, ``users``, ``models``, ``keys``, ``audit``, ``import``, ``train``.

One module per group of sub-commands, each adding its own to the parser (``register``): `serve`, `users`,
`call`, `security` (``keys``, ``audit``), `imports` (``import``), `train`, and `models.cli`. What they share (exit
codes, `StartupError`, the database for a tool) is in `common`. Run as the ``soma`` console script or as
``python -m voice_server.cli``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from voice_server.cli.common import EXIT_CONFIG, fail
from voice_server.config import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``soma`` console script; returns the process exit code."""
    # Nothing Soma runs may reach a model hub: set before any model library is imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_CONFIG
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        return fail(f"configuration: {exc}", EXIT_CONFIG)
    except KeyboardInterrupt:
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soma", description="Soma — a personal AI avatar you can call.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    # Imported here, not at the top: each sub-command module imports `voice_server.cli.common`, which runs this
    # package's __init__ first, so top-level imports of them here would be circular.
    from models.cli import register as register_models
    from voice_server.cli import call, imports, security, serve, train, users

    serve.register(sub)
    users.register(sub)
    call.register(sub)
    register_models(sub)
    security.register(sub)
    imports.register(sub)
    train.register(sub)
    return parser
