"""CIFAR-10 learning curves against GPU-minutes, over the training chunks of both models.

Training ran in chunks on H200s (session 2: the first run, 12 min on 2 GPUs lossy and 12 min on
1 GPU lossless; session 3: continued from the published weights with ``init_from``, 13.5 min
each, snapshots of the EMA weights every 270 s; session 24: the 24.9M lossless model of issue
19 from scratch, 14 min in two chunks, validated on each chunk's last 1,000 images).
GPU-minutes count wall time times GPUs of the training loops (compile and validation
included). Per point: the full-protocol FID/KID/CAS of the lossy model (10,000 samples, CFG 1)
and the held-out validation bits of both models.

    python benchmarks/cifar_curve.py   # reads results/{train,eval}/, writes results/eval/
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "eval"  # the reports read, and the curve written
TRAIN = Path(__file__).parent / "results" / "train"

#: (training log folder, GPUs, GPU-minutes before the chunk)
LOSSY = [("cifar10", 2, 0.0), ("cifar10-continued", 2, 24.0)]
LOSSLESS = [("cifar10-lossless", 1, 0.0), ("cifar10-lossless-continued", 1, 12.0)]
#: issue 19's 24.9M lossless model, from scratch (its chunks share one folder and one clock)
LOSSLESS_LARGE = [("cifar10-lossless-large", 1, 0.0)]
#: lossy models judged by the full protocol: (report, GPU-minutes of training behind it)
FID_REPORTS = [("eval_cifar10_full_fid.json", 24.0)]  # session 2's published model
SNAPSHOT = re.compile(r"eval_cifar10_s(\d+)-step(\d+)\.json")


def val_curve(chunks: list[tuple[str, int, float]]) -> list[dict]:
    """Validation points of consecutive chunks: GPU-minutes, step within the chunk, bits."""
    out = []
    for folder, gpus, before in chunks:
        for line in (TRAIN / folder / "metrics.jsonl").open():
            r = json.loads(line)
            if "val_bits_per_token" in r:
                out.append({"chunk": folder, "gpu_minutes": before + gpus * r["elapsed_s"] / 60,
                            "step": r["step"], "val_bits_per_token": r["val_bits_per_token"],
                            "val_bits_per_image": r["val_bits_per_image"]})
    return out


def fid_curve() -> list[dict]:
    reports = list(FID_REPORTS)
    for path in sorted(RESULTS.glob("eval_cifar10_s*-step*.json")):
        seconds = int(SNAPSHOT.fullmatch(path.name).group(1))
        reports.append((path.name, LOSSY[1][2] + LOSSY[1][1] * seconds / 60))
    out = []
    for name, minutes in reports:
        r = json.loads((RESULTS / name).read_text())
        out.append({"report": name, "gpu_minutes": minutes, "fid": r["fid"]["fid"],
                    "kid": r["fid"]["kid"], "cas": r["cas"]["accuracy"],
                    "fid_network": r["fid"]["fid_network"]})
    return out


def main() -> None:
    fid, lossy = fid_curve(), val_curve(LOSSY)
    lossless = val_curve(LOSSLESS) + val_curve(LOSSLESS_LARGE)
    lines = ["lossy (bior4.4 + YCbCr, 2^-4): full protocol, 10,000 samples, CFG 1",
             f"{'GPU-min':>8} {'FID':>7} {'KID':>7} {'CAS':>6}  report"]
    lines += [f"{r['gpu_minutes']:8.1f} {r['fid']:7.1f} {r['kid']:7.4f} {r['cas']:6.3f}  "
              f"{r['report']}" for r in fid]
    for title, curve, dims in (("lossy", lossy, None), ("lossless", lossless, 3 * 32 * 32)):
        lines += ["", f"{title}: validation (1,000 held-out training images)",
                  f"{'GPU-min':>8} {'chunk':>27} {'step':>6} {'bits/token':>10} {'bits/image':>10}"
                  + (f" {'bits/dim':>8}" if dims else "")]
        lines += [f"{r['gpu_minutes']:8.1f} {r['chunk']:>27} {r['step']:6d} "
                  f"{r['val_bits_per_token']:10.4f} {r['val_bits_per_image']:10.1f}"
                  + (f" {r['val_bits_per_image'] / dims:8.3f}" if dims else "") for r in curve]
    text = "\n".join(lines)
    print(text)
    (RESULTS / "cifar_curve.txt").write_text(text + "\n")
    (RESULTS / "cifar_curve.json").write_text(json.dumps(
        {"fid": fid, "val_lossy": lossy, "val_lossless": lossless}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot([r["gpu_minutes"] for r in fid], [r["fid"] for r in fid], "o-")
    ax[0].set(xlabel="H200 GPU-minutes", ylabel="FID (10k, CFG 1)", title="CIFAR-10 lossy: FID")
    for a, curve, dims, title in ((ax[1], lossy, None, "lossy: val bits/token"),
                                  (ax[2], lossless, 3 * 32 * 32, "lossless: val bits/dim")):
        for chunk in dict.fromkeys(r["chunk"] for r in curve):
            pts = [r for r in curve if r["chunk"] == chunk]
            y = [r["val_bits_per_image"] / dims if dims else r["val_bits_per_token"] for r in pts]
            a.plot([r["gpu_minutes"] for r in pts], y, "o-", ms=3, label=chunk)
        a.set(xlabel="H200 GPU-minutes", title=title)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "cifar_curve.png", dpi=110)


if __name__ == "__main__":
    main()
