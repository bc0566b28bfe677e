"""Where a model's bits go: test-set bits per image split by bit-plane and by what the token
decides (group, significance, refinement; by channel, level and sign too), for several models
side by side (CPU).

Teacher-forced on the first ``--n`` test images (the loss training minimises, exactly the
code length): comparing two models shows which planes and decisions a larger or longer-trained
model codes better; and, by plane, each token's count beside its expected count under the model
(its probabilities summed: calibration under teacher forcing). Writes
``benchmarks/results/eval/bits_by_plane_<dataset>.json``.

    PYTHONPATH=. python benchmarks/bits_by_plane.py --dataset fashion-mnist --n 200 \\
        --models fashion-mnist-small fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks._common import EVAL
from wavar.data.shards import TokenDataset
from wavar.model.transformer import WaveletGPT, token_bits
from wavar.sample.generate import codec_of
from wavar.train.prefetch import pad_batch

KINDS = ("4x4 block", "2x2 quad", "coefficient (significance)", "refinement")


def bits_by_plane(model, data: TokenDataset, n: int, batch: int, signs: tuple[int, int]) -> dict:
    """Mean bits per image by bit-plane and node kind over the first ``n`` sequences of
    ``data`` (a TokenDataset: a test split, or coded samples). ``signs``: the token ids of a
    coefficient turning significant with a plus or a minus sign."""
    planes, kinds = np.zeros(64), np.zeros(len(KINDS))
    # by channel (colour: the transform's Y, Cb, Cr) and level (0: the coarsest band), and
    # plane by kind: which decisions of which planes carry a lossless code's bits
    channels, levels = np.zeros(8), np.zeros(32)
    plane_kind = np.zeros((64, len(KINDS)))
    # a coefficient turning significant codes its sign too: -log2 p(sign | significant) of
    # those tokens, by plane (what a lossless code cannot avoid unless signs are predictable)
    sign_bits = np.zeros(64)
    pos, neg = signs
    plane_tokens = np.zeros(64)
    vocab = model.config.vocab_size
    # calibration under teacher forcing: each token's expected count (its probabilities summed)
    # beside its count, by plane; samples that drift from the data while these agree drift
    # because they run free (their own earlier tokens), not because the model misjudges
    expected, actual = np.zeros((64, vocab)), np.zeros((64, vocab))
    # near-certain positions: how many carry almost no information (they cost a transformer
    # position each in training and a step each in sampling all the same)
    cuts = (0.01, 0.1)
    under, under_bits = np.zeros(len(cuts)), np.zeros(len(cuts))
    images = 0
    with torch.no_grad():
        for np_batch in data.iter_batches(batch):
            if images >= n:
                break
            b = {k: v for k, v in pad_batch(np_batch).items()}
            logits = model(b)
            bits = token_bits(logits, b).numpy()  # (B, T), 0 at padding
            probs = torch.softmax(logits.float(), -1).numpy()
            valid = np_batch["valid"]
            tok, slots = np_batch["tokens"], np_batch["slots"]
            plane, channel, level, kind = (slots[..., i] for i in (0, 1, 2, 4))
            np.add.at(planes, plane[valid], bits[valid])
            np.add.at(plane_tokens, plane[valid], 1)
            np.add.at(kinds, kind[valid], bits[valid])
            np.add.at(channels, channel[valid], bits[valid])
            np.add.at(levels, level[valid], bits[valid])
            np.add.at(plane_kind, (plane[valid], kind[valid]), bits[valid])
            turned = valid & ((tok == pos) | (tok == neg))
            p_sig = probs[..., pos] + probs[..., neg]
            p_tok = np.take_along_axis(probs, tok[..., None], -1)[..., 0]
            np.add.at(sign_bits, plane[turned], -np.log2(p_tok[turned] / p_sig[turned]))
            np.add.at(expected, plane[valid], probs[valid])
            np.add.at(actual, (plane[valid], tok[valid]), 1)
            for i, c in enumerate(cuts):
                small = bits[valid][bits[valid] < c]
                under[i] += small.size
                under_bits[i] += small.sum()
            images += len(np_batch["label"])
    top = int(np.flatnonzero(plane_tokens)[-1]) + 1
    return {"images": images, "bits_per_image": float(planes.sum() / images),
            "by_plane": (planes[:top] / images).round(2).tolist(),
            "tokens_by_plane": (plane_tokens[:top] / images).round(1).tolist(),
            "by_kind": dict(zip(KINDS, (kinds / images).round(2).tolist(), strict=True)),
            "by_channel": (channels[:int(np.flatnonzero(channels)[-1]) + 1] / images)
            .round(2).tolist(),
            "by_level": (levels[:int(np.flatnonzero(levels)[-1]) + 1] / images).round(2).tolist(),
            "by_plane_and_kind": (plane_kind[:top] / images).round(2).tolist(),
            "sign_bits_by_plane": (sign_bits[:top] / images).round(2).tolist(),
            "token_counts_by_plane": (actual[:top] / images).round(2).tolist(),
            "expected_counts_by_plane": (expected[:top] / images).round(2).tolist(),
            "near_certain": {f"under {c} bits": {
                "share_of_positions": round(float(under[i] / plane_tokens.sum()), 4),
                "share_of_bits": round(float(under_bits[i] / planes.sum()), 5)}
                for i, c in enumerate(cuts)}}


def sign_tokens(model) -> tuple[int, int]:
    tokens = codec_of(model).lang.tokens
    return tokens.index("NowSignificantPos"), tokens.index("NowSignificantNeg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--models", nargs="+", default=["fashion-mnist-small", "fashion-mnist"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="", help="names the output: bits_by_plane_<dataset>_<tag>")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tag = f" --tag {args.tag}" if args.tag else ""
    res = {"command": f"python benchmarks/bits_by_plane.py --dataset {args.dataset} --n {args.n} "
                      f"--models {' '.join(args.models)}{tag}", "models": {}}
    for name in args.models:
        t = time.perf_counter()
        model = WaveletGPT.from_pretrained(name).eval()
        data = TokenDataset.load(args.dataset, codec_of(model), "test", limit=args.n,
                                 context=bool(model.config.decoder_state))
        res["models"][name] = {"parameters": model.num_params(),
                               **bits_by_plane(model, data, args.n, args.batch, sign_tokens(model)),
                               "seconds": round(time.perf_counter() - t, 1)}
        print(name, json.dumps(res["models"][name]), flush=True)
    out = EVAL / f"bits_by_plane_{args.dataset}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
