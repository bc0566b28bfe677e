"""The Triton kernels of decode attention (this module needs Triton; :mod:`wavar.model.kernels`
launches them and holds their PyTorch reference).

``attend`` / ``merge``: flash-decoding over each row's own prefix of the KV cache. (The
sampler's fused step, :mod:`wavar.sample.triton_kernels`, runs the rest of a decode step
around them.)
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def attend(Q, K, V, KC, VC, POS, OUT, M_PART, L_PART, A_PART,
           s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_cb, s_ch, s_cl, s_ob, s_oh, scale, WINDOW,
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
        # a window (WINDOW > 0) sees positions p - WINDOW + 1 .. p and the prefix at 0: the
        # first chunk takes the prefix from registers too, and the loops start at the window
        seen_from = tl.where(WINDOW > 0, tl.maximum(n - WINDOW + 1, 1), 0)
        if first & (seen_from > 0) & (n > 0):
            k_0 = tl.load(KC + base + d).to(tl.float32)
            v_0 = tl.load(VC + base + d).to(tl.float32)
            s_0 = tl.sum(q * k_0[None, :], axis=1)
            m_0 = tl.maximum(m_i, s_0)
            a_0, b_0 = tl.exp2(m_i - m_0), tl.exp2(s_0 - m_0)
            l_i = l_i * a_0 + b_0
            acc = acc * a_0[:, None] + b_0[:, None] * v_0[None, :]
            m_i = m_0
        qc = q.to(KC.dtype.element_ty)
        hi = tl.minimum(lo + CHUNK, n)
        for start in range(tl.maximum(lo, seen_from), hi, BLOCK_N):
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
