"""Test-set likelihood of zoo models: bits per token and per image (full test split).

    python benchmarks/nll.py mnist fashion-mnist mnist-large fashion-mnist-large
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wavar.data.shards import TokenDataset
from wavar.eval.likelihood import nll
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of
from wavar.zoo import MODELS

RESULTS = Path(__file__).parent / "results" / "eval"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--limit", type=int, default=None, help="first N test images only")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        model = WaveletGPT.from_pretrained(name)
        dataset = MODELS[name].dataset if name in MODELS else name
        data = TokenDataset.load(dataset, codec_of(model), "test",
                                 context=bool(model.config.decoder_state))
        t = time.perf_counter()
        r = nll(model, data, limit=args.limit)
        r.update(model=name, params=model.num_params(), seconds=time.perf_counter() - t)
        print(json.dumps(r))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"nll_{name}.json").write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
