"""Decode attention with per-row cache lengths: a Triton kernel and its PyTorch reference.

One sampling step of a batch gives every row one query. Row r writes its new key and value at
cache position ``positions[r]`` and attends over positions ``0 .. positions[r]``; a negative
position skips the row (a finished sequence: no cache write, no reads). Each row therefore
reads exactly its own prefix, once, whatever the other rows' lengths, which is what the
bandwidth bound of sampling counts, and the shapes never change between steps (one CUDA graph
serves a whole generation).

The kernel is flash-decoding (Dao et al. 2023): one program per (row, key/value head, chunk of
the prefix), the query heads that share a key/value head processed together on tensor cores
(grouped-query attention reads each cached key once), an online softmax over blocks of
positions, and a second kernel that merges a row's chunks. Chunks have a fixed size, so a long
prefix gets more programs than a short one and a finished row none: rows of unequal lengths
keep the GPU evenly busy. The new key and value take part from registers, so no program reads a
position another may still be writing.

``decode_attention_reference`` is the same computation in plain PyTorch (any device); the tests
run the kernel in Triton's interpreter (``TRITON_INTERPRET=1``) against it.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def decode_attention_reference(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor,
                               v_cache: Tensor, positions: Tensor) -> Tensor:
    """Write k, v (B, Hkv, hd) at ``positions`` (B,) of the caches (B, Hkv, L, hd), then attend
    from q (B, H, hd) over each row's positions 0..positions[r]. Returns (B, H, hd); rows with a
    negative position leave the caches untouched and get zeros."""
    B, H, hd = q.shape
    n_kv, length = k_cache.size(1), k_cache.size(2)
    alive = positions >= 0
    at = positions.clamp(min=0)
    rows = torch.arange(B, device=q.device)
    for cache, new in ((k_cache, k), (v_cache, v)):  # (B, Hkv, hd) entries, kept where dead
        cache[rows, :, at] = torch.where(alive[:, None, None], new.to(cache.dtype),
                                         cache[rows, :, at])
    seen = torch.arange(length, device=q.device)[None, :] <= at[:, None]  # (B, L)
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


@functools.cache
def _kernels():
    """The two Triton kernels, built on first use (importing this module needs no Triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def attend(Q, K, V, KC, VC, POS, OUT, M_PART, L_PART, A_PART,
               s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_cb, s_ch, s_cl, s_ob, s_oh, scale,
               HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, HD: tl.constexpr,
               BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, CHUNKS: tl.constexpr,
               DOT: tl.constexpr, PRECISION: tl.constexpr):
        pid = tl.program_id(0)  # row * HKV + key/value head
        chunk = tl.program_id(1)
        row = pid // HKV
        kvh = pid % HKV
        p = tl.load(POS + row).to(tl.int32)
        n = tl.maximum(p, 0)  # cached positions before this step's
        lo = chunk * CHUNK
        first = chunk == 0
        g = tl.arange(0, GP)
        d = tl.arange(0, HD)
        heads = kvh * G + g
        if (p < 0) & first:  # a finished row: zeros, no reads, no writes to the cache
            tl.store(OUT + row * s_ob + heads[:, None] * s_oh + d[None, :],
                     tl.zeros([GP, HD], OUT.dtype.element_ty), mask=(g < G)[:, None])
        # a chunk past the row's prefix: nothing to do (the merge reads only a row's chunks)
        if (p >= 0) & (first | (lo < n)):
            # scores in base 2: exp2 is the hardware's exponential
            q = tl.load(Q + row * s_qb + heads[:, None] * s_qh + d[None, :],
                        mask=(g < G)[:, None], other=0.0).to(tl.float32)
            q = q * (scale * 1.4426950408889634)
            k_new = tl.load(K + row * s_kb + kvh * s_kh + d).to(tl.float32)
            v_new = tl.load(V + row * s_vb + kvh * s_vh + d).to(tl.float32)
            base = row * s_cb + kvh * s_ch
            if first:
                tl.store(KC + base + n * s_cl + d, k_new.to(KC.dtype.element_ty))
                tl.store(VC + base + n * s_cl + d, v_new.to(VC.dtype.element_ty))
            # the first chunk starts from the new position (in registers), the others empty
            m_i = tl.where(first, tl.sum(q * k_new[None, :], axis=1), float("-inf"))  # (GP,)
            l_i = tl.where(first, 1.0, 0.0) + tl.zeros([GP], tl.float32)
            acc = tl.zeros([GP, HD], tl.float32) + v_new[None, :] * first.to(tl.float32)
            qc = q.to(KC.dtype.element_ty)
            hi = tl.minimum(lo + CHUNK, n)
            for start in range(lo, hi, BLOCK_N):
                offs = start + tl.arange(0, BLOCK_N)
                inside = offs < hi
                at = base + offs[:, None] * s_cl + d[None, :]
                kb = tl.load(KC + at, mask=inside[:, None], other=0.0)  # (BN, HD)
                vb = tl.load(VC + at, mask=inside[:, None], other=0.0)
                if DOT:  # tensor cores: the query group padded to 16 rows
                    s = tl.dot(qc, tl.trans(kb), input_precision=PRECISION)  # (GP, BN)
                else:
                    s = tl.sum(q[:, None, :] * kb.to(tl.float32)[None, :, :], axis=2)
                s = tl.where(inside[None, :], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                alpha = tl.exp2(m_i - m_new)
                pr = tl.exp2(s - m_new[:, None])
                l_i = l_i * alpha + tl.sum(pr, axis=1)
                if DOT:
                    pv = tl.dot(pr.to(vb.dtype), vb, input_precision=PRECISION)
                else:
                    pv = tl.sum(pr[:, :, None] * vb.to(tl.float32)[None, :, :], axis=1)
                acc = acc * alpha[:, None] + pv
                m_i = m_new
            if CHUNKS == 1:
                tl.store(OUT + row * s_ob + heads[:, None] * s_oh + d[None, :],
                         (acc / l_i[:, None]).to(OUT.dtype.element_ty), mask=(g < G)[:, None])
            else:
                part = pid * CHUNKS + chunk
                tl.store(M_PART + part * GP + g, m_i)
                tl.store(L_PART + part * GP + g, l_i)
                tl.store(A_PART + (part * GP + g[:, None]) * HD + d[None, :], acc)

    @triton.jit
    def merge(POS, OUT, M_PART, L_PART, A_PART, s_ob, s_oh,
              HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, HD: tl.constexpr,
              CHUNK: tl.constexpr, CHUNKS: tl.constexpr):
        pid = tl.program_id(0)
        row = pid // HKV
        kvh = pid % HKV
        p = tl.load(POS + row).to(tl.int32)
        if p >= 0:
            g = tl.arange(0, GP)
            d = tl.arange(0, HD)
            # one chunk at a time, only those the row has; chunk 0 always holds the new
            # position, so m is finite from the start
            m = tl.load(M_PART + pid * CHUNKS * GP + g)
            lsum = tl.load(L_PART + pid * CHUNKS * GP + g)
            acc = tl.load(A_PART + (pid * CHUNKS * GP + g[:, None]) * HD + d[None, :])
            for c in range(1, tl.cdiv(p, CHUNK)):
                part = pid * CHUNKS + c
                m_c = tl.load(M_PART + part * GP + g)
                m_new = tl.maximum(m, m_c)
                a, b = tl.exp2(m - m_new), tl.exp2(m_c - m_new)
                lsum = lsum * a + tl.load(L_PART + part * GP + g) * b
                acc = acc * a[:, None] + tl.load(A_PART + (part * GP + g[:, None]) * HD
                                                 + d[None, :]) * b[:, None]
                m = m_new
            heads = kvh * G + g
            tl.store(OUT + row * s_ob + heads[:, None] * s_oh + d[None, :],
                     (acc / lsum[:, None]).to(OUT.dtype.element_ty), mask=(g < G)[:, None])

    return attend, merge


def default_chunk(batch_kv: int, length: int, device: torch.device, block_n: int = 64) -> int:
    """Positions of a prefix per program: enough programs for about eight per multiprocessor
    when every row's prefix is full (a single sequence: chunks of one block), at most 512
    positions, so that rows of unequal lengths still spread evenly. A multiple of ``block_n``."""
    if device.type != "cuda":  # one chunk
        return block_n * -(-length // block_n)
    want = 8 * torch.cuda.get_device_properties(device).multi_processor_count
    blocks = -(-batch_kv * length // (block_n * want))
    return block_n * min(512 // block_n, 1 << max(0, math.ceil(math.log2(max(blocks, 1)))))


def decode_attention_triton(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor,
                            positions: Tensor, chunk: int | None = None,
                            block_n: int | None = None, dot: bool = True,
                            precision: str | None = None, warps: int | None = None,
                            stages: int | None = None) -> Tensor:
    """:func:`decode_attention_reference` as one Triton kernel (two when prefixes are chunked).

    ``chunk`` (default :func:`default_chunk`; a multiple of the block) is how many cached
    positions one program reads; a row's chunks are merged after. ``dot`` computes the scores
    and the weighted values on tensor cores (the query group padded to 16 rows), fp32 caches at
    ``precision`` (Triton's ``input_precision``: ``"tf32x3"`` keeps about fp32 accuracy,
    ``"ieee"`` is exact fp32 without tensor cores, ``"tf32"`` the fastest and coarsest; by
    default ``"tf32"`` where ``torch.backends.cuda.matmul.allow_tf32`` lets PyTorch's own fp32
    matrix products use TF32, else ``"tf32x3"``). ``block_n``, ``warps`` and ``stages`` are
    the kernel's tiling, for tuning.
    """
    B, H, hd = q.shape
    n_kv, length = k_cache.size(1), k_cache.size(2)
    group = H // n_kv
    if hd & (hd - 1) or hd < 16 or any(x.stride(-1) != 1 for x in (q, k, v, k_cache, v_cache)):
        raise ValueError("decode attention needs a power-of-two head size of at least 16 and "
                         "a contiguous last dimension")
    gp = max(16 if dot else 2, 1 << math.ceil(math.log2(group)))
    # without tensor cores the (GP, BN, HD) products live in registers: keep them near 8k
    block_n = block_n or (64 if dot else max(16, min(64, 8192 // (gp * hd))))
    chunk = chunk or default_chunk(B * n_kv, length, q.device, block_n)
    block_n = min(block_n, chunk)
    if block_n < 16 or block_n & (block_n - 1) or chunk % block_n:
        raise ValueError(f"chunk={chunk} must be a multiple of a power-of-two block of at "
                         f"least 16 positions (block_n={block_n})")
    chunks = -(-length // chunk)
    if k_cache.dtype != torch.float32:  # the tf32 variants are for fp32 operands only
        precision = "ieee"
    elif precision is None:
        precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"
    attend, merge = _kernels()
    out = torch.empty(B, H, hd, dtype=q.dtype, device=q.device)
    parts = [torch.empty(B * n_kv * chunks * gp * w, dtype=torch.float32, device=q.device)
             for w in (1, 1, hd)] if chunks > 1 else [out, out, out]
    common = dict(HKV=n_kv, G=group, GP=gp, HD=hd, CHUNK=chunk, CHUNKS=chunks)
    warps = warps or (4 if dot or gp * hd * block_n <= 8192 else 8)
    tuning = {} if stages is None else {"num_stages": stages}
    attend[(B * n_kv, chunks)](
        q, k, v, k_cache, v_cache, positions, out, *parts,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        hd**-0.5, BLOCK_N=block_n, DOT=dot, PRECISION=precision, num_warps=warps, **common,
        **tuning)
    if chunks > 1:
        merge[(B * n_kv,)](positions, out, *parts, out.stride(0), out.stride(1), num_warps=4,
                           **common)
    return out
