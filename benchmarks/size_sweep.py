"""Issue 18's size sweep at a fixed budget (Fashion-MNIST, ~7 H200-minutes alone each): FID
(full protocol) and bits/token against parameters, wavelet language (decoder-state features
on, plain and with the "ramp + cool" schedule) beside the raster language, from the
evaluation reports and run summaries in results/. Bits/token are the wavelet models' only
(a raster token is a pixel: not comparable); the test split's from a report, else the run's
last validation figure (marked). The FID plot marks the wavelet codec's own floor (the test
images through the bior4.4 2^-4 codec) and the real-data floor.

    python benchmarks/size_sweep.py   # writes results/eval/size_sweep.{json,png}
"""

from __future__ import annotations

import json
import re

from benchmarks._common import CODEC, EVAL, TRAIN

#: (arm, report under results/eval or None, run summary under results/train or None, note)
POINTS = [
    ("wavelet, plain", "eval_fashion-mnist_full.json", None, "0.72M, 6 min"),
    ("wavelet, plain", "schedules/fashion-mnist-5.6M/eval_default.json", None, "4 buckets"),
    ("wavelet, plain", "schedules/fashion-mnist-8.6M-packed/eval_plain.json", None, "packed"),
    ("wavelet, ramp + cool", "schedules/fashion-mnist-5.6M/eval_ramp-cool.json", None,
     "4 buckets"),
    ("wavelet, ramp + cool", "schedules/fashion-mnist-8.6M/eval_ramp-cool.json", None,
     "4 buckets"),
    ("wavelet, ramp + cool", "schedules/fashion-mnist-8.6M-packed/eval_ramp-cool.json", None,
     "packed"),
    ("wavelet, plain", "schedules/fashion-mnist-2.4M-packed/eval_plain.json", None, "packed"),
    ("wavelet, ramp + cool", "schedules/fashion-mnist-2.4M-packed/eval_ramp-cool.json", None,
     "packed"),
    ("wavelet, no FID", None, "size_sweep/fashion-mnist_24.9M_summary.txt", "4 buckets"),
    ("raster, plain", "eval_fashion-mnist-raster_full.json", None, "0.70M"),
    ("raster, plain", "schedules/fashion-mnist-raster-8.8M/eval_plain.json", None,
     "8.8M, fashion-mnist-raster-medium"),
]

#: FID of the 10,000 test images through the models' codec (bior4.4 2^-4), under
#: results/codec; of 10,000 training images untouched (the real-data floor), under results/eval
FLOORS = ("codec_floor_fashion-mnist_10k.json", "eval_fashion-mnist-raster_full.json")


def from_summary(path: str) -> tuple[int, float]:
    """Parameters and the last validation bits/token of a run summary."""
    text = (TRAIN / path).read_text()
    params = int(re.search(r"params (\d+)", text).group(1))
    return params, float(re.findall(r"val bits/token ([\d.]+)", text)[-1])


def main() -> None:
    rows = []
    for arm, report, summary, note in POINTS:
        row = dict(arm=arm, note=note, report=report, summary=summary)
        if report is not None:
            r = json.loads((EVAL / report).read_text())
            nll = (r.get("nll") or {}).get("bits_per_token")
            row.update(parameters=r["parameters"], fid=round(r["fid"]["fid"], 2),
                       bits_per_token=None if arm.startswith("raster") or nll is None
                       else round(nll, 4), bits_split="test")
        else:
            params, val = from_summary(summary)
            row.update(parameters=params, fid=None, bits_per_token=val, bits_split="val")
        rows.append(row)
    codec_floor = json.loads((CODEC / FLOORS[0]).read_text())["fid"]["fid"]
    real_floor = json.loads((EVAL / FLOORS[1]).read_text())["fid"]["floor_fid"]
    (EVAL / "size_sweep.json").write_text(json.dumps(
        dict(command="python benchmarks/size_sweep.py", points=rows,
             codec_floor_fid=round(codec_floor, 2), real_floor_fid=round(real_floor, 2),
             floors=FLOORS), indent=2) + "\n")
    for r in rows:
        print(f"{r['arm']:22s} {r['parameters'] / 1e6:5.2f}M  FID {r['fid'] or '—':>6}  "
              f"bits/token {r['bits_per_token'] or '—'} ({r['bits_split']})  {r['note']}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fid, ax_bits) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        pts = sorted((r["parameters"] / 1e6, r["fid"]) for r in rows
                     if r["arm"] == arm and r["fid"] is not None)
        if pts:
            ax_fid.plot(*zip(*pts, strict=True), "s" if arm.startswith("raster") else "o",
                        label=arm)
    for split, marker in (("test", "o"), ("val", "x")):
        pts = sorted((r["parameters"] / 1e6, r["bits_per_token"]) for r in rows
                     if r["bits_per_token"] is not None and r["bits_split"] == split)
        ax_bits.plot(*zip(*pts, strict=True), marker, label=f"wavelet, {split} split")
    # the wavelet language's own floor (real test images through its codec) and the real one
    for fid, what, style in ((codec_floor, "wavelet codec floor", "--"),
                             (real_floor, "real-data floor", ":")):
        ax_fid.axhline(fid, color="grey", linestyle=style, label=f"{what} ({fid:.1f})")
    ax_fid.set(xscale="log", yscale="log", xlabel="parameters (M)", ylabel="FID (10k, test)",
               title="Fashion-MNIST, ~7 H200-minutes each")
    ax_bits.set(xscale="log", xlabel="parameters (M)", ylabel="bits/token",
                title="wavelet language: bits/token")
    for ax in (ax_fid, ax_bits):
        ax.set_xticks([0.7, 1, 2.4, 5.6, 8.6, 25], ["0.7", "1", "2.4", "5.6", "8.6", "25"])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(EVAL / "size_sweep.png", dpi=120)


if __name__ == "__main__":
    main()
