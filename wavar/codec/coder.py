"""Compiled encode / decode / slot-replay loops over the grammar state machine.

Each loop drives :mod:`wavar.codec.grammar` (the only place that knows the grammar): the encoder
asks the data which legal symbol describes it, the decoder replays symbols and bisects the
uncertainty interval of each coefficient, the slot replay records the slot and legal mask before
every symbol. The ``*_many`` variants run images in parallel threads.
"""

from __future__ import annotations

import sys

import numba
import numpy as np
from numba import njit, prange

from wavar.codec import grammar as g


def _launch_threads_keeping_torch() -> None:
    """Start numba's thread pool now, keeping torch's CPU thread count. Numba's OpenMP layer
    sets the process's OpenMP thread count to its own when its pool starts (the first parallel
    call), and torch reads that count: a ``torch.set_num_threads(1)`` made before it was
    silently undone (compress_batched.py's one-thread workers ran two each). Started at
    import, the pool starts before any later ``set_num_threads``; one made earlier is put
    back."""
    torch = sys.modules.get("torch")  # the codec itself needs no torch
    before = torch.get_num_threads() if torch is not None else None
    numba.get_num_threads()  # starts the pool
    if torch is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


_launch_threads_keeping_torch()


@njit(cache=True, nogil=True)
def _state(lang, immediate, channels, n_coef, n_planes):
    mem = np.empty(g.state_size(channels, n_coef), np.int32)
    g.init_state(mem, lang, immediate, channels, n_coef, n_planes)
    return mem


@njit(cache=True, nogil=True)
def _thresholds(m_tilde, n_planes):
    """Threshold of each bit-plane: 2**(m~ - 1 - k)."""
    out = np.empty(max(n_planes, 1))
    for k in range(n_planes):
        out[k] = 2.0 ** (m_tilde - 1 - k)
    return out


@njit(cache=True, nogil=True)
def _descendant_max(mag, channels, n_coef, parent, bottom_up):
    """Max magnitude over each coefficient's descendants (zero-tree test of the encoder)."""
    out = np.zeros(channels * n_coef)
    for ch in range(channels):
        base = ch * n_coef
        for i in bottom_up:
            p = parent[i]
            if p >= 0:
                v = max(mag[base + i], out[base + i])
                if v > out[base + p]:
                    out[base + p] = v
    return out


@njit(cache=True, nogil=True)
def _data_symbol(mem, mag, neg, desc_max, thresholds, scan_index, n_desc, is_ll):
    """The symbol that describes the data at the cursor (always legal for canonical data)."""
    t = thresholds[mem[g.H_PLANE]]
    kind = mem[g.H_KIND]
    b, ch, q, c = mem[g.H_BLOCK], mem[g.H_CH], mem[g.H_QUAD], mem[g.H_COEF]
    base = ch * mem[g.H_N]
    if kind == g.REFINE:
        w = t * 0.5 if mem[g.H_IMMEDIATE] else t
        return g.S_ACC0 + (int(mag[base + scan_index[b * 16 + q * 4 + c]] / w) & 1)
    if mem[g.H_LANG] == g.ZEROBLOCK:
        if kind == g.BLOCK:
            hit = False
            for j in range(16):
                if mag[base + scan_index[b * 16 + j]] >= t:
                    hit = True
                    break
            if not hit:
                return g.S_G4
            kind = g.QUAD
        if kind == g.QUAD:
            hit = False
            for j in range(4):
                if mag[base + scan_index[b * 16 + q * 4 + j]] >= t:
                    hit = True
                    break
            if not hit:
                return g.S_G2
        idx = base + scan_index[b * 16 + q * 4 + c]
        if mag[idx] >= t:
            return g.S_NEG if neg[idx] else g.S_POS
        return g.S_INS
    d = scan_index[b * 16 + q * 4 + c]
    idx = base + d
    if mag[idx] >= t:
        return g.S_NEG if neg[idx] else g.S_POS
    if is_ll[d] or n_desc[d] == 0 or desc_max[idx] >= t:
        return g.S_INS
    return g.S_ZTR


@njit(cache=True, nogil=True)
def encode_one(mag, neg, m_tilde, n_planes, lang, immediate, channels, n_coef,
               scan_index, parent, children, n_desc, is_ll, bottom_up, out):
    """Encode one coefficient array (flat ``channel * n_coef + i``) into ``out``.

    Returns the number of symbols, or ``-1 - t`` if the grammar refused the encoder's symbol t
    (an internal error: canonical data is always legal).
    """
    mem = _state(lang, immediate, channels, n_coef, n_planes)
    if lang == g.ZEROTREE:
        desc_max = _descendant_max(mag, channels, n_coef, parent, bottom_up)
    else:
        desc_max = mag[:1]
    thresholds = _thresholds(m_tilde, n_planes)
    n = 0
    while mem[g.H_KIND] != g.DONE:
        sym = _data_symbol(mem, mag, neg, desc_max, thresholds, scan_index, n_desc, is_ll)
        # canonical data symbols are legal by construction (tests replay every encoding
        # through the checked path), so the encoder skips the check
        g.push(mem, sym, scan_index, parent, children, n_desc, is_ll, False)
        out[n] = sym
        n += 1
    return n


@njit(cache=True, parallel=True)
def encode_many(mags, negs, m_tildes, n_planes, lang, immediate, channels, n_coef,
                scan_index, parent, children, n_desc, is_ll, bottom_up, out, lengths):
    for i in prange(mags.shape[0]):
        lengths[i] = encode_one(mags[i], negs[i], m_tildes[i], n_planes[i], lang, immediate,
                                channels, n_coef, scan_index, parent, children, n_desc, is_ll,
                                bottom_up, out[i])


@njit(cache=True, nogil=True)
def decode_one(syms, m_tilde, n_planes, lang, immediate, channels, n_coef,
               scan_index, parent, children, n_desc, is_ll, lo, width, neg):
    """Replay symbols, bisecting each coefficient's interval [lo, lo + width).

    Returns -1 on success, else the position of the first symbol the grammar refused
    (or that came after the end of the sequence).
    """
    mem = _state(lang, immediate, channels, n_coef, n_planes)
    thresholds = _thresholds(m_tilde, n_planes)
    for t in range(syms.shape[0]):
        k = mem[g.H_PLANE]
        s = syms[t]
        r = g.push(mem, s, scan_index, parent, children, n_desc, is_ll)
        if r < g.NO_COEF:
            return t
        if r >= 0:
            if s == g.S_POS or s == g.S_NEG:
                thr = thresholds[k]
                lo[r] = thr
                width[r] = thr
                neg[r] = s == g.S_NEG
            else:
                width[r] *= 0.5
                if s == g.S_ACC1:
                    lo[r] += width[r]
    return -1


@njit(cache=True, parallel=True)
def decode_many(syms, offsets, m_tildes, n_planes, lang, immediate, channels, n_coef,
                scan_index, parent, children, n_desc, is_ll, lo, width, neg, errors):
    for i in prange(offsets.shape[0] - 1):
        errors[i] = decode_one(syms[offsets[i]:offsets[i + 1]], m_tildes[i], n_planes[i], lang,
                               immediate, channels, n_coef, scan_index, parent, children, n_desc,
                               is_ll, lo[i], width[i], neg[i])


@njit(cache=True, nogil=True)
def replay_slots(syms, n_planes, lang, immediate, channels, n_coef, scan_index, parent,
                 children, n_desc, is_ll, block_slot, quad_slot, coef_slot,
                 out_int, out_pos, out_legal, context_tables, out_context):
    """Record (slot, legal symbol mask, decoder-state context) before each symbol, then push it.

    Row ``len(syms)`` of the outputs (they have one extra row) holds the slot after the last
    symbol (kind DONE when the sequence is complete). ``out_context`` (rows, N_CONTEXT) gets
    :func:`grammar.context_of` at each position, given ``context_tables`` = (neighbours,
    siblings, block_ring, quad_ring) of the geometry; with 0 rows it is skipped. Returns -1, or
    the refused position.
    """
    mem = _state(lang, immediate, channels, n_coef, n_planes)
    neighbours, siblings, block_ring, quad_ring = context_tables
    with_context = out_context.shape[0] > 0
    for t in range(syms.shape[0] + 1):
        if with_context:
            g.context_of(mem, scan_index, parent, neighbours, siblings, block_ring, quad_ring,
                         out_context[t])
        if mem[g.H_KIND] == g.DONE:
            out_int[t, :] = 0
            out_int[t, 0] = mem[g.H_PLANE]  # = n_planes: after the last plane
            out_int[t, 4] = g.DONE
            out_pos[t, :] = 0.0
            out_legal[t] = 0
        else:
            g.slot_of(mem, scan_index, block_slot, quad_slot, coef_slot, out_int[t], out_pos[t])
            out_legal[t] = g.legal_symbols(mem, scan_index, parent, n_desc, is_ll)
        if t == syms.shape[0]:
            break
        if g.push(mem, syms[t], scan_index, parent, children, n_desc, is_ll) < g.NO_COEF:
            return t
    return -1


@njit(cache=True, nogil=True)
def random_legal(rng_u, n_planes, lang, immediate, channels, n_coef, scan_index, parent,
                 children, n_desc, is_ll, out):
    """Draw a complete legal sequence, each symbol uniform over the legal mask.

    ``rng_u`` supplies uniform numbers in [0, 1) (one per symbol). Returns the length.
    """
    mem = _state(lang, immediate, channels, n_coef, n_planes)
    n = 0
    while mem[g.H_KIND] != g.DONE:
        m = g.legal_symbols(mem, scan_index, parent, n_desc, is_ll)
        count = 0
        for s in range(8):
            count += (m >> s) & 1
        pick = int(rng_u[n] * count)
        sym = 0
        for s in range(8):
            if (m >> s) & 1:
                if pick == 0:
                    sym = s
                    break
                pick -= 1
        g.push(mem, sym, scan_index, parent, children, n_desc, is_ll)
        out[n] = sym
        n += 1
    return n


@njit(cache=True, nogil=True)
def kept_subtrees(kept, channels, n_coef, parent, bottom_up):
    """kept[i] and all of i's zero-tree descendants kept (per channel)."""
    out = kept.copy()
    for ch in range(channels):
        base = ch * n_coef
        for i in bottom_up:
            p = parent[i]
            if p >= 0 and not out[base + i]:
                out[base + p] = False
    return out


@njit(cache=True, nogil=True, inline="always")
def _coef_options(mag, neg, kept, idx, t):
    """Coefficient-level symbols consistent with the kept data at coefficient ``idx``."""
    if not kept[idx]:
        return (1 << g.S_INS) | (1 << g.S_POS) | (1 << g.S_NEG)
    if mag[idx] >= t:
        return 1 << (g.S_NEG if neg[idx] else g.S_POS)
    return 1 << g.S_INS


@njit(cache=True, nogil=True, inline="always")
def _group_options(mag, neg, kept, base, scan_index, first, count, t):
    """(may the group be empty, may it break) given its kept coefficients."""
    sig_kept = False
    all_kept = True
    for j in range(count):
        idx = base + scan_index[first + j]
        if kept[idx]:
            if mag[idx] >= t:
                sig_kept = True
        else:
            all_kept = False
    return (not sig_kept), not (all_kept and not sig_kept)


@njit(cache=True, nogil=True)
def allowed_symbols(mems, mags, negs, desc_max, kept, kept_tree, m_tildes, scan_index, n_desc,
                    is_ll, out):
    """For conditioning on kept coefficients: per row, the symbols consistent with them.

    A symbol speaks of some coefficients (a block's 16, a quad's 4, or one, and for a zero-tree
    decision its descendants); it is allowed unless it contradicts a kept coefficient. When
    every coefficient a node speaks of is kept, exactly the image's own symbol remains. Rows
    share ``kept`` (C * n_coef,) but have their own image (mags[i]). 0xFF = no constraint.
    """
    for i in range(mems.shape[0]):
        mem = mems[i]
        kind = mem[g.H_KIND]
        out[i] = 0xFF
        if kind == g.DONE:
            continue
        mag, neg = mags[i], negs[i]
        n = mem[g.H_N]
        b, ch, q, c = mem[g.H_BLOCK], mem[g.H_CH], mem[g.H_QUAD], mem[g.H_COEF]
        base = ch * n
        t = 2.0 ** (m_tildes[i] - 1 - mem[g.H_PLANE])
        p = b * 16 + q * 4 + c
        idx = base + scan_index[p]
        if kind == g.REFINE:
            if kept[idx]:
                w = t * 0.5 if mem[g.H_IMMEDIATE] else t
                out[i] = 1 << (g.S_ACC0 + (int(mag[idx] / w) & 1))
            continue
        if mem[g.H_LANG] == g.ZEROBLOCK:
            m = 0
            if kind == g.BLOCK:
                empty, breaks = _group_options(mag, neg, kept, base, scan_index, b * 16, 16, t)
                if empty:
                    m |= 1 << g.S_G4
                if not breaks:
                    out[i] = m
                    continue
            if kind == g.BLOCK or kind == g.QUAD:
                empty, breaks = _group_options(mag, neg, kept, base, scan_index,
                                               b * 16 + q * 4, 4, t)
                if empty:
                    m |= 1 << g.S_G2
                if breaks:
                    m |= _coef_options(mag, neg, kept, base + scan_index[b * 16 + q * 4], t)
                out[i] = m
                continue
            out[i] = _coef_options(mag, neg, kept, idx, t)
            continue
        d = scan_index[p]
        if is_ll[d] or n_desc[d] == 0 or (kept[idx] and mag[idx] >= t):
            out[i] = _coef_options(mag, neg, kept, idx, t)
        elif kept_tree[idx]:
            out[i] = 1 << (g.S_INS if desc_max[idx] >= t else g.S_ZTR)
        elif kept[idx]:
            out[i] = (1 << g.S_INS) | (1 << g.S_ZTR)
