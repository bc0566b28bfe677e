"""``wavar compress`` / ``wavar decompress``: image files range-coded with a model (``.wvc``).

Examples
--------
::

    wavar compress digit.png -o digit.wvc --model mnist
    wavar compress digit.png -o small.wvc --model mnist --planes 3     # the first 3 bit-planes
    wavar compress digit.png -o tiny.wvc --model mnist --bytes 60      # fits in 60 bytes
    wavar compress digit.png -o pre.wvc --model mnist --tokens 300     # the first 300 tokens
    wavar decompress digit.wvc -o digit.png
    wavar decompress digit.wvc -o coarse.png --bytes 40   # from the payload's first 40 bytes
    wavar compress img/*.png -o codes/ --model mnist      # several: blocks of --rows at once
    wavar decompress codes/*.wvc -o out/                  # several: decoded together
    wavar compress img/*.png -o set.wvc --model mnist     # several in one archive
    wavar decompress set.wvc -o out/                      # an archive: its images, by name
    wavar compress coat.png -o coat.wvc --model fashion-mnist-raster-medium   # a pixel model:
                                                          # lossless, a prefix = the first rows

The file names its zoo model; ``decompress`` loads it unless ``--model`` is given. With several
inputs ``-o`` is a folder (made if missing) and each output takes its input's name, or, when
it ends in ``.wvc``, one archive holding them all (the header they share stored once: an
MNIST image then takes ~50 bytes instead of ~90); ``decompress`` writes an archive's images to
the folder ``-o`` under their names.
``--device cuda`` codes on a GPU (blocks of hundreds of rows pay off there: ``--rows 512``);
such a file decodes on the same GPU, torch and CUDA only, and ``decompress`` runs it there.
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
    p.add_argument("image", nargs="+", help="image file(s)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.wvc|DIR",
                   help="the file; with several images, a folder, or one archive if it ends "
                        "in .wvc")
    p.add_argument("--rows", type=int, default=16, metavar="R",
                   help="several images: code R at a time (default 16; each file records R)")
    p.add_argument("--model", required=True, help="zoo name or model folder")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="code on this device (default cpu); a file coded on a GPU decodes "
                        "only on the same GPU, torch and CUDA (its header says which)")
    p.add_argument("--class", dest="label", default=None, metavar="C",
                   help="condition on this class (name or index; default unconditional)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--lossless", action="store_true",
                     help="every token; refuses a model whose codec is lossy")
    how.add_argument("--planes", type=int, default=None, metavar="K",
                     help="code only the first K bit-planes")
    how.add_argument("--bytes", type=int, default=None, metavar="B",
                     help="the longest token prefix whose file fits in B bytes")
    how.add_argument("--tokens", type=int, default=None, metavar="K",
                     help="code only the first K tokens (a raster model: the first K pixels)")
    p.set_defaults(func=_compress)

    p = sub.add_parser("decompress", help="decode a .wvc file (or a prefix of it) to an image")
    p.add_argument("file", nargs="+", help=".wvc file(s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png|DIR",
                   help="the image; with several files or an archive, a folder")
    p.add_argument("--model", default=None, help="the model (default: the one the file names)")
    p.add_argument("--bytes", type=int, default=None, metavar="N",
                   help="decode from the payload's first N bytes only (a coarser image)")
    p.set_defaults(func=_decompress)
    return parser


def _outputs(inputs: list[str], output: str, suffix: str) -> list[Path]:
    """Where each input's result goes: ``output`` itself for one input, else a file named
    like the input (with ``suffix``) in the folder ``output``."""
    if len(inputs) == 1:
        return [Path(output)]
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {output}: with several inputs, -o names a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / (Path(i).stem + suffix) for i in inputs]
    if len(set(paths)) < len(paths):
        raise UsageError("several inputs share a name: their outputs would overwrite each other")
    return paths


def _archive_outputs(archive: str, names: list[str], output: str) -> list[Path]:
    """Where an archive's images go: the folder ``output``, each under its stored name (its
    index if it has none). A name is a file there, never a path out of it: an archive is
    untrusted input."""
    names = [n or f"{i:05d}" for i, n in enumerate(names)]
    if any(Path(n).name != n or n in (".", "..") for n in names):
        raise UsageError(f"{archive}: an image name is not a plain file name")
    if len(set(names)) < len(names):
        raise UsageError(f"{archive}: two images share a name")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {output}: an archive's images go to a folder")
    out.mkdir(parents=True, exist_ok=True)
    return [out / (n + ".png") for n in names]


def _compress(args: argparse.Namespace) -> int:
    from wavar.compress import compress, compress_many
    from wavar.model.transformer import WaveletGPT
    from wavar.sample.generate import class_indices, class_names, image_shape_of

    several = len(args.image) > 1
    if several and args.bytes is not None:
        raise UsageError("--bytes codes one image; give one image, or use --planes")
    if not 1 <= args.rows <= 65535:
        raise UsageError(f"--rows must lie in [1, 65535], got {args.rows}")
    if args.tokens is not None and args.tokens < 0:
        raise UsageError(f"--tokens must be >= 0, got {args.tokens}")
    archive = several and args.output.endswith(".wvc") and not Path(args.output).is_dir()
    stems = [Path(i).stem for i in args.image]
    if archive:
        if len(set(stems)) < len(stems):
            raise UsageError("several inputs share a name: the archive could not tell them "
                             "apart")
    outputs = [Path(args.output)] if archive else _outputs(args.image, args.output, ".wvc")
    model = WaveletGPT.from_pretrained(args.model)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device here")
        model = model.to("cuda")
    h, w, c = image_shape_of(model)
    images = []
    for path in args.image:
        img = read_image(path, "L" if c == 1 else "RGB")
        if img.shape[:2] != (h, w):
            raise UsageError(f"{path} is {img.shape[1]}x{img.shape[0]}; model {args.model!r} "
                             f"codes {w}x{h} images")
        images.append(img)
    label = None
    if args.label is not None:
        label = class_indices(class_names(model), args.label)[0]
    name = args.model if not Path(args.model).exists() else ""
    if several:
        files = compress_many(model, images, model_name=name, label=label, planes=args.planes,
                              rows=args.rows, lossless=args.lossless, tokens=args.tokens)
    else:
        files = [compress(model, images[0], model_name=name, label=label, planes=args.planes,
                          max_bytes=args.bytes, lossless=args.lossless, tokens=args.tokens)]
    if args.device == "cuda":
        from wavar.compress import device_tag

        print(f"coded on {device_tag('cuda')}: the files decode only there")
    if archive:
        from wavar.compress import pack_archive

        data = pack_archive(files, stems)
        outputs[0].write_bytes(data)
        apart = sum(map(len, files)) / len(files)
        print(f"{outputs[0]}: an archive of {len(files)} images, {len(data)} bytes "
              f"({len(data) / len(files):.1f} an image, {apart:.1f} as separate files), "
              f"{8 * len(data) / sum(i.size for i in images):.3f} bits/dim")
        return 0
    for out, data, img in zip(outputs, files, images, strict=True):
        out.write_bytes(data)
        print(f"{out}: {len(data)} bytes, {8 * len(data) / img.size:.3f} bits/dim")
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from wavar.compress import decompress, decompress_many, is_archive, read_header, unpack_archive

    if len(args.file) > 1 and args.bytes is not None:
        raise UsageError("--bytes decodes one file's prefix; give one file")
    datas = [Path(f).read_bytes() for f in args.file]
    archives = [f for f, d in zip(args.file, datas, strict=True) if is_archive(d)]
    if archives and (len(args.file) > 1 or args.bytes is not None):
        raise UsageError(f"{archives[0]} is an archive: decode it alone, whole (no --bytes)")
    if archives:
        datas, names = unpack_archive(datas[0])
        outputs = _archive_outputs(archives[0], names, args.output)
    else:
        outputs = _outputs(args.file, args.output, ".png")
    model = None
    if args.model is not None:
        from wavar.model.transformer import WaveletGPT

        model = WaveletGPT.from_pretrained(args.model)
    tags = {read_header(d)["device"] for d in datas}
    if tags - {""}:  # the file decides where it decodes: say so
        print(f"decoding on the GPU the files were coded on: {', '.join(sorted(tags - {''}))}")
    if len(datas) > 1 or archives:
        images = decompress_many(datas, model=model)
    else:
        images = [decompress(datas[0], model=model, n_bytes=args.bytes)]
    for out, img in zip(outputs, images, strict=True):
        save_png(out, img)
        print(f"{out}: {img.shape[1]}x{img.shape[0]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)
