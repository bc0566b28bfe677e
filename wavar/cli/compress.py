"""``wavar compress`` / ``wavar decompress``: image files range-coded with a model (``.wvc``).

Examples
--------
::

    wavar compress digit.png -o digit.wvc --model mnist
    wavar compress digit.png -o small.wvc --model mnist --planes 3     # the first 3 bit-planes
    wavar compress digit.png -o tiny.wvc --model mnist --bytes 60      # fits in 60 bytes
    wavar decompress digit.wvc -o digit.png
    wavar decompress digit.wvc -o coarse.png --bytes 40   # from the payload's first 40 bytes

The file names its zoo model; ``decompress`` loads it unless ``--model`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wavar.cli.common import Parser, UsageError, run
from wavar.imageio import read_image
from wavar.viz import save_png


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="wavar", add_help=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compress", help="code an image into a .wvc file with a model")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, metavar="FILE.wvc")
    p.add_argument("--model", required=True, help="zoo name or model folder")
    p.add_argument("--class", dest="label", default=None, metavar="C",
                   help="condition on this class (name or index; default unconditional)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--lossless", action="store_true",
                     help="every token; refuses a model whose codec is lossy")
    how.add_argument("--planes", type=int, default=None, metavar="K",
                     help="code only the first K bit-planes")
    how.add_argument("--bytes", type=int, default=None, metavar="B",
                     help="the longest token prefix whose file fits in B bytes")
    p.set_defaults(func=_compress)

    p = sub.add_parser("decompress", help="decode a .wvc file (or a prefix of it) to an image")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")
    p.add_argument("--model", default=None, help="the model (default: the one the file names)")
    p.add_argument("--bytes", type=int, default=None, metavar="N",
                   help="decode from the payload's first N bytes only (a coarser image)")
    p.set_defaults(func=_decompress)
    return parser


def _compress(args: argparse.Namespace) -> int:
    from wavar.compress import compress
    from wavar.model.transformer import WaveletGPT
    from wavar.sample.generate import class_indices, class_names, image_shape_of

    model = WaveletGPT.from_pretrained(args.model)
    h, w, c = image_shape_of(model)
    img = read_image(args.image, "L" if c == 1 else "RGB")
    if img.shape[:2] != (h, w):
        raise UsageError(f"{args.image} is {img.shape[1]}x{img.shape[0]}; model {args.model!r} "
                         f"codes {w}x{h} images")
    label = None
    if args.label is not None:
        label = class_indices(class_names(model), args.label)[0]
    name = args.model if not Path(args.model).exists() else ""
    data = compress(model, img, model_name=name, label=label, planes=args.planes,
                    max_bytes=args.bytes, lossless=args.lossless)
    Path(args.output).write_bytes(data)
    print(f"{args.output}: {len(data)} bytes, {8 * len(data) / img.size:.3f} bits/dim")
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from wavar.compress import decompress

    model = None
    if args.model is not None:
        from wavar.model.transformer import WaveletGPT

        model = WaveletGPT.from_pretrained(args.model)
    img = decompress(Path(args.file).read_bytes(), model=model, n_bytes=args.bytes)
    save_png(args.output, img)
    print(f"{args.output}: {img.shape[1]}x{img.shape[0]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)
