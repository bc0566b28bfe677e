"""Helpers shared by the benchmark scripts: printing tables, recording output, machine info.

Results go to ``benchmarks/results/<topic>/`` (``codec``, ``eval``, ``train``, ``sampling``;
``benchmarks/results/README.md`` indexes every file). Every codec benchmark prints through a
:class:`Report`, which keeps a copy of what was printed, and finishes with :meth:`Report.save`,
which writes ``<folder>/<name>.json`` (raw figures) and ``<folder>/<name>.txt`` (the printed
tables).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# one folder per topic; the scripts that do not import this module name theirs the same way
CODEC, EVAL, TRAIN, SAMPLING = (RESULTS / t for t in ("codec", "eval", "train", "sampling"))


class Report:
    """Prints lines and keeps them, so the results folder gets a copy of the console output."""

    def __init__(self, name: str, quick: bool, folder: Path) -> None:
        self.name = name + ("_quick" if quick else "")
        self.folder = folder  # one of the topic folders above
        self.lines: list[str] = []
        self.started = time.time()

    def print(self, *parts: object) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]],
              title: str | None = None) -> None:
        """Print a plain-text table (right-aligned columns; floats as given by fmt())."""
        cells = [[fmt(c) for c in r] for r in rows]
        widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
                  for i, h in enumerate(header)]
        if title:
            self.print()
            self.print(title)
        self.print("  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True)))
        self.print("  ".join("-" * w for w in widths))
        for r in cells:
            self.print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))

    def save(self, data: dict) -> tuple[Path, Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"benchmark": self.name, "command": " ".join(sys.argv),
                "wall_seconds": round(time.time() - self.started, 1), **data}
        js, txt = self.folder / f"{self.name}.json", self.folder / f"{self.name}.txt"
        js.write_text(json.dumps(jsonable(data), indent=1) + "\n")
        txt.write_text("\n".join(self.lines) + "\n")
        print(f"\nwrote {js.relative_to(RESULTS.parent.parent)} and "
              f"{txt.relative_to(RESULTS.parent.parent)}")
        return js, txt


def fmt(x: object) -> str:
    if isinstance(x, float | np.floating):
        if math.isinf(x) or math.isnan(x):
            return str(x)
        if abs(x) >= 1e5:
            return f"{x:.3g}"
        if abs(x) >= 100:
            return f"{x:.1f}"
        return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"
    return str(x)


def jsonable(x):
    """Turn numpy scalars/arrays (recursively) into JSON-able Python objects."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return v if math.isfinite(v) else str(v)
    return x


def machine_info() -> dict:
    """CPU model, core count, load average, numba threads and library versions."""
    import numba
    import PIL

    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "numba_threads": numba.get_num_threads(),
        "numba_version": numba.__version__,
        "numpy_version": np.__version__,
        "pillow_version": PIL.__version__,
        "python": platform.python_version(),
    }


def slot_kind_entropy(codec, seqs) -> dict:
    """Order-0 token statistics conditioned on the slot kind, over a set of sequences.

    Returns a dict with ``kinds`` (per token kind ids, one array per sequence), ``counts``
    (kinds x vocab), ``static_costs`` (one float array per sequence: -log2 p(token | kind)
    with p the empirical frequencies over the whole set, i.e. the ideal arithmetic-code
    length under that static model, model cost not counted) and ``adaptive_costs`` (the same
    with a Krichevsky-Trofimov adaptive count per kind, restarted for every image: a code
    length an actual adaptive arithmetic coder would reach up to ~2 bits per image).
    """
    vocab = codec.lang.vocab_size
    kinds = [np.asarray(codec.slots(s).kind[:-1], np.int64) for s in seqs]
    n_kinds = 1 + max((int(k.max()) for k in kinds if len(k)), default=0)
    counts = np.zeros((n_kinds, vocab), np.int64)
    for k, s in zip(kinds, seqs, strict=True):
        np.add.at(counts, (k, np.asarray(s.tokens, np.int64)), 1)
    with np.errstate(divide="ignore"):
        cost_table = -np.log2(counts / np.maximum(counts.sum(1, keepdims=True), 1))
    static, adaptive = [], []
    for k, s in zip(kinds, seqs, strict=True):
        t = np.asarray(s.tokens, np.int64)
        static.append(cost_table[k, t])
        # KT estimator per kind: p(t) = (n_kt + 1/2) / (n_k + V/2), counts before this token
        onehot = np.zeros((len(t), n_kinds * vocab), np.int64)
        onehot[np.arange(len(t)), k * vocab + t] = 1
        before = np.cumsum(onehot, 0) - onehot
        n_kt = before[np.arange(len(t)), k * vocab + t]
        per_kind = before.reshape(len(t), n_kinds, vocab).sum(2)[np.arange(len(t)), k]
        adaptive.append(-np.log2((n_kt + 0.5) / (per_kind + vocab / 2)))
    total = counts.sum()
    p_kind = counts.sum(1) / max(total, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(counts > 0, -counts / np.maximum(counts.sum(1, keepdims=True), 1)
                     * np.log2(counts / np.maximum(counts.sum(1, keepdims=True), 1)), 0).sum(1)
    return {"kinds": kinds, "counts": counts, "static_costs": static,
            "adaptive_costs": adaptive, "bits_per_token": float((p_kind * h).sum()),
            "entropy_per_kind": h, "kind_share": p_kind}
