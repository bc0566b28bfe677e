"""Whole test sets as ``.wvc`` files, coded in blocks by several worker processes (issue 21).

The first N test images of a dataset are split into W contiguous slices, whole blocks each;
each worker process loads the model onto ``--device`` (the CPU, or one CUDA GPU that all
workers share) and codes its slice with ``compress_many`` in blocks of ``--rows`` rows, then
decodes it with ``decompress_many``. Why processes: a block's model step is one batched call,
but the range coder and the grammar step row by row on the host, ~30 us a row and a step, so
one process keeps a GPU mostly idle; W processes step W blocks at once.

Reports file and payload bits/dim, the model's own code length of the same sequences (the coding
run's float32 probabilities of the coded tokens, before quantising: ``compress_many``'s
``code_bits``; unconditional, as the files are coded), checked against a teacher-forced pass
over the first block (the same numbers up to float rounding: a second pass over every image
would cost as long as the coding), the gap between them, the lossless image codecs of
``lossless_codecs.py`` on the same images, encode and decode images/s (the images over the wall
time from the first worker's start to the last one's end, model loading excluded), whether every
decoded image equals the codec's own decode(encode(image)), and two files decoded alone in the
main process (at their row of an otherwise idle block). Writes
``benchmarks/results/codec/compress_batched_<model>_<device>.json``.

    PYTHONPATH=. python benchmarks/compress_batched.py --model mnist --dataset mnist \\
        --n 10000 --device cuda --rows 256 --workers 8
    PYTHONPATH=. python benchmarks/compress_batched.py --model cifar10-lossless \\
        --dataset cifar10 --n 1000 --device cuda --rows 64 --workers 8
"""

from __future__ import annotations

import argparse
import json
import queue
import time

import numpy as np
import torch
import torch.multiprocessing as mp

from benchmarks._common import CODEC
from benchmarks.lossless_codecs import lossless_bpd
from wavar.compress import (
    compress_many,
    decompress,
    decompress_many,
    device_tag,
    pack_archive,
    read_header,
    unpack_archive,
)
from wavar.data import datasets
from wavar.data.shards import TokenDataset
from wavar.eval.likelihood import nll
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of


def _load(name: str, device: str) -> WaveletGPT:
    return WaveletGPT.from_pretrained(name).to(device)


def _worker(rank: int, args, images: np.ndarray, barrier, results) -> None:
    torch.set_num_threads(args.threads)
    model = _load(args.model, args.device)
    codec = codec_of(model)
    want = [codec.decode(codec.encode(img)) for img in images]
    barrier.wait()  # every worker loaded: the clock starts together
    t0 = time.time()
    bits: list[float] = []
    files = compress_many(model, images, args.model, rows=args.rows, code_bits=bits)
    t1 = time.time()
    barrier.wait()
    t2 = time.time()
    got = decompress_many(files, model)
    t3 = time.time()
    exact = sum(int(np.array_equal(g, w)) for g, w in zip(got, want, strict=True))
    results.put((rank, files, bits, exact, (t0, t1), (t2, t3)))


def model_bits(model, images: np.ndarray, batch: int) -> float:
    """The model's code length in bits of the images' sequences, unconditional (the null
    label, as the files are coded), teacher-forced."""
    codec = codec_of(model)
    seqs = [codec.encode(img) for img in images]
    tokens = np.concatenate([s.tokens for s in seqs]).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    m_tilde = np.array([s.header.m_tilde for s in seqs])
    null = np.full(len(seqs), model.config.num_classes)
    data = TokenDataset.from_sequences(codec, images.shape[1:], tokens, offsets, m_tilde, null,
                                       context=bool(model.config.decoder_state))
    return nll(model, data, batch_size=batch)["bits_per_image"] * len(seqs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist-small")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    ap.add_argument("--rows", type=int, default=256, help="rows of a block")
    ap.add_argument("--workers", type=int, default=8, help="processes coding at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--nll-batch", type=int, default=64)
    args = ap.parse_args()
    x = datasets.load(args.dataset, "test").x[: args.n]
    blocks = -(-len(x) // args.rows)
    per = -(-blocks // args.workers) * args.rows  # whole blocks per worker
    slices = [x[i : i + per] for i in range(0, len(x), per)]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(slices)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(k, args, s, barrier, results))
             for k, s in enumerate(slices)]
    for p in procs:
        p.start()
    got = []
    while len(got) < len(procs):  # a worker that dies puts nothing: do not wait for it
        try:
            got.append(results.get(timeout=5))
        except queue.Empty:
            if any(p.exitcode for p in procs):
                raise SystemExit("a worker failed (its traceback is above)") from None
    got.sort(key=lambda r: r[0])
    for p in procs:
        p.join()
    files = [f for _, fs, *_ in got for f in fs]
    bits = np.array([b for _, _, bs, *_ in got for b in bs])
    exact = sum(e for _, _, _, e, *_ in got)
    enc_s = max(t[1] for *_, t, _ in got) - min(t[0] for *_, t, _ in got)
    dec_s = max(t[1] for *_, t in got) - min(t[0] for *_, t in got)
    model = _load(args.model, args.device)
    codec = codec_of(model)
    alone = []
    for i in (0, len(files) - 1):  # decoded alone, in this process: the block's arithmetic
        want = codec.decode(codec.encode(x[i]))
        alone.append(bool(np.array_equal(decompress(files[i], model), want)))
    t = time.perf_counter()
    first = min(args.rows, len(x))
    forced = model_bits(model, x[:first], args.nll_batch)
    nll_s = time.perf_counter() - t
    dims = x[0].size * len(x)
    pay = sum(read_header(f)["payload_bytes"] for f in files)
    # all the files in one archive, each named by its index (as `wavar compress` names them
    # by their images' file names)
    archive = pack_archive(files, [str(i) for i in range(len(files))])
    assert unpack_archive(archive)[0] == files
    others = lossless_bpd(x)  # all n images, each a file of its own
    res = dict(
        command=f"PYTHONPATH=. python benchmarks/compress_batched.py --model {args.model} "
                f"--dataset {args.dataset} --n {args.n} --device {args.device} --rows "
                f"{args.rows} --workers {args.workers} --threads {args.threads}",
        model=args.model, dataset=args.dataset, n=len(x), device=args.device,
        device_tag=device_tag(args.device) or "cpu", rows=args.rows, workers=len(slices),
        codec_lossless=codec.lossless,
        round_trip_exact=f"{exact}/{len(x)} (decoded image == codec.decode(codec.encode(img)))",
        alone_exact=alone, file_bpd=8 * sum(map(len, files)) / dims, payload_bpd=8 * pay / dims,
        archive_bpd=8 * len(archive) / dims,
        model_bpd=bits.sum() / dims, payload_over_model=8 * pay / bits.sum() - 1,
        teacher_forced_first_block=dict(images=first, bits=forced,
                                        coding_run_bits=float(bits[:first].sum()),
                                        relative_difference=float(bits[:first].sum() / forced
                                                                  - 1), seconds=nll_s),
        mean_file_bytes=sum(map(len, files)) / len(files),
        header_bytes=read_header(files[0])["payload_offset"], others_bpd=others,
        encode_images_per_s=len(x) / enc_s, decode_images_per_s=len(x) / dec_s,
        encode_s=enc_s, decode_s=dec_s)
    print(json.dumps(res, indent=2))
    out = CODEC / f"compress_batched_{args.model}_{args.device}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
