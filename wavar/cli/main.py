"""The ``wavar`` console command: one subcommand per module of :mod:`wavar.cli`."""

from __future__ import annotations

import importlib
import sys

from wavar import __version__

# subcommand -> (module, whether the module's parser expects the subcommand name itself)
COMMANDS = {
    "encode": ("wavar.cli.codec", True),
    "decode": ("wavar.cli.codec", True),
    "show": ("wavar.cli.codec", True),
    "compress": ("wavar.cli.compress", True),
    "decompress": ("wavar.cli.compress", True),
    "data": ("wavar.cli.data", False),
    "train": ("wavar.cli.train", False),
    "sample": ("wavar.cli.sample", False),
    "plot": ("wavar.cli.plot", False),
    "eval": ("wavar.cli.eval", False),
    "serve": ("wavar.cli.serve", False),
}

USAGE = """usage: wavar COMMAND ...

Autoregressive image generation in a wavelet language.

commands:
  encode   code an image into a token file (.wvr)
  decode   decode a token file, or any prefix of it, to an image
  show     the coarse-to-fine decode of an image as a labelled strip (and --gif)
  compress    code an image into a .wvc file with a model's probabilities
  decompress  decode a .wvc file, or a byte prefix of it, to an image
  data     fetch, tokenize and describe datasets
  train    train a model (runs under torchrun for several GPUs)
  sample   sample images from a model
  plot     learning curves of training runs (metrics.jsonl)
  eval     FID, KID, CAS and likelihood of a model or of external samples
  serve    a web page to sample, watch images sharpen, upload and complete them

Run 'wavar COMMAND --help' for the options of a command."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"wavar {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"wavar: error: unknown command {name!r} (try 'wavar --help')", file=sys.stderr)
        return 2
    module, wants_name = COMMANDS[name]
    # Imported by name, on demand: `wavar encode` must not need torch, which `wavar train`
    # imports; a subcommand whose dependency is missing says so in one line.
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        print(f"wavar: error: '{name}' needs {e.name}, which is not installed", file=sys.stderr)
        return 1
    return mod.main([name, *rest] if wants_name else rest)


if __name__ == "__main__":
    sys.exit(main())
