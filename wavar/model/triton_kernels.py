"""The Triton kernels of a decode step (this module needs Triton; :mod:`wavar.model.kernels`
launches them and holds their PyTorch references).

* ``attend`` / ``merge``: flash-decoding over each row's own prefix of the KV cache.
* ``step_head`` / ``step_mlp`` / ``step_next``: the rest of a
  :class:`~wavar.model.transformer.WaveletGPT` step, fused per block of rows. ``step_head``
  embeds the previous token and the slot and projects layer 0's queries, keys and values;
  after each layer's attention, ``step_mlp`` applies the output projection, the residual and a
  slice of the MLP, and ``step_next`` sums the slices into the residual stream and projects the
  next layer's queries, keys and values (or, after the last layer, the final norm and the head).
  A small model's step is otherwise ~60 tiny kernels whose fixed costs, not its bytes, set its
  speed. What sets a fused kernel's time is instead its longest chain of dependent products,
  so the grids are two-dimensional: the MLP's hidden units are split over programs (their
  partial outputs summed in a fixed order, so results do not depend on scheduling) and the
  query, key and value projections run side by side.

Matrices are stored transposed, (in, out) row-major, and read in tiles of ~8k elements
(registers); activations stay fp32 in registers, a block of ``BM`` rows per program.
"""

from __future__ import annotations

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


# ----------------------------------------------------------------------------- the fused step

@triton.jit
def _matmul(a, WT, ld, k_lim, n_lim, KP: tl.constexpr, NP: tl.constexpr,
            PRECISION: tl.constexpr):
    """a (BM, KP), zero past column k_lim, times the (k_lim, n_lim) block of a row-major matrix
    at WT with row stride ld  ->  (BM, NP), zero past column n_lim. An fp16 matrix multiplies
    a rounded to fp16 (accumulating in fp32), an fp32 one at PRECISION."""
    k = tl.arange(0, KP)
    n = tl.arange(0, NP)
    w = tl.load(WT + k[:, None] * ld + n[None, :],
                mask=(k[:, None] < k_lim) & (n[None, :] < n_lim), other=0.0)
    if w.dtype == tl.float16:  # fp16 weights: fp16 products, fp32 sums
        out = tl.dot(a.to(tl.float16), w)
    else:
        out = tl.dot(a, w, input_precision=PRECISION)
    return out


@triton.jit
def _rmsnorm(x, W, cols, C: tl.constexpr, eps):
    # x (BM, CP), zero past column C: torch.nn.RMSNorm in fp32
    w = tl.load(W + cols, mask=cols < C, other=0.0)
    return x * tl.rsqrt(tl.sum(x * x, axis=1) / C + eps)[:, None] * w[None, :]


@triton.jit
def _gelu(x):  # exact (erf) GELU, as F.gelu
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def _rows_of(TABLE, idx, rmask, cols, C: tl.constexpr):
    # rows idx (BM,) of an embedding table (n, C)  ->  (BM, CP)
    return tl.load(TABLE + idx[:, None] * C + cols[None, :],
                   mask=rmask[:, None] & (cols < C)[None, :], other=0.0)


@triton.jit
def _rotated_heads(xn, WA, WB, OUT, rows, rmask, position, COS, SIN, N_HEADS: tl.constexpr,
                   HD: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, NT: tl.constexpr,
                   ROPE: tl.constexpr, PRECISION: tl.constexpr):
    """Project xn onto heads (B, N_HEADS, HD) at OUT, rotated by position (RoPE, half-split).

    WA, WB (C, N_HEADS * HD / 2) hold the projections onto each head's first and second half,
    so the pairs a rotation mixes come out of two products side by side."""
    half: tl.constexpr = HD // 2
    n: tl.constexpr = N_HEADS * half
    for n0 in range(0, n, NT):
        j = n0 + tl.arange(0, NT)
        a = _matmul(xn, WA + n0, n, C, n - n0, CP, NT, PRECISION)
        b = _matmul(xn, WB + n0, n, C, n - n0, CP, NT, PRECISION)
        i = j % half
        mask = rmask[:, None] & (j < n)[None, :]
        if ROPE:
            at = position[:, None] * half + i[None, :]
            cos = tl.load(COS + at, mask=mask, other=1.0)
            sin = tl.load(SIN + at, mask=mask, other=0.0)
            a, b = a * cos - b * sin, a * sin + b * cos
        dst = OUT + rows[:, None] * (N_HEADS * HD) + ((j // half) * HD + i)[None, :]
        tl.store(dst, a, mask=mask)
        tl.store(dst + half, b, mask=mask)


@triton.jit
def _project(xn, which, rows, rmask, position, W_QA, W_QB, W_KA, W_KB, W_V, COS, SIN, Q, K, V,
             C: tl.constexpr, CP: tl.constexpr, H: tl.constexpr, HKV: tl.constexpr,
             HD: tl.constexpr, NT: tl.constexpr, ROPE: tl.constexpr, PRECISION: tl.constexpr):
    """Queries (B, H, HD) for which = 0, keys (B, HKV, HD) for 1, values for 2, of the normed
    rows xn."""
    if which == 0:
        _rotated_heads(xn, W_QA, W_QB, Q, rows, rmask, position, COS, SIN, H, HD, C, CP, NT,
                       ROPE, PRECISION)
    elif which == 1:
        _rotated_heads(xn, W_KA, W_KB, K, rows, rmask, position, COS, SIN, HKV, HD, C, CP, NT,
                       ROPE, PRECISION)
    else:
        nv: tl.constexpr = HKV * HD
        for n0 in range(0, nv, NT):
            j = n0 + tl.arange(0, NT)
            v = _matmul(xn, W_V + n0, nv, C, nv - n0, CP, NT, PRECISION)
            tl.store(V + rows[:, None] * nv + j[None, :], v,
                     mask=rmask[:, None] & (j < nv)[None, :])


@triton.jit
def step_head(TOK, SLOTS, XY, MT, T, LIVE, POS, X,
              E_TOK, E_PLANE, E_CHANNEL, E_LEVEL, E_ORIENT, E_KIND, E_EXP, E_MT, FREQS, W_F,
              G1, W_QA, W_QB, W_KA, W_KB, W_V, COS, SIN, Q, K, V, B, eps,
              mt_min, mt_max, e_min, n_exp,
              C: tl.constexpr, CP: tl.constexpr, F: tl.constexpr, FP: tl.constexpr,
              H: tl.constexpr, HKV: tl.constexpr, HD: tl.constexpr, NT: tl.constexpr,
              BM: tl.constexpr, ROPE: tl.constexpr, PRECISION: tl.constexpr,
              USE_LIVE: tl.constexpr):
    """Embed rows' step inputs (WaveletGPT._steps) into X (B, C), then layer 0's queries,
    keys or values (grid axis 1: 0, 1, 2; each program embeds its rows itself).

    TOK (B,) previous tokens (negative read as 0), SLOTS (B, 5) [plane, channel, level,
    orientation, kind], XY (B, 2) the slot's (y, x) centre, MT (B,) m~, T (B,) steps, read as
    -1 where LIVE (B,) is False if USE_LIVE; writes the cache positions t + 1 to POS (B,) for
    the kernels after it, -1 where t < 0 (a skipped row, computed all the same; its results
    are never used)."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    which = tl.program_id(1)
    rmask = rows < B
    cols = tl.arange(0, CP)
    mt = tl.minimum(tl.maximum(tl.load(MT + rows, mask=rmask, other=0), mt_min), mt_max)
    plane = tl.load(SLOTS + rows * 5, mask=rmask, other=0)
    x = _rows_of(E_TOK, tl.maximum(tl.load(TOK + rows, mask=rmask, other=0), 0), rmask, cols, C)
    x += _rows_of(E_PLANE, plane, rmask, cols, C)
    x += _rows_of(E_CHANNEL, tl.load(SLOTS + rows * 5 + 1, mask=rmask, other=0), rmask, cols, C)
    x += _rows_of(E_LEVEL, tl.load(SLOTS + rows * 5 + 2, mask=rmask, other=0), rmask, cols, C)
    x += _rows_of(E_ORIENT, tl.load(SLOTS + rows * 5 + 3, mask=rmask, other=0), rmask, cols, C)
    x += _rows_of(E_KIND, tl.load(SLOTS + rows * 5 + 4, mask=rmask, other=0), rmask, cols, C)
    e = tl.minimum(tl.maximum(mt - 1 - plane - e_min, 0), n_exp - 1)
    x += _rows_of(E_EXP, e, rmask, cols, C)
    x += _rows_of(E_MT, mt - mt_min, rmask, cols, C)
    # learned Fourier features of the slot's centre: [sin, cos](2 pi xy @ freqs) @ W_F
    f = tl.arange(0, FP)
    fmask = f < F
    y0 = tl.load(XY + rows * 2, mask=rmask, other=0.0)
    x0 = tl.load(XY + rows * 2 + 1, mask=rmask, other=0.0)
    angle = 6.283185307179586 * (
        y0[:, None] * tl.load(FREQS + f, mask=fmask, other=0.0)[None, :]
        + x0[:, None] * tl.load(FREQS + F + f, mask=fmask, other=0.0)[None, :])
    x += _matmul(tl.sin(angle), W_F, C, F, C, FP, CP, PRECISION)
    x += _matmul(tl.cos(angle), W_F + F * C, C, F, C, FP, CP, PRECISION)
    t = tl.load(T + rows, mask=rmask, other=-1)
    if USE_LIVE:
        t = tl.where(tl.load(LIVE + rows, mask=rmask, other=0) != 0, t, -1)
    if which == 0:
        tl.store(X + rows[:, None] * C + cols[None, :], x,
                 mask=rmask[:, None] & (cols < C)[None, :])
        tl.store(POS + rows, tl.where(t >= 0, t + 1, -1), mask=rmask)
    _project(_rmsnorm(x, G1, cols, C, eps), which, rows, rmask, tl.maximum(t + 1, 0), W_QA,
             W_QB, W_KA, W_KB, W_V, COS, SIN, Q, K, V, C, CP, H, HKV, HD, NT, ROPE, PRECISION)


@triton.jit
def step_mlp(X, ATT, W_O, G2, W_FC, W_PR, X_MID, Y_PART, B, eps,
             C: tl.constexpr, CP: tl.constexpr, HID: tl.constexpr, HS: tl.constexpr,
             HT: tl.constexpr, KT: tl.constexpr, BM: tl.constexpr, PRECISION: tl.constexpr):
    """x = X + ATT @ W_O (the attention's residual; into X_MID (B, C)), then the MLP on
    norm2(x) restricted to hidden units s HS .. (s + 1) HS (s: grid axis 1), whose output
    goes to Y_PART[s] (S, B, C). (Skipped rows' attention is zero: ``attend`` writes it.)"""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    s = tl.program_id(1)
    rmask = rows < B
    cols = tl.arange(0, CP)
    xmask = rmask[:, None] & (cols < C)[None, :]
    x = tl.load(X + rows[:, None] * C + cols[None, :], mask=xmask, other=0.0)
    for c0 in range(0, C, KT):
        k = c0 + tl.arange(0, KT)
        o = tl.load(ATT + rows[:, None] * C + k[None, :],
                    mask=rmask[:, None] & (k < C)[None, :], other=0.0)
        x += _matmul(o, W_O + c0 * C, C, C - c0, C, KT, CP, PRECISION)
    if s == 0:
        tl.store(X_MID + rows[:, None] * C + cols[None, :], x, mask=xmask)
    xn = _rmsnorm(x, G2, cols, C, eps)
    y = tl.zeros([BM, CP], tl.float32)
    end = tl.minimum(s * HS + HS, HID)
    for j0 in range(s * HS, end, HT):
        hidden = _gelu(_matmul(xn, W_FC + j0, HID, C, end - j0, CP, HT, PRECISION))
        y += _matmul(hidden, W_PR + j0 * C, C, end - j0, C, HT, CP, PRECISION)
    tl.store(Y_PART + s * B * C + rows[:, None] * C + cols[None, :], y, mask=xmask)


@triton.jit
def step_next(X, POS, X_MID, Y_PART, G1, W_QA, W_QB, W_KA, W_KB, W_V, COS, SIN, Q, K, V,
              GF, W_HEAD, LOGITS, B, eps,
              LEGAL, NOISE, LIVE, FORCED, FORCED_LEN, T, TOK, OUT, inv_temperature, s_forced,
              s_out,
              C: tl.constexpr, CP: tl.constexpr, S: tl.constexpr, H: tl.constexpr,
              HKV: tl.constexpr, HD: tl.constexpr, VOCAB: tl.constexpr, NT: tl.constexpr,
              BM: tl.constexpr, LAST: tl.constexpr, ROPE: tl.constexpr,
              PRECISION: tl.constexpr, DRAW: tl.constexpr, FORCE: tl.constexpr):
    """x = X_MID + the MLP's S partial outputs, summed in order (the residual stream after the
    layer, into X); then the next layer's queries, keys or values (grid axis 1: 0, 1, 2) or,
    after the last layer, the logits head(norm(x)) into LOGITS (B, VOCAB), or with DRAW
    (VOCAB <= NT) each row's token drawn from them (:func:`_draw_rows`; LEGAL .. s_out as
    ``draw``'s)."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    which = tl.program_id(1)
    rmask = rows < B
    cols = tl.arange(0, CP)
    xmask = rmask[:, None] & (cols < C)[None, :]
    at = rows[:, None] * C + cols[None, :]
    x = tl.load(X_MID + at, mask=xmask, other=0.0)
    for s in range(S):
        x += tl.load(Y_PART + s * B * C + at, mask=xmask, other=0.0)
    if LAST:
        xf = _rmsnorm(x, GF, cols, C, eps)
        for n0 in range(0, VOCAB, NT):
            j = n0 + tl.arange(0, NT)
            logits = _matmul(xf, W_HEAD + n0, VOCAB, C, VOCAB - n0, CP, NT, PRECISION)
            if DRAW:  # one tile holds a row's logits
                _draw_rows(logits, rows, rmask, j, LEGAL, NOISE, LIVE, FORCED, FORCED_LEN, T,
                           TOK, OUT, inv_temperature, s_forced, s_out, VOCAB, FORCE)
            else:
                tl.store(LOGITS + rows[:, None] * VOCAB + j[None, :], logits,
                         mask=rmask[:, None] & (j < VOCAB)[None, :])
    else:
        if which == 0:
            tl.store(X + at, x, mask=xmask)
        position = tl.maximum(tl.load(POS + rows, mask=rmask, other=0), 0)
        _project(_rmsnorm(x, G1, cols, C, eps), which, rows, rmask, position, W_QA, W_QB, W_KA,
                 W_KB, W_V, COS, SIN, Q, K, V, C, CP, H, HKV, HD, NT, ROPE, PRECISION)


@triton.jit
def _draw_rows(logits, rows, rmask, v, LEGAL, NOISE, LIVE, FORCED, FORCED_LEN, T, TOK, OUT,
               inv_temperature, s_forced, s_out, V: tl.constexpr, FORCE: tl.constexpr):
    """Plain sampling of one token per row from its logits (BM, VP) over tokens v, as
    ``filters.sample`` after the grammar mask and the temperature: argmax over legal tokens
    (bitmask LEGAL (B,)) of softmax(logits / T) / NOISE (NOISE (B, V) ~ Exp(1), drawn by
    PyTorch), or FORCED[row, t] while t < FORCED_LEN[row]; -1 where LIVE (B,) is False. t is
    the row's step T[row]: the token goes to TOK (B,) and OUT[row, t] (int8), and T[row] to
    t + 1."""
    inside = rmask[:, None] & (v < V)[None, :]
    legal = tl.load(LEGAL + rows, mask=rmask, other=1)
    # bits past 63 read as the sign bit: -1 keeps every token of any vocabulary
    ok = inside & (((legal[:, None] >> tl.minimum(v, 63)[None, :]) & 1) != 0)
    z = tl.where(ok, logits * inv_temperature, float("-inf"))
    e = tl.exp(z - tl.max(z, axis=1)[:, None])
    prob = e / tl.sum(e, axis=1)[:, None]
    noise = tl.load(NOISE + rows[:, None] * V + v[None, :], mask=inside, other=1.0)
    tok = tl.argmax(tl.where(ok, prob / noise, -1.0), axis=1).to(tl.int64)
    t = tl.load(T + rows, mask=rmask, other=0)
    if FORCE:
        n = tl.load(FORCED_LEN + rows, mask=rmask, other=0)
        col = tl.minimum(t, s_forced - 1)
        tok = tl.where(t < n, tl.load(FORCED + rows * s_forced + col, mask=rmask, other=0), tok)
    tok = tl.where(tl.load(LIVE + rows, mask=rmask, other=0) != 0, tok, -1)
    tl.store(TOK + rows, tok, mask=rmask)
    tl.store(OUT + rows * s_out + t, tok.to(tl.int8), mask=rmask)
    tl.store(T + rows, t + 1, mask=rmask)


@triton.jit
def draw(LOGITS, LEGAL, NOISE, LIVE, FORCED, FORCED_LEN, T, TOK, OUT, inv_temperature,
         s_forced, s_out, B, V: tl.constexpr, VP: tl.constexpr, FORCE: tl.constexpr,
         BLOCK: tl.constexpr):
    """:func:`_draw_rows` for logits LOGITS (B, V) made elsewhere."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < B
    v = tl.arange(0, VP)
    logits = tl.load(LOGITS + rows[:, None] * V + v[None, :],
                     mask=rmask[:, None] & (v < V)[None, :], other=0.0)
    _draw_rows(logits, rows, rmask, v, LEGAL, NOISE, LIVE, FORCED, FORCED_LEN, T, TOK, OUT,
               inv_temperature, s_forced, s_out, V, FORCE)
