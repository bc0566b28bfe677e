"""The launcher of the decode-attention Triton kernels (:mod:`wavar.model.triton_kernels`) and
its PyTorch reference; importing this module needs no Triton.

Decode attention with per-row cache lengths. One sampling step of a batch gives every row one
query. Row r writes its new key and value at cache position ``positions[r]`` and attends over
positions ``0 .. positions[r]``; a negative position skips the row (a finished sequence: no
cache write, no reads). Each row therefore reads exactly its own prefix, once, whatever the
other rows' lengths, which is what the bandwidth bound of sampling counts, and the shapes never
change between steps (one CUDA graph serves a whole generation).

The kernel is flash-decoding (Dao et al. 2023): one program per (row, key/value head, chunk of
the prefix), the query heads that share a key/value head processed together on tensor cores
(grouped-query attention reads each cached key once), an online softmax over blocks of
positions, and a second kernel that merges a row's chunks. Chunks have a fixed size, so a long
prefix gets more programs than a short one and a finished row none: rows of unequal lengths
keep the GPU evenly busy. The new key and value take part from registers, so no program reads a
position another may still be writing.

The model's ``row_attention`` runs this kernel where :func:`attention_kernel_limit` allows it
(and the sampler's fused step, :mod:`wavar.sample.fused_step`, around it);
``decode_attention_reference`` is the same attention in plain PyTorch (any device, any head
size), which the tests run the kernel against in Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def in_window(q: Tensor, k: Tensor, window: int, sink: Tensor) -> Tensor:
    """Whether query position ``q`` may see key position ``k`` of its own sequence under
    sliding-window attention: k no later than q, and within the last ``window`` positions or
    the sequence's class prefix (``sink``, a bool the shape of k's broadcast). ``window`` 0:
    the whole past."""
    causal = q >= k
    return causal & ((q - k < window) | sink) if window else causal


def decode_attention_reference(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor,
                               v_cache: Tensor, positions: Tensor, window: int = 0) -> Tensor:
    """Write k, v (B, Hkv, hd) at ``positions`` (B,) of the caches (B, Hkv, L, hd), then attend
    from q (B, H, hd) over each row's positions 0..positions[r] (with a ``window``, the last
    ``window`` of them and position 0, the class prefix). Returns (B, H, hd); rows with a
    negative position leave the caches untouched and get zeros."""
    B, H, hd = q.shape
    n_kv, length = k_cache.size(1), k_cache.size(2)
    alive = positions >= 0
    at = positions.clamp(min=0)
    rows = torch.arange(B, device=q.device)
    for cache, new in ((k_cache, k), (v_cache, v)):  # (B, Hkv, hd) entries, kept where dead
        cache[rows, :, at] = torch.where(alive[:, None, None], new.to(cache.dtype),
                                         cache[rows, :, at])
    keys = torch.arange(length, device=q.device)[None, :]
    seen = in_window(at[:, None], keys, window, keys == 0)  # (B, L)
    qg = (q.float() * hd**-0.5).reshape(B, n_kv, H // n_kv, hd)
    att = qg @ k_cache.float().transpose(-1, -2)  # (B, Hkv, G, L)
    att = att.masked_fill(~seen[:, None, None, :], float("-inf")).softmax(-1)
    out = (att @ v_cache.float()).reshape(B, H, hd)
    return out.masked_fill(~alive[:, None, None], 0.0).to(q.dtype)


@functools.cache
def triton_available() -> bool:
    """True when Triton imports and can drive this machine's GPU."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def default_chunk(batch_kv: int, length: int, device: torch.device, block_n: int = 64) -> int:
    """Positions of a prefix per program: enough programs for about eight per multiprocessor
    when every row's prefix is full (a single sequence: chunks of one block), at most 512
    positions, so that rows of unequal lengths still spread evenly. A multiple of ``block_n``."""
    if device.type != "cuda":  # one chunk
        return block_n * -(-length // block_n)
    want = 8 * torch.cuda.get_device_properties(device).multi_processor_count
    blocks = -(-batch_kv * length // (block_n * want))
    return block_n * min(512 // block_n, 1 << max(0, math.ceil(math.log2(max(blocks, 1)))))


def attention_kernel_limit(head_dim: int) -> str | None:
    """Why :func:`decode_attention_triton` cannot serve heads of ``head_dim``, or None: its
    tiles need a power-of-two head size of at least 16 (the reference serves any)."""
    if head_dim < 16 or head_dim & (head_dim - 1):
        return f"head size {head_dim} is not a power of two >= 16"
    return None


def use_attention_kernel(q: Tensor) -> bool:
    """Whether decode attention for queries ``q`` (B, H, hd) runs the Triton kernel: CUDA
    tensors, Triton, and a head size its tiles fit (else the reference serves)."""
    return q.is_cuda and triton_available() and attention_kernel_limit(q.size(-1)) is None


def input_precision(dtype: torch.dtype, precision: str | None) -> str:
    """Triton's ``input_precision`` for products of ``dtype`` tiles: ``precision`` if given,
    else TF32 where PyTorch's own fp32 matrix products may use it (the tf32 variants are
    fp32-only)."""
    if dtype != torch.float32:
        return "ieee"
    if precision is None:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"
    return precision


def decode_attention_triton(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor,
                            positions: Tensor, chunk: int | None = None, dot: bool = True,
                            precision: str | None = None, window: int = 0) -> Tensor:
    """:func:`decode_attention_reference` as one Triton kernel (two when prefixes are chunked).

    ``chunk`` (default :func:`default_chunk`; a multiple of the block) is how many cached
    positions one program reads; a row's chunks are merged after. ``dot`` computes the scores
    and the weighted values on tensor cores (the query group padded to 16 rows), fp32 caches at
    ``precision`` (Triton's ``input_precision``: ``"tf32x3"`` keeps about fp32 accuracy,
    ``"ieee"`` is exact fp32 without tensor cores, ``"tf32"`` the fastest and coarsest; by
    default ``"tf32"`` where ``torch.backends.cuda.matmul.allow_tf32`` lets PyTorch's own fp32
    matrix products use TF32, else ``"tf32x3"``). ``dot=False`` multiplies without tensor
    cores (Triton's interpreter multiplies bf16 tiles wrongly: the tests run this variant).
    With a ``window`` the programs read only the window's positions (the prefix's from
    registers of the first chunk): chunks before the window read nothing.
    """
    from wavar.model import triton_kernels as tk

    B, H, hd = q.shape
    n_kv, length = k_cache.size(1), k_cache.size(2)
    group = H // n_kv
    limit = attention_kernel_limit(hd)
    if limit or any(x.stride(-1) != 1 for x in (q, k, v, k_cache, v_cache)):
        raise ValueError(f"decode attention: {limit or 'the last dimension is not contiguous'}")
    gp = max(16 if dot else 2, 1 << math.ceil(math.log2(group)))
    # blocks of 64 positions; without tensor cores the (GP, BN, HD) products live in
    # registers: keep them near 8k
    block_n = 64 if dot else max(16, min(64, 8192 // (gp * hd)))
    chunk = chunk or default_chunk(B * n_kv, length, q.device, block_n)
    block_n = min(block_n, chunk)
    if block_n < 16 or block_n & (block_n - 1) or chunk % block_n:
        raise ValueError(f"chunk={chunk} must be a multiple of a power-of-two block of at "
                         f"least 16 positions (block_n={block_n})")
    chunks = -(-length // chunk)
    out = torch.empty(B, H, hd, dtype=q.dtype, device=q.device)
    parts = [torch.empty(B * n_kv * chunks * gp * w, dtype=torch.float32, device=q.device)
             for w in (1, 1, hd)] if chunks > 1 else [out, out, out]
    layout = dict(HKV=n_kv, G=group, GP=gp, HD=hd, CHUNK=chunk, CHUNKS=chunks)
    warps = 4 if dot or gp * hd * block_n <= 8192 else 8
    tk.attend[(B * n_kv, chunks)](
        q, k, v, k_cache, v_cache, positions, out, *parts,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        hd**-0.5, window, BLOCK_N=block_n, DOT=dot,
        PRECISION=input_precision(k_cache.dtype, precision),
        num_warps=warps, **layout)
    if chunks > 1:
        tk.merge[(B * n_kv,)](positions, out, *parts, out.stride(0), out.stride(1), num_warps=4,
                              **layout)
    return out
