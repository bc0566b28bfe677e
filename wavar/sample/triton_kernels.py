"""The Triton kernels of the sampler's fused decode step (this module needs Triton;
:mod:`wavar.sample.fused_step` launches them, :mod:`wavar.sample.draw` holds the draw's
launcher and its PyTorch original).

``step_head`` / ``step_mlp`` / ``step_next`` are a :class:`~wavar.model.transformer.WaveletGPT`
decode step around the model's decode attention (:mod:`wavar.model.triton_kernels`), fused per
block of rows. ``step_head`` embeds the previous token and the step inputs and projects layer
0's queries, keys and values; after each layer's attention, ``step_mlp`` applies the output
projection, the residual and a slice of the MLP, and ``step_next`` sums the slices into the
residual stream and projects the next layer's queries, keys and values (or, after the last
layer, the final norm and the head, and can draw the tokens). A small model's step is otherwise
~60 tiny kernels whose fixed costs, not its bytes, set its speed. What sets a fused kernel's
time is instead its longest chain of dependent products, so the grids are two-dimensional: the
MLP's hidden units are split over programs (their partial outputs summed in a fixed order, so
results do not depend on scheduling) and the query, key and value projections run side by
side. ``draw`` draws from logits made elsewhere (the prefill's).

Matrices are stored transposed, (in, out) row-major, and read in tiles of ~8k elements
(registers); activations stay fp32 in registers, a block of ``BM`` rows per program.
"""

from __future__ import annotations

import triton
import triton.language as tl


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
def step_head(TOK, SLOTS, XY, CTX, MT, T, LIVE, POS, X,
              E_TOK, E_SLOT, SLOT_ROW0, E_EXP, E_MT, FREQS, W_F, E_CTX, CTX_ROW0,
              G1, W_QA, W_QB, W_KA, W_KB, W_V, COS, SIN, Q, K, V, B, eps,
              mt_min, mt_max, e_min, n_exp,
              C: tl.constexpr, CP: tl.constexpr, F: tl.constexpr, FP: tl.constexpr,
              NSLOT: tl.constexpr, NCTX: tl.constexpr, H: tl.constexpr, HKV: tl.constexpr,
              HD: tl.constexpr,
              NT: tl.constexpr, BM: tl.constexpr, ROPE: tl.constexpr, PRECISION: tl.constexpr,
              USE_LIVE: tl.constexpr):
    """Embed rows' step inputs (WaveletGPT._steps) into X (B, C), then layer 0's queries,
    keys or values (grid axis 1: 0, 1, 2; each program embeds its rows itself).

    TOK (B,) previous tokens (negative read as 0), SLOTS (B, NSLOT) the slot's small-integer
    fields [plane, channel, level, orientation, kind], XY (B, 2) the slot's (y, x) centre, CTX
    (B, NCTX) the decoder-state features (summed from E_CTX, feature j's rows from
    CTX_ROW0[j] on; NCTX = 0: none), MT
    (B,) m~, T (B,) steps, read as -1 where LIVE (B,) is False if USE_LIVE; writes the cache
    positions t + 1 to POS (B,) for the kernels after it, -1 where t < 0 (a skipped row,
    computed all the same; its results are never used)."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    which = tl.program_id(1)
    rmask = rows < B
    cols = tl.arange(0, CP)
    mt = tl.minimum(tl.maximum(tl.load(MT + rows, mask=rmask, other=0), mt_min), mt_max)
    plane = tl.load(SLOTS + rows * NSLOT, mask=rmask, other=0)
    x = _rows_of(E_TOK, tl.maximum(tl.load(TOK + rows, mask=rmask, other=0), 0), rmask, cols, C)
    # every small-integer field is an embedding: one table holds them all, field j's rows
    # from SLOT_ROW0[j] on, summed in field order (the model's order: the same sums)
    for j in tl.static_range(NSLOT):
        idx = tl.load(SLOTS + rows * NSLOT + j, mask=rmask, other=0)
        x += _rows_of(E_SLOT, tl.load(SLOT_ROW0 + j) + idx, rmask, cols, C)
    for j in tl.static_range(NCTX):  # the decoder-state features, the same way
        idx = tl.load(CTX + rows * NCTX + j, mask=rmask, other=0)
        x += _rows_of(E_CTX, tl.load(CTX_ROW0 + j) + idx, rmask, cols, C)
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
    """Plain sampling of one token per row from its logits (BM, VP) over tokens v: the compiled
    twin of :func:`wavar.sample.draw.draw` at plain settings (keep the two in step): argmax
    over legal tokens (bitmask LEGAL (B,)) of softmax(logits / T) / NOISE (NOISE (B, V) ~
    Exp(1), drawn by PyTorch, as ``filters.sample`` draws it), then
    :meth:`~wavar.sample.draw.ForcedPrefix.apply`: FORCED[row, t] while t < FORCED_LEN[row];
    -1 where LIVE (B,) is False. t is the row's step T[row]: the token goes to TOK (B,) and
    OUT[row, t] (int8), and T[row] to t + 1."""
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
