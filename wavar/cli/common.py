"""What every ``wavar`` subcommand shares: a parser that raises, and one-line error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from wavar.errors import WavarError


class UsageError(Exception):
    """A command-line usage error, reported by :func:`run` as one line."""


class Parser(argparse.ArgumentParser):
    # argparse prints usage and exits; we want one line and a return code, so errors are
    # raised and `run` reports them. Subparsers inherit this class.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run(build_parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None) -> int:
    """Parse ``argv`` and call ``args.func(args)``; report errors as ``wavar: error: ...``.

    Returns 2 for usage errors, 1 for bad input (a corrupt file, a missing dataset ...), with
    a single line on stderr and no traceback.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help: argparse printed it and wants to exit
            return e.code if isinstance(e.code, int) else 0
        return int(args.func(args) or 0)
    except UsageError as e:
        _report(e)
        return 2
    except (WavarError, ValueError, OSError) as e:
        _report(e)
        return 1
    except KeyboardInterrupt:
        print("wavar: interrupted", file=sys.stderr)
        return 130


def _report(e: BaseException) -> None:
    msg = " ".join(str(e).split())  # one line, whatever the message holds
    print(f"wavar: error: {msg}", file=sys.stderr)


def per_plane(text: str) -> float | tuple[float, ...]:
    """An argparse type: one number ("0.9"), or one per bit-plane ("1,1,0.9,0.8"; the last
    one holds for every later plane)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or comma-separated numbers per bit-plane, got {text!r}") from None
    return values[0] if len(values) == 1 else values
