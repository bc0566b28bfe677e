"""FID against training GPU-minutes (issue 18: "our FID against GPU-minutes beside the peer's
points"), Fashion-MNIST and MNIST, from the evaluation reports in results/eval/.

Each point is one full-protocol report (10,000 samples against the 10,000 test images). Its
minutes are the training run's wall time alone on one GPU (an H200; MNIST's last run an H100;
compilation and validation included), read from the run's summary (``elapsed N s``), plus a
snapshot's second (its name, ``sNNNNNN-stepM``) when the report's model is a snapshot: then the
summaries named are those of the runs before it. The DDPM points are the peer's as reported
in issue 18 (its runs are not in this repository).

    python benchmarks/fid_minutes.py   # writes results/eval/fid_minutes.{json,png}
"""

from __future__ import annotations

import json
import re

from benchmarks._common import EVAL, TRAIN

#: The runs behind a model, each started from the weights of those before it (names under
#: results/train/, whose ``<run>_summary.txt`` gives its minutes): 16, 23 and 30 minutes of
#: fashion-mnist-fine; 8.3, 22.3 and 30 of mnist-fine; the raster twins.
FM_PACKED_16 = ("packing/fashion-mnist_8.6M_packed_960s",)
FM_FINE_23 = (*FM_PACKED_16, "fine/fashion-mnist_8.6M_2e-6_from-zoo")
FM_FINE_30 = (*FM_FINE_23, "fine/fashion-mnist_8.6M_2e-6_from-zoo-2")
FM_RASTER = ("size_sweep/fashion-mnist-raster_8.8M",)
MNIST_FINE_8 = ("medium/mnist-medium", "fine/mnist_5.6M_2e-4_from-zoo")
MNIST_FINE_22 = (*MNIST_FINE_8, "fine/mnist_5.6M_2e-4_22min")
MNIST_FINE_30 = (*MNIST_FINE_22, "fine/mnist_5.6M_2e-4_30min")
MNIST_RASTER = ("size_sweep/mnist-raster_5.7M",)
#: (dataset, series, report under results/eval, the runs behind it (a run name or a chain of
#: them, whose minutes add up; for a snapshot, the runs before it, or None), minutes when
#: neither says: the zoo's first small models)
POINTS = [
    ("fashion-mnist", "0.72M, plain", "eval_fashion-mnist_full.json", None, 6.0),
    ("fashion-mnist", "raster 0.70M, plain", "eval_fashion-mnist-raster_full.json", None, 7.0),
    ("fashion-mnist", "5.6M, 4 buckets", "schedules/fashion-mnist-5.6M/eval_ramp-cool.json",
     "size_sweep/fashion-mnist_5.6M", None),
    ("fashion-mnist", "8.6M, 4 buckets", "schedules/fashion-mnist-8.6M/eval_ramp-cool.json",
     "size_sweep/fashion-mnist_8.6M", None),
    ("fashion-mnist", "8.6M packed, 7-min cosine",
     "schedules/fashion-mnist-8.6M-packed/eval_ramp-cool.json",
     "packing/fashion-mnist_8.6M_packed", None),
    ("fashion-mnist", "8.6M packed, 16-min cosine",
     "schedules/fashion-mnist-8.6M-packed-8min/eval_ramp-cool.json", None, None),
    ("fashion-mnist", "8.6M packed, 16-min cosine",
     "schedules/fashion-mnist-8.6M-packed-16min/eval_ramp-cool.json",
     FM_PACKED_16, None),
    # a finer final threshold, started from the zoo model's weights (the series' first point)
    ("fashion-mnist", "8.6M, then at 2^-6",
     "schedules/fashion-mnist-8.6M-packed-16min/eval_ramp-cool.json",
     FM_PACKED_16, None),
    ("fashion-mnist", "8.6M, then at 2^-6",
     "schedules/fashion-mnist-8.6M-fine-2e-6/eval_ramp-cool.json",
     FM_FINE_23, None),
    ("fashion-mnist", "8.6M, then at 2^-6",
     "schedules/fashion-mnist-8.6M-fine-2e-6-30min/eval_ramp-cool.json",
     FM_FINE_30, None),
    ("fashion-mnist", "2.4M packed", "schedules/fashion-mnist-2.4M-packed/eval_ramp-cool.json",
     "size_sweep/fashion-mnist_2.4M_packed", None),
    ("fashion-mnist", "raster 8.8M, plain",
     "schedules/fashion-mnist-raster-8.8M/eval_plain.json",
     FM_RASTER, None),
    ("mnist", "0.72M, plain", "eval_mnist_full.json", None, 5.0),
    ("mnist", "5.6M", "schedules/mnist-medium/eval_cfg-ramp-cool.json",
     "medium/mnist-medium", None),
    ("mnist", "5.6M, then at 2^-4", "schedules/mnist-medium/eval_cfg-ramp-cool.json",
     "medium/mnist-medium", None),
    ("mnist", "5.6M, then at 2^-4", "schedules/mnist-5.6M-fine-2e-4/eval_ramp-cool.json",
     MNIST_FINE_8, None),
    ("mnist", "5.6M, then at 2^-4", "schedules/mnist-5.6M-fine-2e-4-22min/eval_ramp-cool.json",
     MNIST_FINE_22, None),
    ("mnist", "5.6M, then at 2^-4", "schedules/mnist-5.6M-fine-2e-4-30min/eval_ramp-cool.json",
     MNIST_FINE_30, None),
    ("mnist", "5.6M at 2^-4, top-p 0.8", "schedules/mnist-5.6M-fine-2e-4/eval_ramp-cool-p80.json",
     MNIST_FINE_8, None),
    ("mnist", "5.6M at 2^-4, top-p 0.8",
     "schedules/mnist-5.6M-fine-2e-4-15min/eval_ramp-cool-p80.json",
     MNIST_FINE_8, None),
    ("mnist", "5.6M at 2^-4, top-p 0.8",
     "schedules/mnist-5.6M-fine-2e-4-22min/eval_ramp-cool-p80.json",
     MNIST_FINE_22, None),
    ("mnist", "5.6M at 2^-4, top-p 0.8",
     "schedules/mnist-5.6M-fine-2e-4-30min/eval_ramp-cool-p80.json",
     MNIST_FINE_30, None),
    ("mnist", "raster 5.7M, plain", "schedules/mnist-raster-5.7M/eval_plain.json",
     MNIST_RASTER, None),
]
#: issue 18's DDPM (6.6M, U-Net, classifier-free guidance): (dataset, minutes, FID)
PEER = [("fashion-mnist", 2.0, 33.4), ("fashion-mnist", 7.5, 21.5), ("mnist", 2.0, 52.2)]


def minutes(report: dict, runs: str | tuple[str, ...] | None, given: float | None) -> float:
    if given is not None:
        return given
    runs = () if runs is None else (runs,) if isinstance(runs, str) else runs
    seconds = sum(int(re.search(r"elapsed (\d+) s",
                                (TRAIN / f"{r}_summary.txt").read_text()).group(1)) for r in runs)
    snapshot = re.search(r"/s(\d{6})-step\d+$", report.get("model", ""))
    return (seconds + (int(snapshot.group(1)) if snapshot else 0)) / 60


def main() -> None:
    rows = []
    for dataset, series, path, runs, given in POINTS:
        report = json.loads((EVAL / path).read_text())
        rows.append(dict(dataset=dataset, series=series, report=path,
                         parameters=report["parameters"], cfg=report.get("cfg"),
                         temperature=report.get("temperature"),
                         minutes=round(minutes(report, runs, given), 2),
                         fid=round(report["fid"]["fid"], 2)))
    peer = [dict(dataset=d, series="DDPM 6.6M (issue 18)", minutes=m, fid=f) for d, m, f in PEER]
    out = dict(command="python benchmarks/fid_minutes.py", points=rows, peer=peer)
    (EVAL / "fid_minutes.json").write_text(json.dumps(out, indent=2) + "\n")
    for r in rows + peer:
        print(f"{r['dataset']:14s} {r['series']:28s} {r['minutes']:6.2f} min  FID {r['fid']:6.2f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    for ax, dataset in zip(axes, ("fashion-mnist", "mnist"), strict=True):
        series = dict.fromkeys(r["series"] for r in rows + peer if r["dataset"] == dataset)
        for name in series:
            pts = sorted((r["minutes"], r["fid"]) for r in rows + peer
                         if r["dataset"] == dataset and r["series"] == name)
            style = "s--" if name.startswith("DDPM") else "o-"
            ax.plot(*zip(*pts, strict=True), style, label=name)
        ax.set(title=dataset, xlabel="training GPU-minutes (alone; H200, MNIST's last 14 H100)",
               ylabel="FID (10k, test)", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle("wavar ('ramp + cool' schedule unless plain) against the DDPM peer")
    fig.tight_layout()
    fig.savefig(EVAL / "fid_minutes.png", dpi=120)


if __name__ == "__main__":
    main()
