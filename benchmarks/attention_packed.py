"""Attention of a packed training batch, three ways side by side (issue 18: is FlexAttention
what holds the packed loop at ~25% MFU?).

A batch of ``--batch`` sequences drawn uniformly from the dataset's real token lengths (the
test split, coded as the zoo models code it), as the training loop draws them, then:

* ``flex``: packed into rows of ``--pack-len`` (``wavar.train.packing.place``), FlexAttention
  with the block mask the model builds (``sequence_mask``), compiled: what the loop runs;
* ``padded``: each sequence in its own row padded to the batch's longest (rounded up to 512),
  causal flash attention (``scaled_dot_product_attention``): the unpacked loop, padding
  included;
* ``varlen``: the packed positions as one run, ``torch.nn.attention.varlen.varlen_attn``
  (flash attention over cumulative sequence lengths), where this torch has it; its output is
  checked against ``flex`` at every real position.

``--windows W,...`` adds FlexAttention with attention windows (``model_args.attn_window``:
the last W positions and the class prefix) as the model masks them (one lookup a pair: the
query's sequence start), with the mask function of several lookups the model had before
session 28 (``_lookups``: both positions' sequences and the key's prefix flag), that without
the prefix in sight (``_lookups_noprefix``: what that partial block a query block costs), and
flash attention's own window (``varlen_window``: no prefix, checked against the FlexAttention
one without it); on the CPU (no backward) its forward-only figures
are written too. Every row is also timed forward only (``ms_forward_per_layer``), and each
block mask's blocks are counted as partial (the mask function evaluated) and full.

Query heads and one shared key/value head expanded to them, as the model's training path does;
bf16, forward and backward; the median of ``--reps`` timed steps after warm-up, per layer.

    WAVAR_CACHE=... PYTHONPATH=. python benchmarks/attention_packed.py --dataset fashion-mnist
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import TRAIN
from benchmarks.batch_padding import CODECS
from wavar.codec import WaveletCodec
from wavar.data.shards import TokenDataset
from wavar.model.transformer import _packed_block_mask, sequence_mask
from wavar.train.packing import place

RUNS_PAD = 512  # the loop pads unpacked batches to a multiple of this on CUDA


def packed_doc(lengths: np.ndarray, pack_len: int) -> np.ndarray:
    """``doc`` (R, P) of one batch's sequences (a class prefix each) packed as the loop packs
    them, rows rounded up to an even number; -1 for padding."""
    need = lengths + 1
    row, offset, n_rows = place(need, pack_len)
    doc = np.full((n_rows + n_rows % 2, pack_len), -1, np.int64)
    for i, (r, o, n) in enumerate(zip(row, offset, need, strict=True)):
        doc[r, o : o + n] = i
    return doc


def runs(doc: np.ndarray) -> np.ndarray:
    """Cumulative lengths (int32) of the runs of equal ``doc`` along the rows laid end to end
    (a row's padding is a run of its own): varlen attention's ``cu_seq``."""
    flat = doc.reshape(-1)
    starts = np.ones(flat.size, bool)
    starts[1:] = flat[1:] != flat[:-1]
    starts[:: doc.shape[1]] = True  # a row never continues the one before
    return np.append(np.flatnonzero(starts), flat.size).astype(np.int32)


def varlen_call():
    """``varlen_attn`` and the keywords that make it causal in this torch, or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return varlen_attn, causal


def timed(fn, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def lookups_mask_mod(doc: torch.Tensor, window: int, prefix: torch.Tensor):
    """The windowed mask function the model had before session 28, which looks up both
    positions' sequences and the key's prefix flag (``prefix`` (B, P) bool), where the model's
    (``sequence_mask``) looks up one table, each query's sequence start: the same visibility,
    the forward 17x slower at W = 1,024 on an H100."""
    def mod(b, h, q, k):
        d = doc[b, q]
        seen = (q >= k) & ((q - k < window) | prefix[b, k])
        return (d == doc[b, k]) & seen & ((d >= 0) | (q == k))

    return mod


def windowed(doc: torch.Tensor, window: int, prefix: torch.Tensor):
    """The block mask of a window with the three-lookup mask function (``prefix`` all False:
    no class prefix in sight, the visibility flash attention's own window has)."""
    return _packed_block_mask(doc, lookups_mask_mod(doc, window, prefix), window, prefix)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(CODECS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pack-len", type=int, default=8192)
    p.add_argument("--heads", type=int, default=5)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--windows", default="",
                   help="also FlexAttention with these attention windows (model_args.attn_window: "
                        "the last W positions and the class prefix), e.g. 1024,256")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths = TokenDataset.load(args.dataset, WaveletCodec(**CODECS[args.dataset]),
                                "test").lengths
    rng = np.random.default_rng(0)
    batch = lengths[rng.integers(0, len(lengths), args.batch)].astype(np.int64)
    H, hd = args.heads, args.head_dim

    def qkv(shape):  # q, k, v leaves; k and v of one head, expanded as the model does
        q = torch.randn(*shape[:1], H, *shape[1:], hd, device=device, dtype=dtype)
        kv = [torch.randn(*shape[:1], 1, *shape[1:], hd, device=device, dtype=dtype)
              for _ in range(2)]
        # backward on CUDA only: the CPU's FlexAttention has none (a smoke run here)
        return [t.requires_grad_(device.type == "cuda") for t in (q, *kv)]

    def step(attend, *leaves):
        q, k, v = leaves
        y = attend(q, k, v)
        if y.requires_grad:
            y.float().square().mean().backward()
        return y

    doc_np = packed_doc(batch, args.pack_len)
    doc = torch.from_numpy(doc_np).to(device)
    mask = sequence_mask(doc, flex=True)
    flex = torch.compile(torch.nn.attention.flex_attention.flex_attention)
    packed = qkv(doc.shape)
    rows, forward, blocks = {}, {}, {}

    def measure(name, attend, leaves, block_mask=None):
        rows[name] = timed(lambda: step(attend, *leaves), args.reps, device)
        with torch.no_grad():
            forward[name] = timed(lambda: attend(*leaves), args.reps, device)
        if block_mask is not None:
            blocks[name] = dict(partial=int(block_mask.kv_num_blocks.sum()),
                                full=int(block_mask.full_kv_num_blocks.sum()))

    def flexed(m):
        return lambda q, k, v: flex(q, k.expand_as(q), v.expand_as(q), block_mask=m)

    measure("flex", flexed(mask), packed, mask)
    starts = np.ones_like(doc_np, dtype=bool)
    starts[:, 1:] = doc_np[:, 1:] != doc_np[:, :-1]
    prefix = torch.from_numpy(starts & (doc_np >= 0)).to(device)  # each sequence's first
    # each window three ways: as the model has it (one lookup), with the mask function of
    # several lookups, and that without the class prefix in sight (no prefix anywhere), which
    # drops a partial block per query block: what the prefix costs
    for w in (int(x) for x in args.windows.split(",") if x):
        wmask = sequence_mask(doc, flex=True, window=w)
        measure(f"flex_window{w}", flexed(wmask), packed, wmask)
        for name, pre in (("lookups", prefix), ("lookups_noprefix", torch.zeros_like(prefix))):
            lmask = windowed(doc, w, pre)
            measure(f"flex_window{w}_{name}", flexed(lmask), packed, lmask)
    longest = -(-int(batch.max() + 1) // RUNS_PAD) * RUNS_PAD
    padded = qkv((args.batch, longest))
    measure("padded", lambda q, k, v: F.scaled_dot_product_attention(
        q, k.expand_as(q), v.expand_as(q), is_causal=True), padded)
    found = varlen_call() if device.type == "cuda" else None
    check = None
    if found is not None:
        varlen_attn, causal = found
        cu_np = runs(doc_np)
        cu = torch.from_numpy(cu_np).to(device)
        longest_run = int(np.diff(cu_np).max())

        def as_tokens(t):  # (R, H, P, hd) -> (R * P, H, hd)
            return t.transpose(1, 2).reshape(-1, H, hd)

        def varlen(window: int):
            kw = dict(causal, window_size=(window - 1, 0)) if window else causal

            def attend(q, k, v):
                return varlen_attn(as_tokens(q), as_tokens(k.expand_as(q)).contiguous(),
                                   as_tokens(v.expand_as(q)).contiguous(), cu, cu,
                                   longest_run, longest_run, **kw)
            return attend

        real = torch.from_numpy(doc_np.reshape(-1) >= 0).to(device)
        check = {}
        for w in [0] + [int(x) for x in args.windows.split(",") if x]:
            name = f"varlen_window{w}" if w else "varlen"
            measure(name, varlen(w), packed)
            with torch.no_grad():  # against FlexAttention's mask of the same visibility
                m = mask if not w else windowed(doc, w, torch.zeros_like(prefix))
                want = as_tokens(flexed(m)(*packed))
                got = varlen(w)(*packed)
                check[name] = float((got[real].float() - want[real].float()).abs().max())
    real_tokens = int(batch.sum() + len(batch))
    res = dict(command="PYTHONPATH=. python benchmarks/attention_packed.py --dataset "
                       f"{args.dataset} --batch {args.batch} --pack-len {args.pack_len}"
                       + (f" --windows {args.windows}" if args.windows else ""),
               torch=torch.__version__, device=torch.cuda.get_device_name(device)
               if device.type == "cuda" else "cpu", dtype=str(dtype), heads=H, head_dim=hd,
               batch=args.batch, real_tokens=real_tokens, packed_rows=int(doc.shape[0]),
               padded_len=longest, backward=device.type == "cuda",
               ms_per_layer={k: 1e3 * v for k, v in rows.items()},
               ms_forward_per_layer={k: 1e3 * v for k, v in forward.items()}, flex_blocks=blocks,
               varlen=("CUDA only" if device.type != "cuda" else "not in this torch"
                       if found is None else str(found[1])),
               varlen_max_abs_diff_vs_flex=check)
    print(json.dumps(res, indent=1))
    if device.type != "cuda" and not args.windows:
        return  # a smoke run (the CPU's figures: forward only, and at most for a window)
    out = TRAIN / (f"attention_packed_{args.dataset}_{res['device'].split()[-1].lower()}"
                   f"_b{args.batch}_p{args.pack_len}"
                   + (f"_w{args.windows.replace(',', '-')}" if args.windows else "") + ".json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
