"""Rate-distortion of the wavelet code: PSNR against tokens and bits, beside JPEG 2000.

wavar: each image is coded once (lossy bior4.4, zero-block language); every prefix of the
sequence decodes, so one code gives the whole curve: PSNR of the first B tokens for a ladder of
budgets B. Tokens are put on a bit axis in two ways:

* raw: log2(7) bits per token (a flat code over the zero-block vocabulary);
* order-0 estimate: -log2 p(token | slot kind), p the empirical token frequencies per slot kind
  (4x4 block, 2x2 quad, coefficient, refinement) over the evaluated images, i.e. the ideal
  arithmetic-code length under that static model (the model's own size not counted). A crude
  stand-in for the model bits that ``wavar eval --rd`` will report. Also recorded: the same
  with a per-image adaptive (Krichevsky-Trofimov) count, an achievable code length.

JPEG 2000 (Pillow's OpenJPEG, irreversible 9/7): ``wavar.eval.jpeg2000.encode_at_rate`` at a
ladder of payload targets; the x value is the achieved payload (codestream minus headers).
Neither side counts its header (wavar's m~ and shape; J2K's main and tile-part headers).

Data: CIFAR-10 test (colour 32x32, final threshold 2^-8) and Fashion-MNIST test (grey 28x28,
final threshold 2^-4). Writes a table, JSON, and a PNG per dataset to benchmarks/results/codec/.

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/codec_rd.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _common import CODEC, RESULTS, Report, machine_info, slot_kind_entropy

from wavar import WaveletCodec
from wavar.data.datasets import load
from wavar.eval import jpeg2000 as j2k
from wavar.eval.metrics import psnr
from wavar.eval.rd import PSNR_CAP, prefix_points  # the ladder and cap wavar eval --rd uses

CONFIGS = {
    # name: (dataset, split, final threshold, JPEG 2000 payload targets in bits per image)
    # CIFAR-10 goes down to 2^-8 (about one grey level) so the curve reaches the rates where
    # JPEG 2000 stops (its ratio-1 stream); any prefix is the same as with a higher threshold.
    "cifar10": ("cifar10", "test", 2.0**-8, [2.0 ** (k / 2) for k in range(14, 29)]),
    "fashion-mnist": ("fashion-mnist", "test", 2.0**-4, [2.0 ** (k / 2) for k in range(14, 25)]),
}


def capped_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return min(psnr(a, b), PSNR_CAP)


def wavar_curve(codec: WaveletCodec, x: np.ndarray, rep: Report) -> dict:
    t0 = time.perf_counter()
    seqs = codec.encode_batch(x)
    lengths = np.array([len(s) for s in seqs])
    ent = slot_kind_entropy(codec, seqs)
    static_cum = [np.concatenate([[0.0], np.cumsum(c)]) for c in ent["static_costs"]]
    adapt_cum = [np.concatenate([[0.0], np.cumsum(c)]) for c in ent["adaptive_costs"]]
    points = []
    for p, used in prefix_points(codec, seqs, x):
        p["entropy_bits"] = float(np.mean([c[u] for c, u in zip(static_cum, used, strict=True)]))
        p["adaptive_bits"] = float(np.mean([c[u] for c, u in zip(adapt_cum, used, strict=True)]))
        points.append(p)
    kinds = ("block4x4", "quad2x2", "coefficient", "refinement")
    return {
        "seconds": time.perf_counter() - t0,
        "mean_tokens": float(lengths.mean()), "max_tokens": int(lengths.max()),
        "bits_per_token_estimate": ent["bits_per_token"],
        "slot_kinds": {kinds[k]: {"share": float(ent["kind_share"][k]),
                                  "entropy_bits": float(ent["entropy_per_kind"][k]),
                                  "token_counts": ent["counts"][k].tolist()}
                       for k in range(len(ent["counts"]))},
        "points": points,
    }


def j2k_curve(x: np.ndarray, targets: list[float]) -> dict:
    t0 = time.perf_counter()
    points = []
    for target in targets:
        streams = [j2k.encode_at_rate(im, target) for im in x]
        ps = np.array([psnr(im, j2k.decode(s)) for im, s in zip(x, streams, strict=True)])
        points.append({
            "target_bits": target,
            "payload_bits": float(np.mean([j2k.payload_bits(s) for s in streams])),
            "total_bits": float(np.mean([8 * len(s) for s in streams])),
            "psnr": float(np.minimum(ps, PSNR_CAP).mean()),
            "n_exact": int(np.isinf(ps).sum()),
        })
    return {"seconds": time.perf_counter() - t0, "points": points}


def interp_psnr(curve: list[dict], bits: float) -> float:
    """JPEG 2000 PSNR at ``bits`` (linear in log bits); nan outside the measured range."""
    xs = np.log2([p["payload_bits"] for p in curve])
    ys = np.array([p["psnr"] for p in curve])
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    lb = math.log2(bits)
    return float(np.interp(lb, xs, ys)) if xs[0] <= lb <= xs[-1] else math.nan


def plot(name: str, pixels: int, wav: dict, jp: dict, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    pts = wav["points"]
    ax.plot([p["raw_bits"] / pixels for p in pts], [p["psnr"] for p in pts], "o-", ms=3,
            label="wavar, raw log2(7) bits/token")
    ax.plot([p["entropy_bits"] / pixels for p in pts], [p["psnr"] for p in pts], "s-", ms=3,
            label="wavar, order-0 estimate per slot kind")
    ax.plot([p["adaptive_bits"] / pixels for p in pts], [p["psnr"] for p in pts], ":", lw=1,
            label="wavar, per-image adaptive (KT) order-0")
    ax.plot([p["payload_bits"] / pixels for p in jp["points"]],
            [p["psnr"] for p in jp["points"]], "^-", ms=4, label="JPEG 2000 (OpenJPEG) payload")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per pixel (per image / pixel count)")
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = CODEC / f"codec_rd_{name}.png"
    CODEC.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path.relative_to(RESULTS.parent.parent))


def run(name: str, n: int, rep: Report, quick: bool) -> dict:
    ds, split, final, targets = CONFIGS[name]
    x = load(ds, split).x[:n]
    pixels = x.shape[1] * x.shape[2]
    codec = WaveletCodec("bior4.4", "zeroblock", final)
    rep.print(f"\n== {name} {split}, first {len(x)} images {x.shape[1:]}; wavar bior4.4 "
              f"zero-block deferred, final threshold 2^{int(math.log2(final))} ==")
    wav = wavar_curve(codec, x, rep)
    jp = j2k_curve(x, targets)
    rows = []
    for p in wav["points"]:
        rows.append([p["budget"], round(p["tokens"], 1), round(p["raw_bits"]),
                     round(p["entropy_bits"]), round(p["adaptive_bits"]),
                     round(p["entropy_bits"] / pixels, 3), round(p["psnr"], 2),
                     round(interp_psnr(jp["points"], p["entropy_bits"]), 2),
                     round(interp_psnr(jp["points"], p["adaptive_bits"]), 2)])
    rep.table(["budget", "mean tokens", "raw bits", "order0 bits", "adaptive bits",
               "order0 bpp", "PSNR dB", "J2K PSNR @order0 bits", "@adaptive bits"], rows,
              title=f"wavar prefixes ({wav['mean_tokens']:.0f} tokens/image on average, "
                    f"max {wav['max_tokens']}; order-0 estimate "
                    f"{wav['bits_per_token_estimate']:.3f} bits/token)")
    rep.table(["target bits", "payload bits", "total bits", "payload bpp", "PSNR dB"],
              [[int(p["target_bits"]), round(p["payload_bits"]), round(p["total_bits"]),
                round(p["payload_bits"] / pixels, 3), round(p["psnr"], 2)]
               for p in jp["points"]],
              title="JPEG 2000 (OpenJPEG 9/7, encode_at_rate)")
    rep.table(["slot kind", "share of tokens", "entropy bits/token"],
              [[k, round(v["share"], 3), round(v["entropy_bits"], 3)]
               for k, v in wav["slot_kinds"].items()], title="order-0 model per slot kind")
    title = (f"{name} {split} (first {len(x)}): wavar bior4.4 zero-block 2^"
             f"{int(math.log2(final))} vs JPEG 2000" + (" [QUICK]" if quick else ""))
    png = plot(name + ("_quick" if quick else ""), pixels, wav, jp, title)
    rep.print(f"plot: {png}")
    return {"dataset": ds, "split": split, "n_images": len(x), "shape": list(x.shape[1:]),
            "final_threshold": final, "pixels": pixels, "wavar": wav, "jpeg2000": jp,
            "plot": png}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 CIFAR + 50 Fashion-MNIST images")
    ap.add_argument("--n-cifar", type=int, default=200)
    ap.add_argument("--n-fashion", type=int, default=1000)
    args = ap.parse_args()
    rep = Report("codec_rd", args.quick, CODEC)
    rep.print("Rate-distortion: wavar prefixes vs JPEG 2000" + (" (QUICK)" if args.quick else ""))
    rep.print(f"PSNR: mean over images of per-image PSNR (exact reconstructions counted as "
              f"{PSNR_CAP:.0f} dB); bits are per image; headers not counted on either side.")
    rep.print("order-0 bits: a crude stand-in for the model bits `wavar eval --rd` will report.")
    res = {}
    for name, n in (("cifar10", 20 if args.quick else args.n_cifar),
                    ("fashion-mnist", 50 if args.quick else args.n_fashion)):
        res[name] = run(name, n, rep, args.quick)
    rep.save({"machine": machine_info(), "psnr_cap": PSNR_CAP, "results": res})


if __name__ == "__main__":
    main()
