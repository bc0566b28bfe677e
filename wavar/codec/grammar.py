"""THE scan/grammar state machine of the wavelet languages (docs/design.md §1, "Grammar").

This module is the single home of the grammar: the encoder, the decoder, the training data
(slots and legal masks) and the sampler all step the same state with the same functions.

A state is one int32 array (``mem``) holding a small header (the cursor and obligation flags)
followed by per-coefficient and per-group flags. The core is numba-compiled and works on one
state; batched stepping loops over the rows of a 2-D ``mem`` (one row per sequence) inside the
compiled code, so a step of B sequences costs one call.

Internal symbols are shared by both languages; each language maps its own token ids onto them
(see :mod:`wavar.codec.tokens`).

Obligations that make every legal sequence the canonical code of some coefficient array:

* a block that breaks at a plane contains a newly significant coefficient, so after three
  ``Group2x2`` quads the fourth quad cannot be a ``Group2x2``; likewise a quad that breaks cannot
  end with a fourth ``Insignificant``;
* the first plane contains a significant coefficient (``m~ = floor(log2 max|a|) + 1``), so its
  last block cannot be a ``Group4x4`` while none was found;
* zero-tree: an ``Insignificant`` detail coefficient whose descendants are all insignificant
  asserts that one of them becomes significant in this plane; the state counts the candidates
  still open and forbids the tokens that would leave none.
"""

from __future__ import annotations

from numba import njit

# node kinds (the `kind` field of a slot)
BLOCK, QUAD, COEF, REFINE, DONE = 0, 1, 2, 3, 4
KIND_NAMES = ("block4x4", "quad2x2", "coefficient", "refinement", "done")

# internal symbols
S_G4, S_G2, S_INS, S_POS, S_NEG, S_ACC0, S_ACC1, S_ZTR = 0, 1, 2, 3, 4, 5, 6, 7

# languages
ZEROBLOCK, ZEROTREE = 0, 1

# header layout of a state
# the cursor is (plane, block, channel, quad, coef): units go block-major, channel-minor
H_PLANE, H_BLOCK, H_CH, H_QUAD, H_COEF, H_KIND, H_NPLANES, H_FLAGS, H_PCAND = range(9)
H_NTOK, H_LANG, H_IMMEDIATE, H_C, H_N, H_NB = 9, 10, 11, 12, 13, 14
HEADER = 16
# flag bits
F_BLKNEW, F_QUADNEW, F_PENDING, F_PLANENEED = 1, 2, 4, 8

# push() results below zero
ERR_ILLEGAL, ERR_DONE, NO_COEF = -2, -3, -1


@njit(cache=True, nogil=True)
def state_size(channels: int, n_coef: int) -> int:
    """Length of the int32 array holding one state."""
    nb = n_coef // 16
    # sig | block broken | quad broken | zero-tree: sigdesc, need, cand, pruned | magnitude
    return HEADER + channels * (n_coef + nb + 4 * nb + 4 * n_coef + n_coef)


@njit(cache=True, nogil=True, inline='always')
def _offsets(mem):
    c, n, nb = mem[H_C], mem[H_N], mem[H_NB]
    o_sig = HEADER
    o_bb = o_sig + c * n
    o_qb = o_bb + c * nb
    o_sd = o_qb + c * nb * 4
    o_need = o_sd + c * n
    o_cand = o_need + c * n
    o_pr = o_cand + c * n
    return o_sig, o_bb, o_qb, o_sd, o_need, o_cand, o_pr


@njit(cache=True, nogil=True, inline='always')
def _mag_offset(mem):
    """Start of the decoder's magnitudes: per coefficient, what a decoder that has read the
    tokens so far knows of it, signed (the coefficient's sign), 0 while insignificant, else the
    lower end of its uncertainty interval in units of half the final threshold (exact integers
    for either refinement variant)."""
    # right after the zero-tree's pruned flags: one layout, _offsets'
    return _offsets(mem)[6] + mem[H_C] * mem[H_N]


@njit(cache=True, nogil=True)
def init_state(mem, lang, immediate, channels, n_coef, n_planes):
    """Reset ``mem`` to the start of a sequence with ``n_planes`` bit-planes."""
    mem[:] = 0
    mem[H_LANG] = lang
    mem[H_IMMEDIATE] = immediate
    mem[H_C] = channels
    mem[H_N] = n_coef
    mem[H_NB] = n_coef // 16
    mem[H_NPLANES] = n_planes
    if n_planes > 0:
        mem[H_FLAGS] = F_PLANENEED
        mem[H_PCAND] = channels * n_coef
        mem[H_KIND] = BLOCK if lang == ZEROBLOCK else COEF
    else:
        mem[H_KIND] = DONE


@njit(cache=True, nogil=True, inline='always')
def _land(mem, scan_index):
    """Set the node kind at the cursor (zero-tree: first skip pruned coefficients)."""
    o_sig, o_bb, o_qb, o_sd, o_need, o_cand, o_pr = _offsets(mem)
    c_, n, nb = mem[H_C], mem[H_N], mem[H_NB]
    while True:
        k, b, ch, q, c = mem[H_PLANE], mem[H_BLOCK], mem[H_CH], mem[H_QUAD], mem[H_COEF]
        if k >= mem[H_NPLANES]:
            mem[H_KIND] = DONE
            return
        idx = ch * n + scan_index[b * 16 + q * 4 + c]
        if mem[H_LANG] == ZEROBLOCK:
            if q == 0 and c == 0 and mem[o_bb + ch * nb + b] == 0:
                mem[H_KIND] = BLOCK
            elif c == 0 and mem[o_qb + (ch * nb + b) * 4 + q] == 0:
                mem[H_KIND] = QUAD
            elif mem[o_sig + idx]:
                mem[H_KIND] = REFINE
            else:
                mem[H_KIND] = COEF
            return
        if mem[o_pr + idx] != k + 1:
            mem[H_KIND] = REFINE if mem[o_sig + idx] else COEF
            return
        # pruned by a zero-tree root of this plane: step to the next coefficient
        c += 1
        if c == 4:
            c = 0
            q += 1
            if q == 4:
                q = 0
                ch += 1
                if ch == c_:
                    ch = 0
                    b += 1
                    if b == nb:
                        b = 0
                        k += 1
        mem[H_PLANE], mem[H_BLOCK], mem[H_CH], mem[H_QUAD], mem[H_COEF] = k, b, ch, q, c


@njit(cache=True, nogil=True, inline='always')
def _advance(mem, level, scan_index):
    """Move the cursor past the current coefficient (level 2), quad (1) or unit (0)."""
    if level == 2:
        mem[H_COEF] += 1
        if mem[H_COEF] < 4:
            _land(mem, scan_index)
            return
        level = 1
    if level == 1:
        mem[H_COEF] = 0
        mem[H_QUAD] += 1
        mem[H_FLAGS] &= ~F_QUADNEW
        if mem[H_QUAD] < 4:
            _land(mem, scan_index)
            return
    mem[H_COEF] = 0
    mem[H_QUAD] = 0
    mem[H_FLAGS] &= ~(F_QUADNEW | F_BLKNEW)
    mem[H_CH] += 1
    if mem[H_CH] == mem[H_C]:
        mem[H_CH] = 0
        mem[H_BLOCK] += 1
        if mem[H_BLOCK] == mem[H_NB]:
            mem[H_BLOCK] = 0
            mem[H_PLANE] += 1
            mem[H_FLAGS] &= ~F_PLANENEED
    _land(mem, scan_index)


@njit(cache=True, nogil=True, inline='always')
def legal_symbols(mem, scan_index, parent, n_desc, is_ll):
    """Bitmask (over internal symbols) of the symbols legal at the cursor; 0 when done."""
    kind = mem[H_KIND]
    if kind == DONE:
        return 0
    if kind == REFINE:
        return (1 << S_ACC0) | (1 << S_ACC1)
    flags = mem[H_FLAGS]
    sig_bits = (1 << S_POS) | (1 << S_NEG)
    n = mem[H_N]
    b, ch, q, c = mem[H_BLOCK], mem[H_CH], mem[H_QUAD], mem[H_COEF]
    if mem[H_LANG] == ZEROBLOCK:
        if kind == BLOCK:
            m = (1 << S_G4) | (1 << S_G2) | (1 << S_INS) | sig_bits
            if flags & F_PLANENEED and b == mem[H_NB] - 1 and ch == mem[H_C] - 1:
                m &= ~(1 << S_G4)
            return m
        if kind == QUAD:
            m = (1 << S_G2) | (1 << S_INS) | sig_bits
            if flags & F_BLKNEW and q == 3:
                m &= ~(1 << S_G2)
            return m
        m = (1 << S_INS) | sig_bits
        if flags & F_QUADNEW and c == 3:
            m &= ~(1 << S_INS)
        return m
    # zero-tree, an insignificant coefficient
    o_sig, o_bb, o_qb, o_sd, o_need, o_cand, o_pr = _offsets(mem)
    d = scan_index[b * 16 + q * 4 + c]
    base = ch * n
    m = (1 << S_INS) | sig_bits
    leaf = n_desc[d] == 0
    if not is_ll[d] and not leaf and mem[o_sd + base + d] == 0:
        m |= 1 << S_ZTR
    open_below = n_desc[d] - mem[o_sd + base + d]
    stamp = mem[H_PLANE] + 1
    a = parent[d]
    while a >= 0:
        if mem[o_need + base + a] == stamp:
            cand = mem[o_cand + base + a]
            if cand == 1:
                m &= sig_bits
            elif cand == 1 + open_below:
                m &= ~(1 << S_ZTR)
        a = parent[a]
    if flags & F_PLANENEED:
        cand = mem[H_PCAND]
        if cand == 1:
            m &= sig_bits
        elif cand == 1 + open_below:
            m &= ~(1 << S_ZTR)
    return m


@njit(cache=True, nogil=True, inline='always')
def _set_significant(mem, idx, sym):
    """A coefficient found at plane k lies in [T_k, 2 T_k): T_k = 2^(planes - k) half final
    thresholds."""
    top = 1 << (mem[H_NPLANES] - mem[H_PLANE])
    mem[_mag_offset(mem) + idx] = top if sym == S_POS else -top


@njit(cache=True, nogil=True)
def push(mem, sym, scan_index, parent, children, n_desc, is_ll, check=True):
    """Consume one symbol.

    Returns the flat index ``channel * n_coef + i`` of the coefficient the symbol speaks of
    (significance or refinement), ``NO_COEF`` for a group/zero-tree/insignificance symbol,
    ``ERR_ILLEGAL`` if the symbol is not legal here (state unchanged), ``ERR_DONE`` if the
    sequence is already complete. ``check=False`` skips the legality test, for a caller that
    only pushes legal symbols (the encoder, whose data symbols are legal by construction).
    """
    kind = mem[H_KIND]
    n = mem[H_N]
    b, ch, q, c = mem[H_BLOCK], mem[H_CH], mem[H_QUAD], mem[H_COEF]
    if kind == REFINE:  # the most frequent node: a fast path
        if sym != S_ACC0 and sym != S_ACC1:
            return ERR_ILLEGAL
        mem[H_NTOK] += 1
        mem[H_FLAGS] &= ~F_PENDING
        idx = ch * n + scan_index[b * 16 + q * 4 + c]
        if sym == S_ACC1:  # the upper half: the interval's lower end moves up by half its width
            step = 1 << (mem[H_NPLANES] - mem[H_PLANE] - mem[H_IMMEDIATE])
            o = _mag_offset(mem) + idx
            mem[o] += step if mem[o] > 0 else -step
        _advance(mem, 2, scan_index)
        return idx
    if kind == DONE:
        return ERR_DONE
    if check and not (legal_symbols(mem, scan_index, parent, n_desc, is_ll) >> sym) & 1:
        return ERR_ILLEGAL
    o_sig, o_bb, o_qb, o_sd, o_need, o_cand, o_pr = _offsets(mem)
    nb = mem[H_NB]
    mem[H_NTOK] += 1
    if mem[H_LANG] == ZEROBLOCK:
        if kind == BLOCK:
            if sym == S_G4:
                _advance(mem, 0, scan_index)
                return NO_COEF
            mem[o_bb + ch * nb + b] = 1
            mem[H_FLAGS] |= F_BLKNEW
            kind = QUAD
        if kind == QUAD:
            if sym == S_G2:
                _advance(mem, 1, scan_index)
                return NO_COEF
            mem[o_qb + (ch * nb + b) * 4 + q] = 1
            mem[H_FLAGS] = (mem[H_FLAGS] | F_QUADNEW) & ~F_BLKNEW
        idx = ch * n + scan_index[b * 16 + q * 4 + c]
        if sym == S_INS:
            _advance(mem, 2, scan_index)
            return NO_COEF
        mem[o_sig + idx] = 1
        _set_significant(mem, idx, sym)
        mem[H_FLAGS] &= ~(F_QUADNEW | F_PLANENEED)
        if mem[H_IMMEDIATE]:
            mem[H_FLAGS] |= F_PENDING
            mem[H_KIND] = REFINE
        else:
            _advance(mem, 2, scan_index)
        return idx
    # zero-tree
    d = scan_index[b * 16 + q * 4 + c]
    base = ch * n
    stamp = mem[H_PLANE] + 1
    removed = 1 + (n_desc[d] if sym == S_ZTR else 0)
    a = parent[d]
    while a >= 0:
        if mem[o_need + base + a] == stamp:
            mem[o_cand + base + a] -= removed
        a = parent[a]
    if mem[H_FLAGS] & F_PLANENEED:
        mem[H_PCAND] -= removed
    if sym == S_POS or sym == S_NEG:
        mem[o_sig + base + d] = 1
        _set_significant(mem, base + d, sym)
        a = parent[d]
        while a >= 0:
            mem[o_sd + base + a] += 1
            mem[o_need + base + a] = 0
            a = parent[a]
        mem[H_FLAGS] &= ~F_PLANENEED
        if mem[H_IMMEDIATE]:
            mem[H_FLAGS] |= F_PENDING
            mem[H_KIND] = REFINE
        else:
            _advance(mem, 2, scan_index)
        return base + d
    if sym == S_ZTR:
        # mark the whole subtree pruned for this plane: a stackless depth-first walk (first
        # child, else next sibling, else up), so the same code also compiles for the GPU
        x = children[d, 0]
        while x >= 0:
            mem[o_pr + base + x] = stamp
            if children[x, 0] >= 0:
                x = children[x, 0]
                continue
            while x != d:
                p = parent[x]
                j = 0
                while children[p, j] != x:
                    j += 1
                j += 1
                while j < 4 and children[p, j] < 0:
                    j += 1
                if j < 4:
                    x = children[p, j]
                    break
                x = p
            if x == d:
                x = -1
    elif not is_ll[d] and n_desc[d] > 0 and mem[o_sd + base + d] == 0:
        mem[o_need + base + d] = stamp
        mem[o_cand + base + d] = n_desc[d]
    _advance(mem, 2, scan_index)
    return NO_COEF


@njit(cache=True, nogil=True)
def slot_of(mem, scan_index, block_slot, quad_slot, coef_slot, out_int, out_pos):
    """Write the slot at the cursor: out_int = (plane, channel, level, orientation, kind)."""
    kind = mem[H_KIND]
    b, ch, q, c = mem[H_BLOCK], mem[H_CH], mem[H_QUAD], mem[H_COEF]
    if kind == BLOCK:
        row = block_slot[b]
    elif kind == QUAD:
        row = quad_slot[b * 4 + q]
    else:
        row = coef_slot[b * 16 + q * 4 + c]
    out_int[0] = mem[H_PLANE]
    out_int[1] = ch
    out_int[2] = int(row[0])
    out_int[3] = int(row[1])
    out_int[4] = kind
    out_pos[0] = row[2]
    out_pos[1] = row[3]


# ---------------------------------------------------------------------------------------------
# the decoder's state at the cursor (docs/design.md §2, "the decoder's state")
#
# What a decoder that has read the tokens so far knows about the unit the next token decides,
# as small integers the model embeds: EBCOT's context formation (JPEG 2000 codes each decision
# in a context of its 8 neighbours' significance and signs) and spihtter's embedding of the
# coefficient's current value, computed from the state (one code path for the encoder's
# training data, the CPU sampler and the GPU kernel). "rel" buckets a decoded magnitude L
# against the current threshold T: 0 insignificant, 1 + floor(log2(L / T)) capped at 6.

# features of context_of, in order, and the number of values each takes
CONTEXT_NAMES = ("sig_h", "sig_v", "sig_d", "parent", "orientations", "channels",
                 "neighbourhood", "planes_since", "refined_bits", "sign_context", "sign")
CONTEXT_SIZES = (4, 4, 5, 8, 4, 3, 7, 8, 7, 10, 3)
N_CONTEXT = len(CONTEXT_SIZES)
# the version of the feature set above: models record it (ModelConfig.decoder_state)
CONTEXT_VERSION = 1


@njit(cache=True, nogil=True, inline='always')
def _floor_log2(x):
    r = 0
    while x > 1:
        x >>= 1
        r += 1
    return r


@njit(cache=True, nogil=True, inline='always')
def _rel(v, e):
    """Bucket of the decoded value v against the threshold 2^e (see above)."""
    if v == 0:
        return 0
    return min(max(_floor_log2(abs(v)) - e + 1, 1), 6)


@njit(cache=True, nogil=True, inline='always')
def _mean_bucket(total, count, e):
    """0 for no decoded magnitude around, else the mean's bucket: < T/4, < T/2, < T, < 2T,
    < 4T, more (1..6)."""
    if total == 0:
        return 0
    t = count << e
    if 4 * total < t:
        return 1
    if 2 * total < t:
        return 2
    if total < t:
        return 3
    if total < 2 * t:
        return 4
    if total < 4 * t:
        return 5
    return 6


@njit(cache=True, nogil=True)
def context_of(mem, scan_index, parent, neighbours, siblings, block_ring, quad_ring, out):
    """Write the decoder-state features of the unit at the cursor into ``out`` (N_CONTEXT,):

    * sig_h, sig_v, sig_d: significant neighbours in the same subband, horizontal (W, E),
      vertical (N, S) and diagonal; for a block or quad those in the ring around it (sides
      capped at 3);
    * parent: the largest ``rel`` of the members' zero-tree parents (7: none, the LL band);
    * orientations: of the level's two other orientations, how many hold a significant
      coefficient at the members' positions (3: the LL band);
    * channels: other colour channels significant at the members' positions (0 in grey);
    * neighbourhood: the mean decoded magnitude around the unit against the threshold
      (:func:`_mean_bucket`);
    * for a refinement: planes_since (1 + planes since it became significant, capped at 7),
      refined_bits (its first one or two refinement bits once known: 1 + b1, or
      3 + 2 b1 + b2), sign (1 positive, 2 negative); sign_context (a coefficient or a
      refinement): 1 + 3 (h + 1) + (v + 1) from the signs of its significant horizontal and
      vertical neighbours (EBCOT's sign contexts), each summed and clipped to -1..1.

    All zeros when the sequence is done.
    """
    for j in range(N_CONTEXT):
        out[j] = 0
    kind = mem[H_KIND]
    if kind == DONE:
        return
    n, channels = mem[H_N], mem[H_C]
    b, ch, q, c = mem[H_BLOCK], mem[H_CH], mem[H_QUAD], mem[H_COEF]
    om = _mag_offset(mem)
    base = om + ch * n
    e = mem[H_NPLANES] - mem[H_PLANE]  # the threshold is 2^e half final thresholds
    if kind == BLOCK:
        first, count, size = b * 16, 16, 4
    elif kind == QUAD:
        first, count, size = b * 16 + q * 4, 4, 2
    else:
        first, count, size = b * 16 + q * 4 + c, 1, 0
    nh = 0
    nv = 0
    nd = 0
    sh = 0
    sv = 0
    total = 0
    seen = 0
    if size == 0:
        d = scan_index[first]
        for j in range(8):
            x = neighbours[d, j]
            if x >= 0:
                seen += 1
                v = mem[base + x]
                if v != 0:
                    total += abs(v)
                    sign = 1 if v > 0 else -1
                    if j < 2:
                        nh += 1
                        sh += sign
                    elif j < 4:
                        nv += 1
                        sv += sign
                    else:
                        nd += 1
    else:
        for j in range(4 * size + 4):
            x = block_ring[b, j] if size == 4 else quad_ring[b * 4 + q, j]
            if x >= 0:
                seen += 1
                v = mem[base + x]
                if v != 0:
                    total += abs(v)
                    if j < 2 * size:
                        nh += 1
                    elif j < 4 * size:
                        nv += 1
                    else:
                        nd += 1
    out[0] = min(nh, 3)
    out[1] = min(nv, 3)
    out[2] = nd
    best = -1
    orient = 0
    orient_ll = True
    other = 0
    for ch2 in range(channels):
        if ch2 == ch:
            continue
        for p in range(first, first + count):
            if mem[om + ch2 * n + scan_index[p]] != 0:
                other += 1
                break
    for o in range(2):
        hit = 0
        for p in range(first, first + count):
            s = siblings[scan_index[p], o]
            if s >= 0:
                orient_ll = False
                if mem[base + s] != 0:
                    hit = 1
        orient += hit
    for p in range(first, first + count):
        a = parent[scan_index[p]]
        if a >= 0:
            best = max(best, _rel(mem[base + a], e))
    out[3] = 7 if best < 0 else best
    out[4] = 3 if orient_ll else orient
    out[5] = other
    out[6] = _mean_bucket(total, max(seen, 1), e)
    if size == 0:
        out[9] = 1 + 3 * (min(max(sh, -1), 1) + 1) + min(max(sv, -1), 1) + 1
    if kind == REFINE:
        v = mem[base + scan_index[first]]
        top = _floor_log2(abs(v))
        since = top - e  # planes since it became significant
        known = since - 1 + mem[H_IMMEDIATE]  # refinement bits decided so far
        out[7] = 1 + min(since, 6)
        if known == 1:
            out[8] = 1 + ((abs(v) >> (top - 1)) & 1)
        elif known >= 2:
            out[8] = 3 + 2 * ((abs(v) >> (top - 1)) & 1) + ((abs(v) >> (top - 2)) & 1)
        out[10] = 1 if v > 0 else 2


# ---------------------------------------------------------------------------------------------
# batched stepping: one row of `mems` per sequence


@njit(cache=True, nogil=True)
def batch_legal(mems, scan_index, parent, n_desc, is_ll, out):
    for i in range(mems.shape[0]):
        out[i] = legal_symbols(mems[i], scan_index, parent, n_desc, is_ll)


@njit(cache=True, nogil=True)
def batch_push(mems, syms, scan_index, parent, children, n_desc, is_ll, out):
    """Push ``syms[i]`` into row i; a negative symbol leaves that row alone (finished)."""
    for i in range(mems.shape[0]):
        if syms[i] < 0:
            out[i] = ERR_DONE
        else:
            out[i] = push(mems[i], syms[i], scan_index, parent, children, n_desc, is_ll)


@njit(cache=True, nogil=True)
def batch_slots(mems, scan_index, block_slot, quad_slot, coef_slot, out_int, out_pos):
    for i in range(mems.shape[0]):
        if mems[i, H_KIND] == DONE:
            out_int[i, :] = 0
            out_int[i, 0] = mems[i, H_PLANE]
            out_int[i, 4] = DONE
            out_pos[i, :] = 0.0
        else:
            slot_of(mems[i], scan_index, block_slot, quad_slot, coef_slot, out_int[i], out_pos[i])


@njit(cache=True, nogil=True)
def batch_context(mems, scan_index, parent, neighbours, siblings, block_ring, quad_ring, out):
    for i in range(mems.shape[0]):
        context_of(mems[i], scan_index, parent, neighbours, siblings, block_ring, quad_ring,
                   out[i])
