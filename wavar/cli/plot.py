"""``wavar plot``: learning curves of training runs from their metrics.jsonl.

Example
-------
::

    wavar plot runs/mnist runs/mnist-large -o curves.png

Plots train and validation bits per token against training minutes, one colour per run.
Needs matplotlib (``pip install 'wavar[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wavar.cli.common import Parser, UsageError, run


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wavar plot", description="Plot learning curves of training runs.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or metrics.jsonl files")
    p.add_argument("-o", "--output", default="curves.png", metavar="PNG")
    p.set_defaults(func=_plot)
    return p


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(f"no metrics log at {path}")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{i + 1} is not a JSON line") from None
    return rows


def _plot(args: argparse.Namespace) -> int:
    try:  # lazy: matplotlib is the optional `bench` extra, needed by this command alone
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("wavar plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, run_path in enumerate(args.runs):
        rows = read_metrics(run_path)
        name = Path(run_path).name if Path(run_path).is_dir() else Path(run_path).parent.name
        colour = f"C{k}"
        train = [(r["elapsed_s"] / 60, r["bits_per_token"]) for r in rows if "bits_per_token" in r]
        val = [(r["elapsed_s"] / 60, r["val_bits_per_token"]) for r in rows
               if "val_bits_per_token" in r]
        if train:
            ax.plot(*zip(*train, strict=True), color=colour, alpha=0.5, label=f"{name} train")
        if val:
            ax.plot(*zip(*val, strict=True), "o-", color=colour, label=f"{name} val")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("bits per token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"{len(args.runs)} runs -> {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
