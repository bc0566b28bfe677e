"""``.wvc`` files (wavar.compress) against lossless image codecs (CPU: PNG, WebP, JPEG 2000,
JPEG-XL, JPEG-LS, AVIF; ``benchmarks/lossless_codecs.py``).

On the first N test images of a dataset: file bits/dim (whole file and payload), the gap
between the payload and the model's code length, bit-exactness of the round trip against the
codec, encode/decode images/s one image at a time and in blocks of ``--rows`` images
(``compress_many`` / ``decompress_many``). Writes
``benchmarks/results/codec/compress_<model>.json``.

``--rd`` adds rate-distortion for a lossy model, on the files coded one at a time (the first
``--single`` images): each file's payload cut to 1/4, 1/2, 3/4 and
all of its bytes (whole 32-bit words: the progressive decode of a byte prefix) against JPEG
2000 (OpenJPEG, 9/7, one layer, the largest payload not above the same payload bytes) and
WebP lossy (Pillow/libwebp, method 6, the highest quality whose whole file is not above the
.wvc file of the same cut); mean PSNR and mean bytes over the images, payload and whole file.
JPEG 2000's main header (~70-90 bytes here) and the .wvc header (~50) weigh on files this
small, so both columns are reported. Writes ``compress_<model>_rd.json``.

    WAVAR_CACHE=... python benchmarks/compress.py --model mnist --dataset mnist --n 20
    python benchmarks/compress.py --model fashion-mnist --dataset fashion-mnist --n 20 --rd
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
from PIL import Image

from benchmarks._common import CODEC
from benchmarks.lossless_codecs import lossless_bpd
from wavar.compress import (
    code_tokens,
    compress,
    compress_many,
    decompress,
    decompress_many,
    pack_archive,
    read_header,
)
from wavar.data import datasets
from wavar.eval import jpeg2000
from wavar.eval.metrics import psnr
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def webp_at_most(img: np.ndarray, max_bytes: int) -> tuple[int, np.ndarray] | None:
    """The WebP (lossy, method 6) of ``img`` at the highest quality whose file fits in
    ``max_bytes``: (bytes, decoded grey/RGB image), or None if even quality 0 is larger."""
    best = None
    lo, hi = 0, 100
    while lo <= hi:  # file size grows with quality (nearly monotone): bisect it
        q = (lo + hi) // 2
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "WEBP", quality=q, method=6)
        if buf.tell() <= max_bytes:
            best, lo = (buf.tell(), buf.getvalue()), q + 1
        else:
            hi = q - 1
    if best is None:
        return None
    out = np.asarray(Image.open(io.BytesIO(best[1])).convert("L" if img.ndim == 2 else "RGB"))
    return best[0], out


def rate_distortion(model, x: np.ndarray, files: list[bytes]) -> dict:
    """Mean bytes and PSNR at each payload cut, .wvc beside JPEG 2000 and WebP."""
    rows = {f: {k: [] for k in ("wvc_payload", "wvc_file", "wvc_psnr", "j2k_payload", "j2k_file",
                                 "j2k_psnr", "webp_file", "webp_psnr")} for f in FRACTIONS}
    for img, data in zip(x, files, strict=True):
        head = read_header(data)["payload_offset"]
        pay = len(data) - head
        for f in FRACTIONS:
            cut = pay if f == 1.0 else int(f * pay) // 4 * 4
            r = rows[f]
            r["wvc_payload"].append(cut)
            r["wvc_file"].append(head + cut)
            r["wvc_psnr"].append(psnr(img, decompress(data, model, n_bytes=cut)))
            j2k = jpeg2000.encode_at_rate(img, max(8 * cut, 8))
            r["j2k_payload"].append(jpeg2000.payload_bits(j2k) / 8)
            r["j2k_file"].append(len(j2k))
            r["j2k_psnr"].append(psnr(img, jpeg2000.decode(j2k)))
            webp = webp_at_most(img, head + cut)
            r["webp_file"].append(None if webp is None else webp[0])
            r["webp_psnr"].append(None if webp is None else psnr(img, webp[1]))
    out = {}
    for f, r in rows.items():
        out[str(f)] = {k: (None if None in v else float(np.mean(v))) for k, v in r.items()}
        out[str(f)]["webp_missing"] = sum(v is None for v in r["webp_file"])
        out[str(f)]["webp_psnr_fitting"] = (float(np.mean([v for v in r["webp_psnr"] if v]))
                                            if any(r["webp_psnr"]) else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist-small")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--single", type=int, default=None, metavar="K",
                    help="code only the first K images one at a time (default: all n)")
    ap.add_argument("--rows", type=int, default=16,
                    help="also code the images in blocks of this many rows (compress_many)")
    ap.add_argument("--rd", action="store_true",
                    help="PSNR against bytes at payload cuts, beside JPEG 2000 and WebP (lossy)")
    args = ap.parse_args()
    model = WaveletGPT.from_pretrained(args.model)
    codec = codec_of(model)
    x = datasets.load(args.dataset, "test").x[: args.n]
    compress(model, x[0], args.model)  # JIT warm-up, not timed
    files, t_enc, t_dec, exact, model_bits, pay_bits = [], 0.0, 0.0, 0, 0.0, 0
    single = x[: args.n if args.single is None else args.single]
    for img in single:
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
        files.append(data)
    dims, dims_single = x[0].size * len(x), x[0].size * len(single)
    t0 = time.perf_counter()
    block_files = compress_many(model, x, args.model, rows=args.rows)
    t1 = time.perf_counter()
    block_images = decompress_many(block_files, model)
    t2 = time.perf_counter()
    block_exact = sum(int(np.array_equal(a, codec.decode(codec.encode(img))))
                      for a, img in zip(block_images, x, strict=True))
    block = dict(rows=args.rows, encode_images_per_s=len(x) / (t1 - t0),
                 decode_images_per_s=len(x) / (t2 - t1),
                 round_trip_exact=f"{block_exact}/{len(x)}",
                 file_bpd=8 * sum(map(len, block_files)) / dims,
                 archive_bpd=8 * len(pack_archive(block_files, [str(i) for i in range(len(x))]))
                 / dims)
    others = lossless_bpd(x)  # all n images, each a file of its own
    res = dict(
        command=f"python benchmarks/compress.py --model {args.model} --dataset {args.dataset} "
                f"--n {args.n} --rows {args.rows}"
                + ("" if args.single is None else f" --single {args.single}"),
        model=args.model, dataset=args.dataset, n=len(x), codec_lossless=codec.lossless,
        round_trip_exact=f"{exact}/{len(single)} (decoded image == "
                         "codec.decode(codec.encode(img)))",
        single_n=len(single), wvc_file_bpd=8 * sum(map(len, files)) / dims_single,
        wvc_payload_bpd=pay_bits / dims_single, model_bpd=model_bits / dims_single,
        payload_over_model=pay_bits / model_bits - 1,
        mean_file_bytes=sum(map(len, files)) / len(single),
        header_bytes=read_header(data)["payload_offset"],
        others_bpd=others, encode_images_per_s=len(single) / t_enc,
        decode_images_per_s=len(single) / t_dec, blocks=block)
    out = CODEC / f"compress_{args.model}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    if args.rd:
        t0 = time.perf_counter()
        rd = dict(command=res["command"] + " --rd", model=args.model, dataset=args.dataset,
                  n=len(single), fractions=rate_distortion(model, single, files),
                  seconds=time.perf_counter() - t0)
        out = CODEC / f"compress_{args.model}_rd.json"
        out.write_text(json.dumps(rd, indent=2) + "\n")
        print(json.dumps(rd, indent=2))


if __name__ == "__main__":
    main()
