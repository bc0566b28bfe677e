"""Scan order and slot geometry of the wavelet language (docs/design.md §1, "Scan").

Static tables only; the dynamic state lives in :mod:`wavar.codec.grammar`.

Per bit-plane the scan visits 4 x 4 blocks: first the block(s) of the coarsest region, then for
each level, coarse to fine, the subbands top-right (HL), bottom-left (LH), bottom-right (HH), each
in raster order of its 4 x 4 blocks. Within a block its four 2 x 2 quads go in raster order, and
within a quad its four coefficients. With a 2 x 2 LL band the first block is the top-left 4 x 4
corner, whose quads are the LL band and the three coarsest detail subbands. Colour channels are
interleaved block by block (Y, Cb, Cr of the same block position), so that any prefix is a
balanced colour image; a *unit* is one (block, channel) pair, ``unit = block * C + channel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LL, HL, LH, HH = 0, 1, 2, 3
ORIENTATIONS = ("LL", "HL", "LH", "HH")


@dataclass(frozen=True, eq=False)
class Geometry:
    """Scan tables for one coefficient-array side ``M`` and number of DWT ``levels``.

    Attributes
    ----------
    side, levels, ll_side : int
        M, the number of levels, and the side of the LL band (``M >> levels``, at least 2).
    n_coef, n_blocks : int
        ``M * M`` and ``n_coef // 16``.
    scan_index : int32 (n_coef,)
        Flat index ``row * M + col`` of the coefficient at scan position
        ``p = block * 16 + quad * 4 + coef``.
    block_slot, quad_slot, coef_slot : float64 (n, 4)
        Per block, per quad (``block * 4 + quad``) and per scan position:
        (level, orientation, y, x) with (y, x) the centre of the node's support as a fraction
        of the image side. Level 0 is the LL band, 1 the coarsest detail level.
    parent : int32 (n_coef,)
        Zero-tree parent (flat index) of each coefficient, -1 for the LL band.
    children : int32 (n_coef, 4)
        Zero-tree children, -1 padded.
    n_desc : int32 (n_coef,)
        Number of descendants in the zero-tree.
    is_ll : uint8 (n_coef,)
    bottom_up : int32 (n_coef,)
        Flat indices ordered finest level first, so children come before their parents.
    neighbours : int32 (n_coef, 8)
        The 8 neighbours of each coefficient in its own subband, in the order W, E, N, S, NW,
        NE, SW, SE (flat indices; -1 past the subband's edge).
    siblings : int32 (n_coef, 2)
        The same (row, col) in the level's two other orientations; -1 for the LL band.
    block_ring, quad_ring : int32 (n_blocks, 20), (n_blocks * 4, 12)
        The coefficients around each 4 x 4 block / 2 x 2 quad in its subband: W side, E side,
        N side, S side (4 / 2 each, top to bottom or left to right), then the corners NW, NE,
        SW, SE; -1 past the subband's edge (and all -1 for a block that spans several subbands).
        The decoder-state context (:func:`wavar.codec.grammar.context_of`) counts significant
        coefficients in these, as EBCOT's context formation does in a coefficient's 8
        neighbours.
    """

    side: int
    levels: int
    ll_side: int
    n_coef: int
    n_blocks: int
    scan_index: np.ndarray
    block_slot: np.ndarray
    quad_slot: np.ndarray
    coef_slot: np.ndarray
    parent: np.ndarray
    children: np.ndarray
    n_desc: np.ndarray
    is_ll: np.ndarray
    bottom_up: np.ndarray
    neighbours: np.ndarray
    siblings: np.ndarray
    block_ring: np.ndarray
    quad_ring: np.ndarray

    @property
    def context_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The tables :func:`wavar.codec.grammar.context_of` reads, after scan_index, parent."""
        return self.neighbours, self.siblings, self.block_ring, self.quad_ring


def _coef_info(r: int, c: int, ll_side: int) -> tuple[int, int, int, int, int]:
    """(level, orientation, row, col, subband side) of Mallat-layout position (r, c)."""
    if r < ll_side and c < ll_side:
        return 0, LL, r, c, ll_side
    s = 1 << int(np.log2(max(r, c)))
    orient = HL if r < s else (LH if c < s else HH)
    level = int(np.log2(s // ll_side)) + 1
    return level, orient, r % s if r >= s else r, c % s if c >= s else c, s


def _block_origins(side: int, ll_side: int) -> list[tuple[int, int]]:
    origins: list[tuple[int, int]] = []
    if ll_side == 2:
        origins.append((0, 0))
        s = 4
    else:
        origins += [(r, c) for r in range(0, ll_side, 4) for c in range(0, ll_side, 4)]
        s = ll_side
    while s < side:
        for r0, c0 in ((0, s), (s, 0), (s, s)):  # HL, LH, HH
            origins += [(r0 + r, c0 + c) for r in range(0, s, 4) for c in range(0, s, 4)]
        s *= 2
    return origins


@lru_cache(maxsize=32)
def geometry(side: int, levels: int) -> Geometry:
    """Build (and cache) the scan tables for an M x M coefficient array."""
    if side < 4 or side & (side - 1):
        raise ValueError(f"coefficient array side must be a power of two >= 4, got {side}")
    ll_side = side >> levels
    if levels < 1 or ll_side < 2:
        raise ValueError(
            f"levels must be between 1 and {int(np.log2(side)) - 1} for side {side}, got {levels}"
        )
    n = side * side
    origins = _block_origins(side, ll_side)
    assert len(origins) * 16 == n  # internal consistency of the tables, not user input

    scan_index = np.empty(n, np.int32)
    coef_slot = np.empty((n, 4))
    quad_slot = np.empty((n // 4, 4))
    block_slot = np.empty((n // 16, 4))
    for b, (r0, c0) in enumerate(origins):
        for q in range(4):
            qr, qc = r0 + 2 * (q // 2), c0 + 2 * (q % 2)
            lv, o, row, col, s = _coef_info(qr, qc, ll_side)
            quad_slot[b * 4 + q] = lv, o, (row + 1) / s, (col + 1) / s
            for k in range(4):
                r, c = qr + k // 2, qc + k % 2
                p = b * 16 + q * 4 + k
                scan_index[p] = r * side + c
                lv, o, row, col, s = _coef_info(r, c, ll_side)
                coef_slot[p] = lv, o, (row + 0.5) / s, (col + 0.5) / s
        lv, o, row, col, s = _coef_info(r0, c0, ll_side)
        if ll_side == 2 and b == 0:  # the corner block spans LL and the coarsest details
            block_slot[b] = 0, LL, 0.5, 0.5
        else:
            block_slot[b] = lv, o, (row + 2) / s, (col + 2) / s

    parent = np.full(n, -1, np.int32)
    for r in range(side):
        for c in range(side):
            lv, o, row, col, s = _coef_info(r, c, ll_side)
            if lv == 0:
                continue
            if lv == 1:
                parent[r * side + c] = row * side + col
            else:
                h = s // 2
                pr, pc = row // 2 + (h if o != HL else 0), col // 2 + (h if o != LH else 0)
                parent[r * side + c] = pr * side + pc
    children = np.full((n, 4), -1, np.int32)
    fill = np.zeros(n, np.int32)
    for i in range(n):
        p = parent[i]
        if p >= 0:
            children[p, fill[p]] = i
            fill[p] += 1
    n_desc = np.zeros(n, np.int32)
    # finest coefficients last in Mallat order by max(r, c), so walk that order backwards
    order = sorted(range(n), key=lambda i: max(divmod(i, side)), reverse=True)
    for i in order:
        if parent[i] >= 0:
            n_desc[parent[i]] += 1 + n_desc[i]
    is_ll = (parent < 0).astype(np.uint8)
    neighbours, siblings = _neighbour_tables(side, ll_side)
    block_ring = np.stack([_ring(r0, c0, 4, side, ll_side) for r0, c0 in origins])
    quad_ring = np.stack([_ring(r0 + 2 * (q // 2), c0 + 2 * (q % 2), 2, side, ll_side)
                          for r0, c0 in origins for q in range(4)])
    return Geometry(
        side=side, levels=levels, ll_side=ll_side, n_coef=n, n_blocks=n // 16,
        scan_index=scan_index, block_slot=block_slot, quad_slot=quad_slot,
        coef_slot=coef_slot, parent=parent, children=children, n_desc=n_desc, is_ll=is_ll,
        bottom_up=np.array(order, np.int32), neighbours=neighbours, siblings=siblings,
        block_ring=block_ring, quad_ring=quad_ring,
    )


def _subband_index(r: int, c: int, r0: int, c0: int, side: int, ll_side: int) -> int:
    """Flat index of Mallat position (r, c) if it lies in the same subband as (r0, c0), else -1."""
    if not (0 <= r < side and 0 <= c < side):
        return -1
    a, b = _coef_info(r0, c0, ll_side), _coef_info(r, c, ll_side)
    return r * side + c if a[:2] == b[:2] else -1


def _neighbour_tables(side: int, ll_side: int) -> tuple[np.ndarray, np.ndarray]:
    steps = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))
    n = side * side
    neighbours = np.full((n, 8), -1, np.int32)
    siblings = np.full((n, 2), -1, np.int32)
    for r in range(side):
        for c in range(side):
            i = r * side + c
            for j, (dr, dc) in enumerate(steps):
                neighbours[i, j] = _subband_index(r + dr, c + dc, r, c, side, ll_side)
            lv, o, row, col, s = _coef_info(r, c, ll_side)
            if lv > 0:
                others = [(0, s), (s, 0), (s, s)]  # HL, LH, HH origins
                del others[o - 1]
                siblings[i] = [(r0 + row) * side + c0 + col for r0, c0 in others]
    return neighbours, siblings


def _ring(r0: int, c0: int, size: int, side: int, ll_side: int) -> np.ndarray:
    """The ring around the size x size unit at Mallat origin (r0, c0) (see Geometry)."""
    last = size - 1
    if _coef_info(r0, c0, ll_side)[:2] != _coef_info(r0 + last, c0 + last, ll_side)[:2]:
        return np.full(4 * size + 4, -1, np.int32)  # a unit across subbands: no ring
    cells = ([(r0 + i, c0 - 1) for i in range(size)] + [(r0 + i, c0 + size) for i in range(size)]
             + [(r0 - 1, c0 + j) for j in range(size)] + [(r0 + size, c0 + j) for j in range(size)]
             + [(r0 - 1, c0 - 1), (r0 - 1, c0 + size), (r0 + size, c0 - 1), (r0 + size, c0 + size)])
    return np.array([_subband_index(r, c, r0, c0, side, ll_side) for r, c in cells], np.int32)
