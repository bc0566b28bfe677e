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
``benchmarks/results/codec/compress_batched_<model>_<device>.json``: once when every worker has
coded (``"complete": false``, the encode-side figures: a run cut short by a time limit still
leaves them) and again, complete, after decoding. Each worker prints a line as it ends a phase.

A test set too long for one time limit (1,000 CIFAR-10 images take ~15,000 steps a block each
way) runs in two: ``--phase encode --files DIR`` keeps the files and the encode report in DIR,
``--phase decode --files DIR`` (the same model, dataset and --n) decodes them and completes the
report. Either phase keeps each worker's slice in DIR the moment that worker ends
(``encode_K.json`` beside its files, ``decode_K.json``), so a call cut short by its time limit
loses only the slices still running, and the same command again runs only those. Speed is then
given per call (``encode_calls``/``decode_calls``: its slices, images, wall time), and the
phase's images/s only when one call ran every slice (workers running side by side in one call
are what the figure measures).

    PYTHONPATH=. python benchmarks/compress_batched.py --model mnist --dataset mnist \\
        --n 10000 --device cuda --rows 256 --workers 8
    PYTHONPATH=. python benchmarks/compress_batched.py --model cifar10-lossless \\
        --dataset cifar10 --n 1000 --device cuda --rows 125 --workers 8 --phase encode \\
        --files .carry/wvc-cifar10   # then the same with --phase decode
"""

from __future__ import annotations

import argparse
import json
import queue
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from benchmarks._common import CODEC
from benchmarks.lossless_codecs import lossless_bpd
from wavar.atomic import write_atomic
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


def _worker(rank: int, args, images: np.ndarray, files: list[bytes] | None, barrier,
            results) -> None:
    """Code ``images`` (when ``files`` is None), then decode the files unless the phase is
    encode only; each phase's result goes to ``results`` as soon as it is done."""
    torch.set_num_threads(args.threads)
    model = _load(args.model, args.device)
    codec = codec_of(model)
    want = [codec.decode(codec.encode(img)) for img in images]
    barrier.wait()  # every worker loaded: the clock starts together
    if files is None:
        t0 = time.time()
        bits: list[float] = []
        files = compress_many(model, images, args.model, rows=args.rows, code_bits=bits)
        t1 = time.time()
        print(f"worker {rank}: coded {len(images)} images in {t1 - t0:.1f} s", flush=True)
        results.put(("encode", rank, files, bits, (t0, t1)))
        if args.phase == "encode":
            return
        barrier.wait()
    t2 = time.time()
    got = decompress_many(files, model)
    t3 = time.time()
    exact = sum(int(np.array_equal(g, w)) for g, w in zip(got, want, strict=True))
    print(f"worker {rank}: decoded {len(files)} files in {t3 - t2:.1f} s, {exact} exact",
          flush=True)
    results.put(("decode", rank, exact, (t2, t3)))


def _collect(results, procs, kind: str, early: list[tuple], keep) -> None:
    """Hand one ``kind`` message from every worker to ``keep``, each as it comes. A message of
    the next phase that comes first waits in ``early``; a worker that dies puts nothing, so
    its exit code ends the wait."""
    waiting = [m for m in early if m[0] == kind]
    early[:] = [m for m in early if m[0] != kind]
    for m in waiting:
        keep(m[1:])
    got = len(waiting)
    while got < len(procs):
        try:
            msg = results.get(timeout=5)
        except queue.Empty:
            if any(p.exitcode for p in procs):
                raise SystemExit("a worker failed (its traceback is above)") from None
            continue
        if msg[0] == kind:
            got += 1
            keep(msg[1:])
        else:
            early.append(msg)


class Slices:
    """Each worker's finished slice of a phase, kept in the --files folder: ``encode_K.json``
    (its first image, code bits and clock; the files beside it) or ``decode_K.json`` (its exact
    count and clock), for a run of these settings only. ``done(phase)`` is what an earlier
    call of the same command left."""

    def __init__(self, folder: Path | None, settings: dict):
        self.folder, self.settings = folder, settings

    def done(self, phase: str) -> dict[int, dict]:
        if self.folder is None:
            return {}
        found = {}
        for path in sorted(self.folder.glob(f"{phase}_*.json")):
            rec = json.loads(path.read_text())
            if rec.get("settings") == self.settings:
                found[rec["rank"]] = rec
        return found

    def keep(self, phase: str, rec: dict, files: list[bytes] = ()) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for j, f in enumerate(files):
            (self.folder / f"{rec['start'] + j:05d}.wvc").write_bytes(f)
        text = json.dumps(dict(rec, settings=self.settings)) + "\n"
        # whole or absent, if killed here
        write_atomic(self.folder / f"{phase}_{rec['rank']}.json", lambda f: f.write(text.encode()))


def _speed(records: dict[int, dict], n: int) -> tuple[float | None, float, list[dict]]:
    """A phase's images/s (None unless one call ran every slice), the wall time of the last
    call, and each call's slices, images and wall time."""
    calls: dict[str, list[dict]] = {}
    for rec in records.values():
        calls.setdefault(rec["call"], []).append(rec)
    out = [dict(call=c, slices=sorted(r["rank"] for r in rs),
                images=sum(r["n"] for r in rs),
                seconds=_span([(r["t0"], r["t1"]) for r in rs])) for c, rs in calls.items()]
    out.sort(key=lambda c: min(r["t0"] for r in calls[c["call"]]))
    return (n / out[0]["seconds"] if len(out) == 1 else None), out[-1]["seconds"], out


def _span(times: list[tuple[float, float]]) -> float:
    """Wall time from the first worker's start to the last one's end."""
    return max(t[1] for t in times) - min(t[0] for t in times)


def model_bits(model, images: np.ndarray, batch: int) -> float:
    """The model's code length in bits of the images' sequences, unconditional (the null
    label, as the files are coded), teacher-forced."""
    codec = codec_of(model)
    seqs = [codec.encode(img) for img in images]
    null = np.full(len(seqs), model.config.num_classes)
    data = TokenDataset.from_coded(codec, images.shape[1:], seqs, null,
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
    ap.add_argument("--phase", default="both", choices=("both", "encode", "decode"),
                    help="encode only (keeps the files in --files), decode only (reads them), "
                         "or both")
    ap.add_argument("--files", type=Path, help="folder of the .wvc files and the encode "
                    "report (needed by --phase encode and decode)")
    ap.add_argument("--out", type=Path, help="the report (default: benchmarks/results/codec/"
                    "compress_batched_<model>_<device>.json)")
    args = ap.parse_args()
    if args.phase != "both" and args.files is None:
        ap.error(f"--phase {args.phase} needs --files")
    x = datasets.load(args.dataset, "test").x[: args.n]
    out = args.out or CODEC / f"compress_batched_{args.model}_{args.device}.json"
    blocks = -(-len(x) // args.rows)
    per = -(-blocks // args.workers) * args.rows  # whole blocks per worker
    starts = list(range(0, len(x), per))
    slices = Slices(args.files, dict(model=args.model, dataset=args.dataset, n=len(x),
                                     rows=args.rows, workers=args.workers))
    call = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {uuid.uuid4().hex[:6]}"  # this call's name
    if args.phase == "decode":
        if not (args.files / "encode.json").exists():
            raise SystemExit(f"{args.files} has no encode.json: the encode phase has not "
                             "finished there (run --phase encode again: it codes only the "
                             "slices still missing)")
        res = json.loads((args.files / "encode.json").read_text())
        if (res["model"], res["dataset"], res["n"]) != (args.model, args.dataset, len(x)):
            raise SystemExit(f"{args.files} holds {res['n']} {res['dataset']} files of "
                             f"{res['model']}, not {len(x)} {args.dataset} ones of {args.model}")
        files = [(args.files / f"{i:05d}.wvc").read_bytes() for i in range(len(x))]
    phases = [p for p in ("encode", "decode") if args.phase in (p, "both")]
    # a phase run alone resumes: the slices an earlier call finished are not run again
    done = {p: slices.done(p) if args.phase != "both" else {} for p in phases}
    todo = [k for k in range(len(starts)) if k not in done[phases[0]]]
    for p in phases:
        if done[p]:
            print(f"{p}: slices {sorted(done[p])} already done in {args.files} (an earlier "
                  f"call); running {[k for k in todo if k not in done[p]]}", flush=True)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(max(len(todo), 1)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(k, args, x[starts[k] : starts[k] + per],
                                               files[starts[k] : starts[k] + per]
                                               if args.phase == "decode" else None,
                                               barrier, results))
             for k in todo]
    for p in procs:
        p.start()
    # the main process's own work (the model's bits checked, the image codecs, the files
    # decoded alone) waits for the workers' phases, so as not to slow their clocks
    early: list[tuple] = []
    if "encode" in phases:
        def keep_encoded(m):
            rank, fs, bs, (t0, t1) = m
            rec = dict(rank=rank, start=starts[rank], n=len(fs), bits=bs, t0=t0, t1=t1,
                       call=call)
            done["encode"][rank] = rec
            slices.keep("encode", rec, fs)
            files_of[rank] = fs

        files_of: dict[int, list[bytes]] = {}
        _collect(results, procs, "encode", early, keep_encoded)
        for k, rec in done["encode"].items():
            if k not in files_of:  # coded by an earlier call
                files_of[k] = [(args.files / f"{rec['start'] + j:05d}.wvc").read_bytes()
                               for j in range(rec["n"])]
        files = [f for k in sorted(files_of) for f in files_of[k]]
        bits = np.array([b for k in sorted(done["encode"]) for b in done["encode"][k]["bits"]])
        res = _file_figures(args, x, files, bits, len(starts),
                            *_speed(done["encode"], len(x)))
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"encode figures -> {out}", flush=True)
    if "decode" in phases:
        def keep_decoded(m):
            rank, exact, (t2, t3) = m
            rec = dict(rank=rank, start=starts[rank], n=min(per, len(x) - starts[rank]),
                       exact=exact, t0=t2, t1=t3, call=call)
            done["decode"][rank] = rec
            slices.keep("decode", rec)

        _collect(results, procs, "decode", early, keep_decoded)
        exact = sum(r["exact"] for r in done["decode"].values())
        dec_rate, dec_s, dec_calls = _speed(done["decode"], len(x))
    for p in procs:
        p.join()
    model = _load(args.model, args.device)
    if "encode" in phases:
        res.update(_checks(args, x, model, files, bits))
        if args.files is not None:
            (args.files / "encode.json").write_text(json.dumps(res, indent=2) + "\n")
    if "decode" in phases:
        codec = codec_of(model)
        alone = []
        for i in (0, len(files) - 1):  # decoded alone, in this process: the block's arithmetic
            want = codec.decode(codec.encode(x[i]))
            alone.append(bool(np.array_equal(decompress(files[i], model), want)))
        res.update(
            complete=True,
            round_trip_exact=f"{exact}/{len(x)} (decoded image == codec.decode(codec.encode(img)))",
            alone_exact=alone, decode_images_per_s=dec_rate, decode_s=dec_s,
            decode_calls=dec_calls)
        if args.phase == "decode":
            res["command"] += f"; then --phase decode --workers {args.workers}"
    print(json.dumps(res, indent=2))
    out.write_text(json.dumps(res, indent=2) + "\n")


def _file_figures(args, x: np.ndarray, files: list[bytes], bits: np.ndarray, workers: int,
                  enc_rate: float | None, enc_s: float, enc_calls: list[dict]) -> dict:
    """What the coding run alone tells: file, payload and model bits, encode speed."""
    dims = x[0].size * len(x)
    pay = sum(read_header(f)["payload_bytes"] for f in files)
    phase = "" if args.phase == "both" else f" --phase encode --files {args.files}"
    return dict(
        command=f"PYTHONPATH=. python benchmarks/compress_batched.py --model {args.model} "
                f"--dataset {args.dataset} --n {args.n} --device {args.device} --rows "
                f"{args.rows} --workers {args.workers} --threads {args.threads}{phase}",
        model=args.model, dataset=args.dataset, n=len(x), device=args.device,
        device_tag=device_tag(args.device) or "cpu", rows=args.rows, workers=workers,
        complete=False, file_bpd=8 * sum(map(len, files)) / dims, payload_bpd=8 * pay / dims,
        model_bpd=bits.sum() / dims, payload_over_model=8 * pay / bits.sum() - 1,
        mean_file_bytes=sum(map(len, files)) / len(files),
        header_bytes=read_header(files[0])["payload_offset"],
        encode_images_per_s=enc_rate, encode_s=enc_s, encode_calls=enc_calls)


def _checks(args, x: np.ndarray, model, files: list[bytes], bits: np.ndarray) -> dict:
    """The model's bits checked on the first block (teacher-forced), the files as one
    archive, the lossless image codecs on the same images."""
    t = time.perf_counter()
    first = min(args.rows, len(x))
    forced = model_bits(model, x[:first], args.nll_batch)
    nll_s = time.perf_counter() - t
    # all the files in one archive, each named by its index (as `wavar compress` names them
    # by their images' file names)
    archive = pack_archive(files, [str(i) for i in range(len(files))])
    assert unpack_archive(archive)[0] == files
    return dict(
        codec_lossless=codec_of(model).lossless,
        archive_bpd=8 * len(archive) / (x[0].size * len(x)),
        teacher_forced_first_block=dict(images=first, bits=forced,
                                        coding_run_bits=float(bits[:first].sum()),
                                        relative_difference=float(bits[:first].sum() / forced
                                                                  - 1), seconds=nll_s),
        others_bpd=lossless_bpd(x))  # all n images, each a file of its own

if __name__ == "__main__":
    main()
