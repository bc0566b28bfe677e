"""Decode attention with per-row cache lengths: a Triton kernel and its PyTorch reference.

One sampling step of a batch gives every row one query. Row r writes its new key and value at
cache position ``positions[r]`` and attends over positions ``0 .. positions[r]``; a negative
position skips the row (a finished sequence: no cache write, no reads). Each row therefore
reads exactly its own prefix, once, whatever the other rows' lengths, which is what the
bandwidth bound of sampling counts, and the shapes never change between steps (one CUDA graph
serves a whole generation).

The kernel is flash-decoding (Dao et al. 2023): one program per (row, key/value head, split of
the prefix), the query heads that share a key/value head processed together (grouped-query
attention reads each cached key once), an online softmax over blocks of positions, and, when
the batch is too small to fill the GPU, a second kernel that merges the splits. The new key and
value take part from registers, so no program reads a position another may still be writing.

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
    negative position leave the caches untouched and get an arbitrary finite output."""
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
    return (att @ v_cache.float()).reshape(B, H, hd).to(q.dtype)


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
               BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, DOT: tl.constexpr,
               PRECISION: tl.constexpr):
        pid = tl.program_id(0)  # row * HKV + key/value head
        split = tl.program_id(1)
        row = pid // HKV
        kvh = pid % HKV
        p = tl.load(POS + row).to(tl.int32)
        alive = p >= 0
        n = tl.maximum(p, 0)  # cached positions before this step's
        g = tl.arange(0, GP)
        d = tl.arange(0, HD)
        heads = kvh * G + g
        # scores in base 2: exp2 is the hardware's exponential
        q = tl.load(Q + row * s_qb + heads[:, None] * s_qh + d[None, :],
                    mask=(g < G)[:, None], other=0.0).to(tl.float32) * (scale * 1.4426950408889634)
        k_new = tl.load(K + row * s_kb + kvh * s_kh + d).to(tl.float32)
        v_new = tl.load(V + row * s_vb + kvh * s_vh + d).to(tl.float32)
        base = row * s_cb + kvh * s_ch
        first = split == 0
        if alive & first:
            tl.store(KC + base + n * s_cl + d, k_new.to(KC.dtype.element_ty))
            tl.store(VC + base + n * s_cl + d, v_new.to(VC.dtype.element_ty))
        # the first split starts from the new position (in registers), the others from nothing
        m_i = tl.where(first, tl.sum(q * k_new[None, :], axis=1), float("-inf"))  # (GP,)
        l_i = tl.where(first, 1.0, 0.0) + tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, HD], tl.float32) + v_new[None, :] * first.to(tl.float32)
        qc = q.to(KC.dtype.element_ty)
        blocks = tl.cdiv(n, BLOCK_N)
        per = tl.cdiv(blocks, SPLITS)
        lo = split * per * BLOCK_N
        hi = tl.minimum(lo + per * BLOCK_N, n)
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
        if SPLITS == 1:
            out = acc / l_i[:, None]
            tl.store(OUT + row * s_ob + heads[:, None] * s_oh + d[None, :],
                     out.to(OUT.dtype.element_ty), mask=(g < G)[:, None])
        else:
            part = pid * SPLITS + split
            tl.store(M_PART + part * GP + g, m_i)
            tl.store(L_PART + part * GP + g, l_i)
            tl.store(A_PART + (part * GP + g[:, None]) * HD + d[None, :], acc)

    @triton.jit
    def merge(OUT, M_PART, L_PART, A_PART, s_ob, s_oh,
              HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, HD: tl.constexpr,
              SPLITS: tl.constexpr):
        pid = tl.program_id(0)
        row = pid // HKV
        kvh = pid % HKV
        g = tl.arange(0, GP)
        d = tl.arange(0, HD)
        # one split at a time (all of them at once would not fit in registers); split 0
        # always holds the new position, so m is finite from the start
        m = tl.load(M_PART + pid * SPLITS * GP + g)
        lsum = tl.load(L_PART + pid * SPLITS * GP + g)
        acc = tl.load(A_PART + (pid * SPLITS * GP + g[:, None]) * HD + d[None, :])
        for sp in range(1, SPLITS):
            part = pid * SPLITS + sp
            m_s = tl.load(M_PART + part * GP + g)  # -inf: an empty split
            m_new = tl.maximum(m, m_s)
            a, b = tl.exp2(m - m_new), tl.exp2(m_s - m_new)
            lsum = lsum * a + tl.load(L_PART + part * GP + g) * b
            acc = acc * a[:, None] + tl.load(A_PART + (part * GP + g[:, None]) * HD
                                             + d[None, :]) * b[:, None]
            m = m_new
        heads = kvh * G + g
        tl.store(OUT + row * s_ob + heads[:, None] * s_oh + d[None, :],
                 (acc / lsum[:, None]).to(OUT.dtype.element_ty), mask=(g < G)[:, None])

    return attend, merge


def default_splits(batch_kv: int, device: torch.device) -> int:
    """Splits of each prefix so that about two programs per multiprocessor run (flash-decoding):
    1 once the batch alone fills the GPU, up to 64 for a single sequence. A power of two."""
    if device.type != "cuda":
        return 1
    want = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    if batch_kv >= want:
        return 1
    return min(64, 1 << math.ceil(math.log2(-(-want // batch_kv))))


def decode_attention_triton(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor,
                            positions: Tensor, splits: int | None = None,
                            block_n: int | None = None, dot: bool = True,
                            precision: str | None = None, warps: int | None = None,
                            stages: int | None = None) -> Tensor:
    """:func:`decode_attention_reference` as one Triton kernel (two when the prefix is split).

    ``splits`` (a power of two; default :func:`default_splits`) cuts every prefix into that
    many ranges handled by separate programs and merged after. ``dot`` computes the scores and
    the weighted values on tensor cores (the query group padded to 16 rows), fp32 caches at
    ``precision`` (Triton's ``input_precision``: ``"tf32x3"`` keeps about fp32 accuracy,
    ``"ieee"`` is exact fp32 without tensor cores, ``"tf32"`` the fastest and coarsest; by
    default ``"tf32"`` where ``torch.backends.cuda.matmul.allow_tf32`` lets PyTorch's own fp32
    matrix products use TF32, else ``"tf32x3"``);
    ``block_n``, ``warps`` and ``stages`` are the kernel's tiling, for tuning.
    """
    B, H, hd = q.shape
    n_kv = k_cache.size(1)
    group = H // n_kv
    if hd & (hd - 1) or hd < 16 or any(x.stride(-1) != 1 for x in (q, k, v, k_cache, v_cache)):
        raise ValueError("decode attention needs a power-of-two head size of at least 16 and "
                         "a contiguous last dimension")
    splits = default_splits(B * n_kv, q.device) if splits is None else splits
    if splits & (splits - 1):
        raise ValueError(f"splits must be a power of two, got {splits}")
    gp = max(16 if dot else 2, 1 << math.ceil(math.log2(group)))
    # without tensor cores the (GP, BN, HD) products live in registers: keep them near 8k
    block_n = block_n or (64 if dot else max(16, min(64, 8192 // (gp * hd))))
    attend, merge = _kernels()
    out = torch.empty(B, H, hd, dtype=q.dtype, device=q.device)
    parts = [torch.empty(B * n_kv * splits * gp * w, dtype=torch.float32, device=q.device)
             for w in (1, 1, hd)] if splits > 1 else [out, out, out]
    common = dict(HKV=n_kv, G=group, GP=gp, HD=hd)
    warps = warps or (4 if dot or gp * hd * block_n <= 8192 else 8)
    if k_cache.dtype != torch.float32:  # the tf32 variants are for fp32 operands only
        precision = "ieee"
    elif precision is None:
        precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"
    tuning = {} if stages is None else {"num_stages": stages}
    attend[(B * n_kv, splits)](
        q, k, v, k_cache, v_cache, positions, out, *parts,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        hd**-0.5, BLOCK_N=block_n, SPLITS=splits, DOT=dot, PRECISION=precision,
        num_warps=warps, **common, **tuning)
    if splits > 1:
        merge[(B * n_kv,)](out, *parts, out.stride(0), out.stride(1), SPLITS=splits,
                           num_warps=4, **common)
    return out
