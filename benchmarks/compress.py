"""``.wvc`` files (wavar.compress) against PNG, WebP lossless and JPEG 2000 lossless (CPU).

On the first N test images of a dataset: file bits/dim (whole file and payload), the gap
between the payload and the model's code length, bit-exactness of the round trip against the
codec, encode/decode images/s. Writes ``benchmarks/results/codec/compress_<model>.json``.

    WAVAR_CACHE=... python benchmarks/compress.py --model mnist --dataset mnist --n 20
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
from PIL import Image

from benchmarks._common import CODEC
from wavar.compress import code_tokens, compress, decompress, read_header
from wavar.data import datasets
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of


def pil_bytes(img: np.ndarray, fmt: str, **kw) -> int | None:
    buf = io.BytesIO()
    try:
        Image.fromarray(img).save(buf, fmt, **kw)
    except (OSError, KeyError, ValueError):
        return None  # the format's plugin is missing in this Pillow
    return buf.tell()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    model = WaveletGPT.from_pretrained(args.model)
    codec = codec_of(model)
    x = datasets.load(args.dataset, "test").x[: args.n]
    compress(model, x[0], args.model)  # JIT warm-up, not timed
    files, t_enc, t_dec, exact, model_bits, pay_bits = [], 0.0, 0.0, 0, 0.0, 0
    for img in x:
        t0 = time.perf_counter()
        data = compress(model, img, args.model)
        t1 = time.perf_counter()
        out = decompress(data, model)
        t2 = time.perf_counter()
        t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
        seq = codec.encode(img)
        exact += int(np.array_equal(out, codec.decode(seq)))
        model_bits += code_tokens(model, seq, model.config.num_classes)[2].sum()
        pay_bits += 8 * read_header(data)["payload_bytes"]
        files.append(len(data))
    dims = x[0].size * len(x)
    others = {}
    for name, fmt, kw in (("png", "PNG", dict(optimize=True)),
                          ("webp_lossless", "WEBP", dict(lossless=True, quality=100, method=6)),
                          ("jpeg2000_lossless", "JPEG2000", dict(irreversible=False))):
        sizes = [pil_bytes(im, fmt, **kw) for im in x]
        others[name] = None if None in sizes else 8 * sum(sizes) / dims
    res = dict(
        command=f"python benchmarks/compress.py --model {args.model} --dataset {args.dataset} "
                f"--n {args.n}",
        model=args.model, dataset=args.dataset, n=len(x), codec_lossless=codec.lossless,
        round_trip_exact=f"{exact}/{len(x)} (decoded image == codec.decode(codec.encode(img)))",
        wvc_file_bpd=8 * sum(files) / dims, wvc_payload_bpd=pay_bits / dims,
        model_bpd=model_bits / dims, payload_over_model=pay_bits / model_bits - 1,
        mean_file_bytes=sum(files) / len(x), header_bytes=read_header(data)["payload_offset"],
        others_bpd=others, encode_images_per_s=len(x) / t_enc,
        decode_images_per_s=len(x) / t_dec)
    out = CODEC / f"compress_{args.model}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
