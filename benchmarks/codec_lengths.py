"""Sequence-length statistics of the wavelet languages, beside the figures the paper reports.

Paper figures: MNIST (Haar, final threshold 2^-3) max 1742 tokens; Fashion-MNIST (bior4.4,
2^-4) max 3098, mean 1822.5 (zero-block) and 1601.7 (zero-tree).

For each dataset, split (train, test, all 70k) and language (zero-block, zero-tree; deferred
refinement, plus immediate as extra rows): max, mean, median, min, p99 tokens and the m~
distribution. Also tests one hypothesis for the zero-block mean gap: that the paper used one m~
per dataset (the dataset max) rather than one per image. The codec refuses such sequences (the
first plane of a sequence must hold a significant coefficient), so this script encodes them
with a copy of the codec's encoder loop that only drops that obligation (see
``_lenient_lengths``), and checks the lengths against the closed form
``own length + (global m~ - own m~) * cost of an all-insignificant plane``.

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/codec_lengths.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import CODEC, Report, machine_info
from numba import njit, prange

from wavar import WaveletCodec
from wavar.codec import coder
from wavar.codec import grammar as g
from wavar.data.datasets import load

DATASETS = {  # name: (wavelet, final threshold) as in the paper
    "mnist": ("haar", 2.0**-3),
    "fashion-mnist": ("bior4.4", 2.0**-4),
}
PAPER = {  # (dataset, language, statistic) -> value
    ("mnist", "zeroblock", "max"): 1742,
    ("fashion-mnist", "zeroblock", "max"): 3098,
    ("fashion-mnist", "zeroblock", "mean"): 1822.5,
    ("fashion-mnist", "zerotree", "mean"): 1601.7,
}
VARIANTS = [  # (language, refinement, m~ mode)
    ("zeroblock", "deferred", "per-image"),
    ("zerotree", "deferred", "per-image"),
    ("zeroblock", "immediate", "per-image"),
    ("zerotree", "immediate", "per-image"),
    ("zeroblock", "deferred", "global"),
    ("zerotree", "deferred", "global"),
]


@njit(cache=True, parallel=True)
def _lenient_lengths(mags, negs, m_tildes, n_planes, lang, immediate, channels, n_coef,
                     scan_index, parent, children, n_desc, is_ll, bottom_up, lengths):
    """coder.encode_one without the first-plane obligation, counting tokens only.

    Identical to the codec's encoder loop (same grammar.push, same data-symbol choice) except
    that the F_PLANENEED flag is cleared, so a leading all-insignificant plane is allowed.
    A length of ``-1 - t`` means the grammar refused symbol t (would be an error).
    """
    for i in prange(mags.shape[0]):
        mem = coder._state(lang, immediate, channels, n_coef, n_planes[i])
        mem[g.H_FLAGS] &= ~g.F_PLANENEED
        mag = mags[i]
        if lang == g.ZEROTREE:
            desc_max = coder._descendant_max(mag, channels, n_coef, parent, bottom_up)
        else:
            desc_max = mag[:1]
        thresholds = coder._thresholds(m_tildes[i], n_planes[i])
        n = 0
        while mem[g.H_KIND] != g.DONE:
            sym = coder._data_symbol(mem, mag, negs[i], desc_max, thresholds, scan_index,
                                     n_desc, is_ll)
            if g.push(mem, sym, scan_index, parent, children, n_desc, is_ll) == g.ERR_ILLEGAL:
                n = -1 - n
                break
            n += 1
        lengths[i] = n


def global_m_lengths(codec: WaveletCodec, coefs: np.ndarray, h: int, w: int,
                     m_global: int) -> np.ndarray:
    """Token counts when every image is coded from the same m~ (``m_global``)."""
    n, c, side, _ = coefs.shape
    geo = codec.geometry(h, w)
    flat = coefs.reshape(n, c * side * side)
    mt = np.full(n, m_global, np.int64)
    n_planes = np.maximum(mt - codec.final_exponent, 0)
    lengths = np.empty(n, np.int64)
    _lenient_lengths(np.abs(flat).astype(np.float64), flat < 0, mt, n_planes, codec.lang.code,
                     int(codec.refinement == "immediate"), c, side * side, geo.scan_index,
                     geo.parent, geo.children, geo.n_desc, geo.is_ll, geo.bottom_up, lengths)
    if (lengths < 0).any():
        raise RuntimeError("lenient encoder refused a symbol")
    return lengths


def empty_plane_cost(codec: WaveletCodec, h: int, w: int, channels: int) -> int:
    """Tokens of one all-insignificant plane (zero-block: one Group4x4 per 4x4 block;
    zero-tree: the LL coefficients plus a ZeroTree per coarsest detail coefficient)."""
    geo = codec.geometry(h, w)
    if codec.language == "zeroblock":
        return channels * geo.side * geo.side // 16
    ll = int(geo.is_ll.sum())
    return channels * 4 * ll  # LL + 3 coarsest detail subbands of the LL's size


def stats(lengths: np.ndarray, m_tilde: np.ndarray) -> dict:
    vals, counts = np.unique(m_tilde, return_counts=True)
    return {
        "n": int(len(lengths)),
        "max": int(lengths.max()),
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "min": int(lengths.min()),
        "p99": float(np.percentile(lengths, 99)),
        "m_tilde": {int(v): int(c) for v, c in zip(vals, counts, strict=True)},
        "argmax": int(lengths.argmax()),
    }


def run_dataset(name: str, n_per_split: int | None, rep: Report) -> dict:
    wavelet, final = DATASETS[name]
    splits = {s: load(name, s).x for s in ("train", "test")}
    if n_per_split:
        splits = {s: x[:n_per_split] for s, x in splits.items()}
    x_all = np.concatenate([splits["train"], splits["test"]])
    n_train = len(splits["train"])
    index = {"train": slice(0, n_train), "test": slice(n_train, None), "all": slice(None)}
    h, w = x_all.shape[1:3]
    channels = 1 if x_all.ndim == 3 else 3
    rep.print(f"\n== {name}: {wavelet}, final threshold 2^{int(np.log2(final))}, "
              f"{len(splits['train'])} train + {len(splits['test'])} test images ==")
    results: dict = {"wavelet": wavelet, "final_threshold": final, "variants": {}}
    coefs = None
    for language, refinement, mode in VARIANTS:
        codec = WaveletCodec(wavelet, language, final, refinement)
        t0 = time.perf_counter()
        if coefs is None:
            coefs = codec.coefficients(x_all)  # same transform for every variant
        m_own = codec.m_tilde(coefs).astype(np.int64)
        if mode == "per-image":
            lengths = np.empty(len(x_all), np.int64)
            for s in range(0, len(x_all), 10000):  # chunks bound the memory of token arrays
                seqs = codec.encode_coefficients(coefs[s:s + 10000], h, w)
                lengths[s:s + len(seqs)] = [len(q) for q in seqs]
                assert all(q.header.m_tilde == m for q, m in
                           zip(seqs, m_own[s:s + 10000], strict=True))
            per_split = {sp: stats(lengths[ix], m_own[ix]) for sp, ix in index.items()}
            key = f"{language}/{refinement}"
        else:
            per_split = {}
            cost = empty_plane_cost(codec, h, w, channels)
            own = np.asarray(results["variants"][f"{language}/{refinement}"]["lengths"])
            for sp, ix in index.items():
                m_glob = int(m_own[ix].max())  # the split's own max m~
                lengths = global_m_lengths(codec, coefs[ix], h, w, m_glob)
                closed = own[ix] + (m_glob - m_own[ix]) * cost
                per_split[sp] = stats(lengths, np.full(len(lengths), m_glob))
                per_split[sp]["m_global"] = m_glob
                per_split[sp]["empty_plane_cost"] = cost
                per_split[sp]["closed_form_matches"] = bool(np.array_equal(lengths, closed))
                per_split[sp]["mean_extra_planes"] = float((m_glob - m_own[ix]).mean())
            key = f"{language}/{refinement}/global-m~"
        secs = time.perf_counter() - t0
        entry = {"language": language, "refinement": refinement, "m_tilde_mode": mode,
                 "splits": per_split, "seconds": round(secs, 2)}
        if mode == "per-image":
            entry["lengths"] = lengths.tolist()  # kept for the closed-form check; dropped below
        results["variants"][key] = entry
    for v in results["variants"].values():
        v.pop("lengths", None)
    print_dataset(name, results, rep)
    return results


def print_dataset(name: str, results: dict, rep: Report) -> None:
    rows = []
    for key, v in results["variants"].items():
        for sp, s in v["splits"].items():
            mt = " ".join(f"{m}:{c}" for m, c in s["m_tilde"].items())
            if "m_global" in s:
                mt = f"all {s['m_global']} (+{s['mean_extra_planes']:.2f} planes x " \
                     f"{s['empty_plane_cost']} tok)"
            rows.append([key, sp, s["n"], s["max"], round(s["mean"], 1), s["median"], s["min"],
                         s["p99"], mt])
    rep.table(["variant", "split", "n", "max", "mean", "median", "min", "p99", "m~ (value:count)"],
              rows, title=f"{name}: tokens per image")


def compare_with_paper(all_results: dict, rep: Report) -> list[dict]:
    rows, out = [], []
    for (ds, lang, stat), paper in PAPER.items():
        if ds not in all_results:
            continue
        variants = all_results[ds]["variants"]
        row = {"dataset": ds, "language": lang, "statistic": stat, "paper": paper}
        for mode, key in (("per_image", f"{lang}/deferred"),
                          ("global", f"{lang}/deferred/global-m~")):
            for sp in ("train", "test", "all"):
                row[f"{mode}_{sp}"] = variants[key]["splits"][sp][stat]
        out.append(row)
        rows.append([ds, lang, stat, paper]
                    + [round(row[f"per_image_{sp}"], 1) for sp in ("train", "test", "all")]
                    + [round(row[f"global_{sp}"], 1) for sp in ("train", "test", "all")])
    rep.table(["dataset", "language", "stat", "paper", "ours train", "ours test", "ours all",
               "glob-m~ train", "glob-m~ test", "glob-m~ all"], rows,
              title="ours vs paper (deferred refinement; per-image m~ vs one global m~ = the "
                    "split's max)")
    return out


def verdict(rows: list[dict], rep: Report) -> dict:
    """Which hypothesis reproduces which paper figure (exact for max, +-1 token for means)."""
    def hit(row, col):
        ours, paper = row[col], row["paper"]
        return ours == paper if row["statistic"] == "max" else abs(ours - paper) <= 1.0

    out = {}
    cols = [f"{mode}_{sp}" for mode in ("per_image", "global") for sp in ("train", "test", "all")]
    rep.print("\nWhich figures each hypothesis reproduces (max: exact; mean: within 1 token):")
    for col in cols:
        ok = [f"{r['dataset']} {r['language']} {r['statistic']}" for r in rows if hit(r, col)]
        out[col] = ok
        mode, sp = col.rsplit("_", 1)
        rep.print(f"  m~ {mode:9s} {sp:5s}: {len(ok)}/{len(rows)}  {'; '.join(ok)}")
    rep.print("\nPer paper figure: the cells (m~ mode, split) that agree to the paper's printed "
              "precision (max: exact; mean: |diff| < 0.05), and the closest cell:")
    out["per_figure"] = []
    for r in rows:
        tol = 0.5 if r["statistic"] == "max" else 0.05
        diffs = {c: r[c] - r["paper"] for c in cols}
        exact = [c for c, d in diffs.items() if abs(d) < tol]
        best = min(diffs, key=lambda c: abs(diffs[c]))
        out["per_figure"].append({"figure": f"{r['dataset']} {r['language']} {r['statistic']}",
                                  "paper": r["paper"], "exact_cells": exact,
                                  "closest": best, "closest_diff": diffs[best]})
        rep.print(f"  {r['dataset']} {r['language']} {r['statistic']} {r['paper']}: "
                  f"exact in [{', '.join(exact)}]; closest {best} ({r[best]:.3f}, "
                  f"diff {diffs[best]:+.3f})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1000 images per split (smoke run)")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = ap.parse_args()
    rep = Report("codec_lengths", args.quick, CODEC)
    rep.print("Sequence lengths of the wavelet languages" + (" (QUICK)" if args.quick else ""))
    all_results = {ds: run_dataset(ds, 1000 if args.quick else None, rep)
                   for ds in args.datasets}
    rows = compare_with_paper(all_results, rep)
    hyp = verdict(rows, rep)
    rep.save({"machine": machine_info(), "paper": {"/".join(k): v for k, v in PAPER.items()},
              "datasets": all_results, "comparison": rows, "hypotheses": hyp})


if __name__ == "__main__":
    main()
