"""What storing in float16 costs: zoo weights, and the Inception network carried in fp16 parts.

* zoo: the largest change of any weight between a model's float32 weights (as committed before
  the zoo went float16, commit e7e5bb2) and the float16 file now in the zoo;
* FID network: relative L2 distance between the Inception features of ``--images`` test images
  through the standard network and through one exported as fp16 parts and reassembled.

    PYTHONPATH=. python benchmarks/fp16_storage.py --images 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load

from wavar.data.datasets import load as load_dataset
from wavar.eval import fid
from wavar.eval.fid_parts import assemble_network, export_network_fp16
from wavar.model.transformer import WaveletGPT

RESULTS = Path(__file__).parent / "results" / "eval"
FP32_COMMIT = "e7e5bb2"


def zoo_change(name: str, then: str) -> float:
    """Largest weight change of zoo model ``name`` (called ``then`` at FP32_COMMIT)."""
    path = f"{FP32_COMMIT}:wavar/zoo/weights/{then}/model.safetensors"
    blob = subprocess.run(["git", "show", path], capture_output=True, check=True).stdout
    old = load(blob)
    new = WaveletGPT.from_pretrained(name).state_dict()
    return max(float((old[k].float() - new[k].float()).abs().max()) for k in old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=20)
    args = ap.parse_args()
    out = {"zoo_max_abs_weight_change": {m: zoo_change(m, m.removesuffix("-small"))
                                         for m in ("mnist-small", "fashion-mnist-small")}}
    x = load_dataset("fashion-mnist", "test").x[: args.images]
    ref = fid.inception_features(x, network=fid.load_network("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        export_network_fp16(3, Path(tmp) / "parts")
        net = fid.load_network("cpu", path=assemble_network(Path(tmp) / "parts"))
        f16 = fid.inception_features(x, network=net)
    out["fid_network_feature_rel_l2"] = float(np.linalg.norm(f16 - ref) / np.linalg.norm(ref))
    out["images"] = f"fashion-mnist test[:{args.images}]"
    out["torch"] = torch.__version__
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fp16_storage.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
