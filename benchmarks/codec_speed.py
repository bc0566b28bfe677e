"""Codec speed on the CPU: wavar encode + decode images/s beside Pillow's OpenJPEG.

Cases (first N CIFAR-10 test images, default 1000):

1. colour 32x32, lossless: wavar ``cdf53`` (every decode checked bit-exact) vs OpenJPEG
   lossless (reversible 5/3 + RCT), the headline ratio wavar / OpenJPEG;
2. grey 32x32 (the luma Y = round(0.299 R + 0.587 G + 0.114 B) of the same images): wavar
   lossy ``bior4.4``, final threshold 2^-4, vs OpenJPEG lossless-grey and OpenJPEG lossy (9/7)
   at one fixed compression ratio calibrated so its mean payload matches the wavar tokens'
   order-0 entropy estimate (see benchmarks/_common.py: slot_kind_entropy).

wavar runs as a batch (``encode_batch`` / ``decode_batch``, numba threads over images), as a
batch on one numba thread, and one image per call (``encode`` / ``decode``); OpenJPEG runs one
image per call (Pillow has no batch API). Repeats are interleaved (every case once, then again)
so that load from other processes hits all cases alike; each figure is the median over
repeats, and each row records the CPU share other processes took while it ran. JIT compile
time is measured apart (a fresh numba cache in a subprocess, at the end) and excluded. A time
breakdown (transform, compiled token loop, the rest = Python/numpy glue) shows where wavar's
time goes.

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/codec_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
from _common import CODEC, Report, machine_info, slot_kind_entropy

from wavar import WaveletCodec
from wavar.codec import coder
from wavar.data.datasets import load
from wavar.eval import jpeg2000 as j2k
from wavar.eval.metrics import psnr

ROOT = Path(__file__).resolve().parent.parent


# -- load from other processes ------------------------------------------------------------------
def _busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Contention:
    """Context manager: share of the machine's CPU that *other* processes used meanwhile."""

    def __enter__(self) -> Contention:
        self.t, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_cpu()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t
        other = (_busy_seconds() - self.busy) - (_own_cpu() - self.own)
        self.other_share = max(0.0, other) / max(wall * os.cpu_count(), 1e-9)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def wait_for_quiet(max_wait: float, threshold: float = 0.1) -> float:
    """Wait (up to max_wait s) until other processes use < threshold of the CPU over 2 s."""
    t0 = time.perf_counter()
    while True:
        with Contention() as c:
            time.sleep(2.0)
        if c.other_share < threshold or time.perf_counter() - t0 > max_wait:
            return c.other_share


# -- one repetition of each case ---------------------------------------------------------------
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def wavar_case(codec: WaveletCodec, x: np.ndarray, mode: str):
    """One encode + decode of all images; mode 'batch', 'batch-1thread' or 'per-image'."""
    def run():
        threads = numba.get_num_threads()
        if mode == "batch-1thread":
            numba.set_num_threads(1)
        try:
            if mode == "per-image":
                t_enc, seqs = timed(lambda: [codec.encode(im) for im in x])
                t_dec, out = timed(lambda: [codec.decode(s) for s in seqs])
            else:
                t_enc, seqs = timed(lambda: codec.encode_batch(x))
                t_dec, out = timed(lambda: codec.decode_batch(seqs))
        finally:
            numba.set_num_threads(threads)
        return t_enc, t_dec, (seqs, out)
    return run


def openjpeg_case(x: np.ndarray, ratio: float | None = None):
    """One image per call; lossless unless ``ratio`` (then 9/7 at that compression ratio)."""
    imgs = list(x)
    if ratio is None:
        encode = j2k.encode_lossless
    else:  # the baseline's own lossy settings, at one fixed ratio (no rate search)
        encode = lambda im: j2k._encode_lossy(im, ratio)
    for im in imgs[:3]:
        j2k.decode(encode(im))  # warm-up (library load)

    def run():
        t_enc, streams = timed(lambda: [encode(im) for im in imgs])
        t_dec, out = timed(lambda: [j2k.decode(s) for s in streams])
        return t_enc, t_dec, (streams, out)
    return run


def measure(cases: dict, repeats: int) -> dict:
    """Run every case once per repeat, interleaved; per case the lists of results."""
    rec = {name: {"encode_s": [], "decode_s": [], "other_cpu_share": []} for name in cases}
    last = {}
    for _ in range(repeats):
        for name, fn in cases.items():
            with Contention() as c:
                t_enc, t_dec, payload = fn()
            rec[name]["encode_s"].append(t_enc)
            rec[name]["decode_s"].append(t_dec)
            rec[name]["other_cpu_share"].append(round(c.other_share, 3))
            last[name] = payload
    return rec, last


def summarise(name: str, r: dict, n: int) -> dict:
    codec, mode = name.split(":", 1)
    enc, dec = statistics.median(r["encode_s"]), statistics.median(r["decode_s"])
    return {"codec": codec, "mode": mode, "n_images": n, "encode_s": enc, "decode_s": dec,
            "total_s": enc + dec, "images_per_s": n / (enc + dec),
            "encode_images_per_s": n / enc,
            "decode_images_per_s": n / dec if dec else math.nan,
            "runs": r, "other_cpu_share_max": max(r["other_cpu_share"])}


def describe(row: dict, x: np.ndarray, payload, lossless: bool) -> dict:
    """Add size and quality (bit-exactness or PSNR) of the last repeat's output."""
    coded, out = payload
    if row["codec"] == "wavar":
        tokens = int(sum(len(s) for s in coded))
        row["mean_tokens"] = tokens / len(x)
        row["tokens_per_s_encode"] = tokens / row["encode_s"]
        row["tokens_per_s_decode"] = tokens / row["decode_s"]
    else:
        row["mean_payload_bits"] = float(np.mean([j2k.payload_bits(s) for s in coded]))
        row["mean_total_bits"] = float(np.mean([8 * len(s) for s in coded]))
    if lossless:
        row["bit_exact"] = int(sum(bool(np.array_equal(a, b)) for a, b in zip(out, x,
                                                                               strict=True)))
    else:
        row["psnr"] = float(np.mean([psnr(a, b) for a, b in zip(x, out, strict=True)]))
    return row


# -- where wavar's time goes --------------------------------------------------------------------
def breakdown(codec: WaveletCodec, x: np.ndarray, seqs, repeats: int) -> dict:
    """Batch time split into transform, compiled token loop, and the rest (glue)."""
    h, w = x.shape[1:3]
    geo = codec.geometry(h, w)
    gargs = (geo.scan_index, geo.parent, geo.children, geo.n_desc, geo.is_ll)
    imm = int(codec.refinement == "immediate")
    coefs = codec.coefficients(x)
    n, c, side, _ = coefs.shape
    mt = codec.m_tilde(coefs)  # same dtypes as encode_coefficients: no new numba signature
    n_planes = np.maximum(mt - codec.final_exponent, 0).astype(np.int64)
    flat = coefs.reshape(n, -1)
    mags, negs = np.abs(flat).astype(np.float64), flat < 0

    def enc_loop():
        for s in range(0, n, 256):  # the chunking encode_coefficients uses
            e = min(n, s + 256)
            bound = int(n_planes[s:e].max(initial=0)) * c * side * side * (2 + imm) + 1
            out = np.empty((e - s, bound), np.uint8)
            coder.encode_many(mags[s:e], negs[s:e], mt[s:e], n_planes[s:e], codec.lang.code,
                              imm, c, side * side, *gargs, geo.bottom_up, out,
                              np.empty(e - s, np.int64))

    syms = [codec._sym_of_tok[np.asarray(s.tokens, np.int64)] for s in seqs]
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in syms])
    flat_syms = np.concatenate(syms)
    mt64 = mt.astype(np.int64)  # decode_coefficients passes int64 m~

    def dec_loop():
        lo, width = np.zeros((n, c * side * side)), np.zeros((n, c * side * side))
        neg, err = np.zeros((n, c * side * side), np.bool_), np.empty(n, np.int64)
        coder.decode_many(flat_syms, offsets, mt64, n_planes, codec.lang.code, imm, c,
                          side * side, *gargs, lo, width, neg, err)

    def one_thread(fn):
        def run():
            threads = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                fn()
            finally:
                numba.set_num_threads(threads)
        return run

    parts = {
        "encode_total_s": lambda: codec.encode_batch(x),
        "encode_transform_s": lambda: codec.coefficients(x),
        "encode_token_loop_s": enc_loop,
        "decode_total_s": lambda: codec.decode_batch(seqs),
        "decode_token_loop_s": dec_loop,
        "decode_inverse_transform_s": lambda: codec.images(coefs, h, w),
        "encode_token_loop_1thread_s": one_thread(enc_loop),
        "decode_token_loop_1thread_s": one_thread(dec_loop),
    }
    for fn in parts.values():
        fn()  # warm-up
    times = {k: [] for k in parts}
    with Contention() as cont:
        for _ in range(repeats):  # interleaved, like the main timings
            for k, fn in parts.items():
                times[k].append(timed(fn)[0])
    t = {k: statistics.median(v) for k, v in times.items()}
    tokens = sum(len(s) for s in seqs)
    return {
        "encode_total_s": t["encode_total_s"],
        "encode_transform_s": t["encode_transform_s"],
        "encode_token_loop_s": t["encode_token_loop_s"],
        "encode_rest_s": t["encode_total_s"] - t["encode_transform_s"]
        - t["encode_token_loop_s"],
        "decode_total_s": t["decode_total_s"],
        "decode_token_loop_s": t["decode_token_loop_s"],
        "decode_inverse_transform_s": t["decode_inverse_transform_s"],
        "decode_rest_s": t["decode_total_s"] - t["decode_token_loop_s"]
        - t["decode_inverse_transform_s"],
        "encode_ns_per_token_1thread": 1e9 * t["encode_token_loop_1thread_s"] / tokens,
        "decode_ns_per_token_1thread": 1e9 * t["decode_token_loop_1thread_s"] / tokens,
        "other_cpu_share": round(cont.other_share, 3),
    }


def calibrate_ratio(x: np.ndarray, target_bits: float) -> float:
    """Compression ratio whose mean OpenJPEG payload over ``x`` is closest to target_bits."""
    lo, hi = 0.0, math.log(x[0].size * 8 / 8.0)
    best = (math.inf, 1.0)
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        bits = np.mean([j2k.payload_bits(j2k._encode_lossy(im, math.exp(mid))) for im in x])
        best = min(best, (abs(bits - target_bits), math.exp(mid)))
        lo, hi = (lo, mid) if bits < target_bits else (mid, hi)
    return best[1]


# -- JIT --------------------------------------------------------------------------------------
COLD = """
import json, time, numpy as np
t0 = time.perf_counter()
from wavar import WaveletCodec
t1 = time.perf_counter()
x = (np.arange(2 * 32 * 32 * 3) % 251).astype(np.uint8).reshape(2, 32, 32, 3)
res = {"import_s": t1 - t0}
for name, codec, xs in (("cdf53", WaveletCodec("cdf53"), x),
                        ("bior4.4", WaveletCodec("bior4.4"), x[..., 0])):
    for k in ("first", "second"):
        t = time.perf_counter()
        codec.decode_batch(codec.encode_batch(xs))
        res[f"{name}_{k}_call_s"] = time.perf_counter() - t
print(json.dumps(res))
"""


def jit_cost() -> dict:
    """First encode+decode calls in a fresh process: with an empty numba cache (cold
    compile) and with the project's cache (what a user sees after the first run)."""
    out = {}
    for label, fresh in (("cold_compile", True), ("warm_cache", False)):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with tempfile.TemporaryDirectory() as tmp:
            if fresh:
                env["NUMBA_CACHE_DIR"] = tmp
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True,
                               env=env, cwd=ROOT, timeout=900)
            wall = time.perf_counter() - t0
        if r.returncode:
            out[label] = {"error": r.stderr[-2000:]}
            continue
        out[label] = {"process_wall_s": wall, **json.loads(r.stdout.strip().splitlines()[-1])}
    return out


# -- printing -----------------------------------------------------------------------------------
def print_rows(rep: Report, rows: list[dict], title: str) -> None:
    table = []
    for r in rows:
        quality = (f"exact {r['bit_exact']}/{r['n_images']}" if "bit_exact" in r
                   else f"{r['psnr']:.2f} dB")
        wav = "mean_tokens" in r
        size = f"{r['mean_tokens']:.0f} tok" if wav else f"{r['mean_payload_bits']:.0f} bits"
        table.append([r["codec"], r["mode"], round(r["images_per_s"], 1),
                      round(r["encode_images_per_s"], 1), round(r["decode_images_per_s"], 1),
                      f"{r['tokens_per_s_encode'] / 1e6:.2f}M" if wav else "-",
                      f"{r['tokens_per_s_decode'] / 1e6:.2f}M" if wav else "-",
                      size, quality, f"{100 * r['other_cpu_share_max']:.0f}%"])
    rep.table(["codec", "mode", "enc+dec img/s", "enc img/s", "dec img/s", "enc tok/s",
               "dec tok/s", "size/image", "quality", "others' CPU"], table, title=title)


def print_breakdown(rep: Report, b: dict, n: int, title: str) -> None:
    rows = []
    for k, v in b.items():
        if k.endswith("_s"):
            total = b[k.split("_")[0] + "_total_s"]
            rows.append([k.removesuffix("_s"), round(1e3 * v, 1), round(1e6 * v / n, 1),
                         f"{100 * v / total:.0f}%"])
    rep.table(["part", "ms (all images)", "us/image", "share"], rows,
              title=f"{title} (others' CPU {100 * b['other_cpu_share']:.0f}%)")
    rep.print(f"token loop on one thread: encode {b['encode_ns_per_token_1thread']:.0f} ns/token,"
              f" decode {b['decode_ns_per_token_1thread']:.0f} ns/token")


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 images, 1 repeat, no cold JIT")
    ap.add_argument("-n", type=int, default=1000, help="number of CIFAR-10 test images")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wait-quiet", type=float, default=300.0,
                    help="wait up to this many seconds for other processes to go quiet")
    args = ap.parse_args()
    n, repeats = (100, 1) if args.quick else (args.n, args.repeats)
    rep = Report("codec_speed", args.quick, CODEC)

    x = load("cifar10", "test").x[:n]
    grey = np.clip(np.rint(x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])), 0,
                   255).astype(np.uint8)
    lossless = WaveletCodec("cdf53")
    lossy = WaveletCodec("bior4.4", "zeroblock", 2.0**-4)
    t0 = time.perf_counter()
    for codec, xs in ((lossless, x), (lossy, grey)):
        codec.decode_batch(codec.encode_batch(xs[:4]))  # warm-up: JIT compile / cache load
        codec.decode(codec.encode(xs[0]))
    warmup_s = time.perf_counter() - t0
    # OpenJPEG lossy ratio matching wavar's grey rate (order-0 estimate), found untimed
    gseqs = lossy.encode_batch(grey)
    g_est = float(np.mean([c.sum() for c in slot_kind_entropy(lossy, gseqs)["static_costs"]]))
    seqs = lossless.encode_batch(x)
    c_est = float(np.mean([c.sum() for c in
                           slot_kind_entropy(lossless, seqs)["static_costs"]]))
    ratio = calibrate_ratio(grey[:100], g_est)

    quiet = wait_for_quiet(0 if args.quick else args.wait_quiet)
    info = machine_info()
    rep.print(f"Codec speed, first {n} CIFAR-10 test images, median of {repeats} interleaved "
              f"runs")
    rep.print(f"CPU: {info['cpu_model']}, nproc {info['nproc']}, numba threads "
              f"{info['numba_threads']} ({numba.threading_layer()}), load average at start "
              f"{info['loadavg']}, others' CPU share just before start {100 * quiet:.0f}%")
    rep.print(f"in-process warm-up (numba cache load), excluded: {warmup_s:.2f}s")

    cases = {
        "wavar:batch": wavar_case(lossless, x, "batch"),
        "wavar:batch-1thread": wavar_case(lossless, x, "batch-1thread"),
        "wavar:per-image": wavar_case(lossless, x, "per-image"),
        "openjpeg:lossless": openjpeg_case(x),
        "openjpeg:roundtrip (time_lossless_roundtrip)": lambda: (
            j2k.time_lossless_roundtrip(list(x))["seconds"], 0.0, None),
        "wavar:grey batch": wavar_case(lossy, grey, "batch"),
        "wavar:grey batch-1thread": wavar_case(lossy, grey, "batch-1thread"),
        "wavar:grey per-image": wavar_case(lossy, grey, "per-image"),
        "openjpeg:grey lossless": openjpeg_case(grey),
        f"openjpeg:grey lossy ratio {ratio:.2f}": openjpeg_case(grey, ratio),
    }
    rec, last = measure(cases, repeats)
    rows = {k: summarise(k, r, n) for k, r in rec.items()}
    roundtrip = rows.pop("openjpeg:roundtrip (time_lossless_roundtrip)")
    for k, row in rows.items():
        is_lossless = "lossless" in k or ("grey" not in k and k.startswith("wavar"))
        describe(row, grey if "grey" in k else x, last[k], is_lossless)

    colour = [r for k, r in rows.items() if "grey" not in k]
    print_rows(rep, colour, "1. colour 32x32 lossless: wavar cdf53 vs OpenJPEG 5/3")
    oj = rows["openjpeg:lossless"]
    ratio_colour = {r["mode"]: r["images_per_s"] / oj["images_per_s"] for r in colour[:3]}
    rep.print("ratio wavar/OpenJPEG enc+dec images/s: " + ", ".join(
        f"{m} {v:.2f}x" for m, v in ratio_colour.items()) + "  (target >= 1)")
    rep.print(f"OpenJPEG via time_lossless_roundtrip: {roundtrip['images_per_s']:.1f} img/s")
    rep.print(f"size: wavar {colour[0]['mean_tokens']:.0f} tokens = "
              f"{math.log2(7) * colour[0]['mean_tokens']:.0f} raw bits, ~{c_est:.0f} bits "
              f"order-0 estimate; OpenJPEG {oj['mean_payload_bits']:.0f} payload bits")
    wait_for_quiet(0 if args.quick else 60)
    b_colour = breakdown(lossless, x, seqs, max(repeats, 5))
    print_breakdown(rep, b_colour, n, "wavar cdf53 colour batch: time breakdown")

    grey_rows = [r for k, r in rows.items() if "grey" in k]
    print_rows(rep, grey_rows, "2. grey 32x32 (CIFAR luma): wavar bior4.4 2^-4 lossy vs "
               "OpenJPEG")
    ojl = rows["openjpeg:grey lossless"]
    ojy = rows[f"openjpeg:grey lossy ratio {ratio:.2f}"]
    rep.print(f"OpenJPEG lossy ratio {ratio:.2f} calibrated to the wavar order-0 estimate "
              f"{g_est:.0f} bits/image (wavar raw "
              f"{math.log2(7) * grey_rows[0]['mean_tokens']:.0f} bits); OpenJPEG got "
              f"{ojy['mean_payload_bits']:.0f} payload bits")
    ratio_grey = {f"{r['mode']} / OpenJPEG {o['mode'].removeprefix('grey ')}":
                  r["images_per_s"] / o["images_per_s"]
                  for r in grey_rows[:3] for o in (ojl, ojy)}
    rep.print("ratio wavar/OpenJPEG enc+dec images/s:")
    for m, v in ratio_grey.items():
        rep.print(f"  {m}: {v:.2f}x")
    wait_for_quiet(0 if args.quick else 60)
    b_grey = breakdown(lossy, grey, gseqs, max(repeats, 5))
    print_breakdown(rep, b_grey, n, "wavar bior4.4 grey batch: time breakdown")

    load_end = [round(v, 2) for v in os.getloadavg()]
    rep.print(f"\nload average at end of timings {load_end}")
    jit = {} if args.quick else jit_cost()
    for k, v in jit.items():
        rep.print(f"JIT ({k.replace('_', ' ')}, fresh process): " + ", ".join(
            f"{a} {b:.2f}s" for a, b in v.items() if isinstance(b, float)))
    rep.save({"machine": info, "others_cpu_share_before": quiet, "loadavg_end": load_end,
              "n_images": n, "repeats": repeats,
              "grey_images": "CIFAR-10 test luma Y = round(0.299R + 0.587G + 0.114B)",
              "jit": jit, "warmup_s": warmup_s,
              "colour_lossless": {"rows": colour, "ratio_vs_openjpeg": ratio_colour,
                                  "openjpeg_time_lossless_roundtrip": roundtrip,
                                  "wavar_order0_bits_estimate": c_est, "breakdown": b_colour},
              "grey_lossy": {"rows": grey_rows, "openjpeg_lossy_ratio": ratio,
                             "wavar_order0_bits_estimate": g_est,
                             "ratio_vs_openjpeg": ratio_grey, "breakdown": b_grey}})


if __name__ == "__main__":
    main()
