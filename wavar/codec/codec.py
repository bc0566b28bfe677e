"""The wavelet codec: uint8 images <-> token sequences, lossy and lossless, grey and colour.

>>> import numpy as np
>>> from wavar import WaveletCodec
>>> codec = WaveletCodec(wavelet="cdf53")            # lossless: final threshold 1
>>> img = (np.arange(28 * 28) % 251).astype(np.uint8).reshape(28, 28)
>>> seq = codec.encode(img)
>>> bool((codec.decode(seq) == img).all())
True
>>> coarse = codec.decode(seq, n_tokens=100)        # any prefix decodes
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wavar.codec import coder
from wavar.codec import grammar as g
from wavar.codec.bitstream import CodedImage, Header, padded_side
from wavar.codec.scan import Geometry, geometry
from wavar.codec.tokens import Language, get_language
from wavar.codec.transform import (
    INTEGER_WAVELETS,
    WAVELETS,
    dwt2,
    idwt2,
    rct_to_rgb,
    rgb_to_rct,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from wavar.errors import ImageError, TokenStreamError
from wavar.imageio import check_image

REFINEMENTS = ("deferred", "immediate")


@dataclass
class Slots:
    """Per-token slot arrays of a sequence (the slot each token fills, known before it).

    ``legal`` is the int64 bitmask over token ids of the tokens legal at that position (-1, all
    bits set, means every token: the raster language).
    ``kind`` uses :data:`wavar.codec.grammar.KIND_NAMES`; ``y, x`` are the centre of the
    slot's support as a fraction of the image side.
    """

    plane: np.ndarray
    channel: np.ndarray
    level: np.ndarray
    orientation: np.ndarray
    kind: np.ndarray
    y: np.ndarray
    x: np.ndarray
    legal: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    def stacked(self) -> np.ndarray:
        """int64 (n, 5): plane, channel, level, orientation, kind (the model's slot input)."""
        return np.stack([self.plane, self.channel, self.level, self.orientation, self.kind], 1)


class WaveletCodec:
    """Embedded wavelet bit-plane coder whose output is a token sequence.

    Parameters
    ----------
    wavelet : {'bior4.4', 'haar', 'cdf53'}
        ``cdf53`` is the reversible integer 5/3 transform (with the reversible colour
        transform); the others work on values scaled to [0, 1] (with YCbCr for colour).
    language : {'zeroblock', 'zerotree'}
    final_threshold : float, optional
        Last bit-plane threshold (inclusive), a power of two. Default: 1 for ``cdf53``
        (lossless), 2**-4 otherwise.
    refinement : {'deferred', 'immediate'}
        Deferred (SPIHT-like, default): a coefficient found significant at a plane gets its
        first refinement bit at the next plane. Immediate (EZW-like): right after.
    levels : int, optional
        DWT levels; default down to a 2 x 2 LL band.
    """

    def __init__(
        self,
        wavelet: str = "bior4.4",
        language: str = "zeroblock",
        final_threshold: float | None = None,
        refinement: str = "deferred",
        levels: int | None = None,
    ) -> None:
        if wavelet not in WAVELETS:
            raise ValueError(f"unknown wavelet {wavelet!r}; choose one of {', '.join(WAVELETS)}")
        if refinement not in REFINEMENTS:
            raise ValueError(f"refinement must be 'deferred' or 'immediate', got {refinement!r}")
        self.wavelet = wavelet
        self.lang: Language = get_language(language)
        self.integer = wavelet in INTEGER_WAVELETS
        if final_threshold is None:
            final_threshold = 1.0 if self.integer else 2.0**-4
        exp = math.log2(final_threshold) if final_threshold > 0 else float("nan")
        if not exp == int(exp):
            raise ValueError(f"final_threshold must be a power of two, got {final_threshold}")
        if self.integer and exp < 0:
            raise ValueError("cdf53 coefficients are integers: final_threshold must be >= 1")
        self.final_exponent = int(exp)
        self.refinement = refinement
        self.levels = levels
        self._sym_of_tok = self.lang.to_symbols()
        self._tok_of_sym = self.lang.from_symbols()
        # zero-block token ids are the grammar's symbols: skip the per-token mapping
        self._identity = bool(np.array_equal(self._sym_of_tok, np.arange(self.lang.vocab_size)))

    # -- parameters ---------------------------------------------------------------------------
    @property
    def language(self) -> str:
        return self.lang.name

    @property
    def final_threshold(self) -> float:
        return 2.0**self.final_exponent

    @property
    def lossless(self) -> bool:
        return self.integer and self.final_exponent == 0

    def params(self) -> dict:
        """Codec parameters as a JSON-able dict (recorded in model configs)."""
        return {
            "wavelet": self.wavelet,
            "language": self.language,
            "final_threshold": self.final_threshold,
            "refinement": self.refinement,
            "levels": self.levels,
        }

    @classmethod
    def from_params(cls, params: dict) -> WaveletCodec:
        return cls(**params)

    @classmethod
    def from_header(cls, header: Header) -> WaveletCodec:
        side = header.side
        default = None if header.levels == int(math.log2(side)) - 1 else header.levels
        return cls(header.wavelet, header.language, 2.0**header.final_exponent,
                   header.refinement, default)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"WaveletCodec({args})"

    def levels_for(self, side: int) -> int:
        return self.levels if self.levels is not None else int(math.log2(side)) - 1

    def geometry(self, height: int, width: int) -> Geometry:
        side = padded_side(height, width)
        return geometry(side, self.levels_for(side))

    def header(self, height: int, width: int, channels: int, m_tilde: int) -> Header:
        side = padded_side(height, width)
        return Header(height, width, channels, int(m_tilde), self.wavelet, self.language,
                      self.refinement, self.final_exponent, self.levels_for(side))

    def _check_header(self, h: Header) -> None:
        if (h.wavelet, h.language, h.refinement, h.final_exponent) != (
            self.wavelet, self.language, self.refinement, self.final_exponent
        ) or h.levels != self.levels_for(h.side):
            raise ValueError(
                f"sequence was coded with {h.wavelet}/{h.language}/{h.refinement}/"
                f"2^{h.final_exponent}/{h.levels} levels, not with this codec ({self!r}); "
                "use WaveletCodec.from_header(seq.header)"
            )

    # -- pixels <-> coefficients ---------------------------------------------------------------
    def coefficients(self, images: np.ndarray) -> np.ndarray:
        """Transform a batch of same-shape uint8 images into coefficients.

        Parameters
        ----------
        images : uint8 (N, H, W) or (N, H, W, 3)

        Returns
        -------
        ndarray (N, C, M, M): int64 for ``cdf53``, float64 otherwise.
        """
        n, h, w = images.shape[:3]
        colour = images.ndim == 4
        side = padded_side(h, w)
        if self.integer:
            planes = rgb_to_rct(images) if colour else images.astype(np.int64)[..., None]
        else:
            x = images.astype(np.float64) / 255.0
            planes = rgb_to_ycbcr(x) if colour else x[..., None]
        planes = np.moveaxis(planes, -1, 1)  # (N, C, H, W)
        top, left = (side - h) // 2, (side - w) // 2
        padded = np.zeros(planes.shape[:2] + (side, side), planes.dtype)
        padded[:, :, top : top + h, left : left + w] = planes
        return dwt2(padded, self.wavelet, self.levels_for(side))

    def images(self, coefs: np.ndarray, height: int, width: int) -> np.ndarray:
        """Inverse of :meth:`coefficients`: (N, C, M, M) -> uint8 images (N, H, W[, 3])."""
        side = coefs.shape[-1]
        levels = self.levels_for(side)
        if self.integer:
            planes = idwt2(np.rint(coefs).astype(np.int64), self.wavelet, levels)
        else:
            planes = idwt2(coefs, self.wavelet, levels)
        top, left = (side - height) // 2, (side - width) // 2
        planes = np.moveaxis(planes[:, :, top : top + height, left : left + width], 1, -1)
        if planes.shape[-1] == 3:
            planes = rct_to_rgb(planes) if self.integer else ycbcr_to_rgb(planes)
        else:
            planes = planes[..., 0]
        if not self.integer:
            planes = np.rint(planes * 255.0)
        return np.clip(planes, 0, 255).astype(np.uint8)

    def m_tilde(self, coefs: np.ndarray) -> np.ndarray:
        """Per-image m~ = floor(log2 max|a|) + 1, at least the final exponent (no planes)."""
        peak = np.abs(coefs).reshape(len(coefs), -1).max(axis=1).astype(np.float64)
        _, e = np.frexp(peak)  # peak = f * 2**e with f in [0.5, 1): floor(log2 peak) = e - 1
        return np.where(peak > 0, np.maximum(e, self.final_exponent), self.final_exponent)

    # -- coefficients <-> tokens ------------------------------------------------------------------
    def _grammar_args(self, geo: Geometry):
        return (geo.scan_index, geo.parent, geo.children, geo.n_desc, geo.is_ll)

    def encode_coefficients(
        self, coefs: np.ndarray, height: int, width: int, m_tilde: Sequence[int] | None = None
    ) -> list[CodedImage]:
        """Encode a batch of coefficient arrays (N, C, M, M) (as from :meth:`coefficients`)."""
        n, c, side, _ = coefs.shape
        geo = self.geometry(height, width)
        mt = self.m_tilde(coefs)
        if m_tilde is not None and not np.array_equal(np.asarray(m_tilde, np.int64), mt):
            # a larger m~ would start with an all-insignificant plane and a smaller one could
            # not code the peak: neither is a sequence of the language
            raise ValueError(f"m_tilde must be floor(log2 max|a|) + 1 per image: {mt.tolist()}")
        n_planes = np.maximum(mt - self.final_exponent, 0).astype(np.int64)
        flat = coefs.reshape(n, c * side * side)
        mags = np.abs(flat).astype(np.float64)
        negs = flat < 0
        immediate = int(self.refinement == "immediate")
        out_list: list[CodedImage] = []
        chunk = 256  # bounds the scratch buffer
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            bound = int(n_planes[s:e].max(initial=0)) * c * side * side * (2 + immediate) + 1
            out = np.empty((e - s, bound), np.uint8)
            lengths = np.empty(e - s, np.int64)
            coder.encode_many(mags[s:e], negs[s:e], mt[s:e], n_planes[s:e], self.lang.code,
                              immediate, c, side * side, *self._grammar_args(geo),
                              geo.bottom_up, out, lengths)
            if (lengths < 0).any():  # would be a bug in the grammar or the encoder
                raise RuntimeError("internal error: the grammar refused the encoder's symbol")
            for i in range(e - s):
                toks = out[i, : lengths[i]].copy()
                if not self._identity:
                    toks = self._tok_of_sym[toks].astype(np.uint8)
                hdr = self.header(height, width, c, int(mt[s + i]))
                out_list.append(CodedImage(toks, hdr))
        return out_list

    def _symbols(self, seq: CodedImage) -> np.ndarray:
        toks = np.asarray(seq.tokens)
        if toks.ndim != 1:
            raise TokenStreamError(f"tokens must be a 1-D array, got shape {toks.shape}")
        bad = np.flatnonzero((toks < 0) | (toks >= self.lang.vocab_size))
        if bad.size:
            raise TokenStreamError(
                f"token {int(toks[bad[0]])} at position {int(bad[0])} is not in the "
                f"{self.language} vocabulary (0..{self.lang.vocab_size - 1})",
                int(bad[0]),
            )
        if self._identity:
            return toks
        return self._sym_of_tok[toks.astype(np.int64)]

    def decode_coefficients(
        self, seqs: Sequence[CodedImage], n_tokens: int | None = None,
        return_width: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Coefficient estimates (N, C, M, M) of same-shape sequences (prefixes if n_tokens).

        Each coefficient sits at the midpoint of its uncertainty interval (for integer
        coefficients, the midpoint of the integers in it), 0 while insignificant. With
        ``return_width`` also the width of each significant coefficient's magnitude interval
        (0 for coefficients not yet significant).
        """
        h0 = seqs[0].header
        for s in seqs:
            self._check_header(s.header)
            if (s.header.height, s.header.width, s.header.channels) != (
                h0.height, h0.width, h0.channels
            ):
                raise ValueError("decode_coefficients needs sequences of one image shape")
        geo = self.geometry(h0.height, h0.width)
        c, side = h0.channels, geo.side
        syms = [self._symbols(s)[:n_tokens] if n_tokens is not None else self._symbols(s)
                for s in seqs]
        offsets = np.zeros(len(seqs) + 1, np.int64)
        offsets[1:] = np.cumsum([len(x) for x in syms])
        flat = np.concatenate(syms) if syms else np.zeros(0, np.int64)
        n = len(seqs)
        lo = np.zeros((n, c * side * side))
        width = np.zeros((n, c * side * side))
        neg = np.zeros((n, c * side * side), np.bool_)
        errors = np.empty(n, np.int64)
        mt = np.array([s.header.m_tilde for s in seqs], np.int64)
        n_planes = np.array([s.header.n_planes for s in seqs], np.int64)
        coder.decode_many(flat, offsets, mt, n_planes, self.lang.code,
                          int(self.refinement == "immediate"), c, side * side,
                          *self._grammar_args(geo), lo, width, neg, errors)
        for i, err in enumerate(errors):
            if err >= 0:
                self._raise_stream_error(syms[i], int(err), seqs[i].header, geo)
        if self.integer:
            mag = np.where(width > 0, lo + np.maximum(width - 1, 0) / 2, 0.0)
        else:
            mag = np.where(width > 0, lo + width / 2, 0.0)
        est = np.where(neg, -mag, mag).reshape(n, c, side, side)
        if return_width:
            return est, width.reshape(n, c, side, side)
        return est

    def _raise_stream_error(self, syms, pos: int, header: Header, geo: Geometry) -> None:
        state = ScanState(self, header)
        for s in syms[:pos]:
            state._push_symbol(int(s))
        if state.done:
            raise TokenStreamError(
                f"token at position {pos} comes after the end of the sequence "
                f"(complete after {pos} tokens)", pos)
        legal = [self.lang.tokens[t] for t in np.flatnonzero(state.legal_mask)]
        got = self.lang.tokens[self._tok_of_sym[syms[pos]]]
        raise TokenStreamError(
            f"token {got} at position {pos} breaks the grammar: at this "
            f"{g.KIND_NAMES[state.kind]} slot only {', '.join(legal)} are legal", pos)

    # -- images <-> tokens ---------------------------------------------------------------------
    def encode(self, img: np.ndarray) -> CodedImage:
        """Encode one uint8 image, grey (H, W) or RGB (H, W, 3)."""
        img = check_image(img)
        return self.encode_batch([img])[0]

    def encode_batch(self, images: Sequence[np.ndarray] | np.ndarray) -> list[CodedImage]:
        """Encode many images (fast path for a stack of same-shape images)."""
        if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype == np.uint8:
            if images.ndim == 4 and images.shape[-1] not in (1, 3):
                raise ImageError(f"images must be (N, H, W) or (N, H, W, 3), got {images.shape}")
            batch = images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images
            if batch.shape[0] and batch.shape[1] and batch.shape[2]:
                return self.encode_coefficients(self.coefficients(batch), *batch.shape[1:3])
        imgs = [check_image(im) for im in images]
        out: list[CodedImage | None] = [None] * len(imgs)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(imgs):
            groups.setdefault(im.shape, []).append(i)
        for shape, idx in groups.items():
            coded = self.encode_coefficients(self.coefficients(np.stack([imgs[i] for i in idx])),
                                             shape[0], shape[1])
            for i, cimg in zip(idx, coded, strict=True):
                out[i] = cimg
        return out  # type: ignore[return-value]

    def decode(self, seq: CodedImage, n_tokens: int | None = None) -> np.ndarray:
        """Decode a sequence (or its first ``n_tokens`` tokens) to a uint8 image."""
        return self.decode_batch([seq], n_tokens)[0]

    def decode_batch(
        self, seqs: Sequence[CodedImage], n_tokens: int | None = None
    ) -> list[np.ndarray]:
        """Decode many sequences; same-shape runs share one batched inverse transform."""
        out: list[np.ndarray | None] = [None] * len(seqs)
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(seqs):
            h = s.header
            groups.setdefault((h.height, h.width, h.channels), []).append(i)
        for (h, w, _), idx in groups.items():
            coefs = self.decode_coefficients([seqs[i] for i in idx], n_tokens)
            for i, im in zip(idx, self.images(coefs, h, w), strict=True):
                out[i] = im
        return out  # type: ignore[return-value]

    # -- slots and states ----------------------------------------------------------------------
    def slots(self, seq: CodedImage) -> Slots:
        """Slot and legal-token mask of every position of ``seq``, plus one past its end.

        Arrays have ``len(seq) + 1`` entries; the last is the slot the next token would fill
        (kind ``done`` when the sequence is complete).
        """
        self._check_header(seq.header)
        h = seq.header
        geo = self.geometry(h.height, h.width)
        syms = self._symbols(seq)
        n = len(syms)
        out_int = np.empty((n + 1, 5), np.int64)
        out_pos = np.empty((n + 1, 2))
        out_legal = np.empty(n + 1, np.int64)
        err = coder.replay_slots(syms, h.n_planes, self.lang.code,
                                 int(self.refinement == "immediate"), h.channels,
                                 geo.n_coef, *self._grammar_args(geo), geo.block_slot,
                                 geo.quad_slot, geo.coef_slot, out_int, out_pos, out_legal,
                                 geo.context_tables, np.zeros((0, g.N_CONTEXT), np.int8))
        if err >= 0:
            self._raise_stream_error(syms, int(err), h, geo)
        legal = self.lang.mask_from_symbols(out_legal)
        return Slots(*(out_int[:, i] for i in range(5)), out_pos[:, 0], out_pos[:, 1], legal)

    def context(self, seq: CodedImage) -> np.ndarray:
        """int8 (len(seq) + 1, N_CONTEXT): the decoder-state features
        (:func:`wavar.codec.grammar.context_of`) before every token of ``seq``, plus one past
        its end: what a decoder that has read the tokens so far knows about the unit each token
        decides."""
        self._check_header(seq.header)
        h = seq.header
        geo = self.geometry(h.height, h.width)
        syms = self._symbols(seq)
        n = len(syms)
        out = np.empty((n + 1, g.N_CONTEXT), np.int8)
        err = coder.replay_slots(syms, h.n_planes, self.lang.code,
                                 int(self.refinement == "immediate"), h.channels,
                                 geo.n_coef, *self._grammar_args(geo), geo.block_slot,
                                 geo.quad_slot, geo.coef_slot, np.empty((n + 1, 5), np.int64),
                                 np.empty((n + 1, 2)), np.empty(n + 1, np.int64),
                                 geo.context_tables, out)
        if err >= 0:
            self._raise_stream_error(syms, int(err), h, geo)
        return out

    def state(self, header: Header) -> ScanState:
        """A fresh scan state for a sequence with this header."""
        return ScanState(self, header)

    def batch_state(self, height: int, width: int, channels: int,
                    m_tilde: Sequence[int] | np.ndarray) -> BatchScanState:
        """Fresh scan states of B same-shape sequences stepped together (for the sampler)."""
        return BatchScanState(self, height, width, channels, m_tilde)

    def random_sequence(self, header: Header, rng: np.random.Generator) -> CodedImage:
        """A complete legal sequence drawn uniformly over each legal mask (for tests)."""
        geo = self.geometry(header.height, header.width)
        c = header.channels
        bound = header.n_planes * c * geo.n_coef * 3 + 1
        out = np.empty(bound, np.int64)
        n = coder.random_legal(rng.random(bound), header.n_planes, self.lang.code,
                               int(self.refinement == "immediate"), c, geo.n_coef,
                               *self._grammar_args(geo), out)
        return CodedImage(self._tok_of_sym[out[:n]].astype(np.uint8), header)


class ScanState:
    """The grammar state of one sequence: legal mask, next slot, and ``push(token)``.

    >>> codec = WaveletCodec()
    >>> st = codec.state(codec.header(28, 28, 1, m_tilde=3))
    >>> st.slot["kind"], st.slot["plane"]
    ('block4x4', 0)
    """

    def __init__(self, codec: WaveletCodec, header: Header) -> None:
        codec._check_header(header)
        self.codec = codec
        self.header = header
        self.geo = codec.geometry(header.height, header.width)
        self.mem = coder._state(codec.lang.code, int(codec.refinement == "immediate"),
                                header.channels, self.geo.n_coef, header.n_planes)
        self.position = 0

    @property
    def kind(self) -> int:
        return int(self.mem[g.H_KIND])

    @property
    def done(self) -> bool:
        return self.kind == g.DONE

    @property
    def legal_mask(self) -> np.ndarray:
        """bool (vocab_size,): which tokens are legal next (all False when done)."""
        geo = self.geo
        m = g.legal_symbols(self.mem, geo.scan_index, geo.parent, geo.n_desc, geo.is_ll)
        bits = int(self.codec.lang.mask_from_symbols(np.array(m)))
        return np.array([(bits >> t) & 1 for t in range(self.codec.lang.vocab_size)], bool)

    @property
    def slot(self) -> dict:
        """The slot the next token fills: plane, channel, level, orientation, kind, y, x."""
        if self.done:
            return {"kind": "done", "plane": self.header.n_planes}
        geo = self.geo
        si, sp = np.empty(5, np.int64), np.empty(2)
        g.slot_of(self.mem, geo.scan_index, geo.block_slot, geo.quad_slot, geo.coef_slot, si, sp)
        return {"plane": int(si[0]), "channel": int(si[1]), "level": int(si[2]),
                "orientation": int(si[3]), "kind": g.KIND_NAMES[int(si[4])],
                "y": float(sp[0]), "x": float(sp[1])}

    def _push_symbol(self, sym: int) -> int:
        geo = self.geo
        return g.push(self.mem, sym, geo.scan_index, geo.parent, geo.children, geo.n_desc,
                      geo.is_ll)

    def push(self, token: int) -> None:
        """Consume one token; raises :class:`TokenStreamError` if it is not legal here."""
        lang = self.codec.lang
        if not 0 <= token < lang.vocab_size:
            raise TokenStreamError(
                f"token {token} at position {self.position} is not in the vocabulary",
                self.position)
        r = self._push_symbol(int(lang.symbols[token]))
        if r == g.ERR_DONE:
            raise TokenStreamError(
                f"token at position {self.position} comes after the end of the sequence",
                self.position)
        if r == g.ERR_ILLEGAL:
            raise TokenStreamError(
                f"token {lang.tokens[token]} at position {self.position} breaks the grammar",
                self.position)
        self.position += 1


class BatchScanState:
    """Grammar states of B sequences stepped together (for the sampler).

    All sequences share the image shape and codec; each has its own m~ (hence its own number
    of bit-planes). ``legal()`` and ``slots()`` describe the next position of every sequence;
    ``push(tokens)`` consumes one token per sequence (negative = leave that row alone).
    """

    def __init__(self, codec: WaveletCodec, height: int, width: int, channels: int,
                 m_tilde: Sequence[int] | np.ndarray) -> None:
        self.codec = codec
        self.height, self.width, self.channels = height, width, channels
        self.geo = codec.geometry(height, width)
        mt = np.asarray(m_tilde, np.int64)
        self.m_tilde = mt
        self.n_planes = np.maximum(mt - codec.final_exponent, 0)
        size = g.state_size(channels, self.geo.n_coef)
        self.mems = np.empty((len(mt), size), np.int32)
        imm = int(codec.refinement == "immediate")
        for i in range(len(mt)):
            g.init_state(self.mems[i], codec.lang.code, imm, channels, self.geo.n_coef,
                         int(self.n_planes[i]))
        self._tok_mask = codec.lang
        self._sym_of_tok = codec.lang.to_symbols()

    def __len__(self) -> int:
        return len(self.mems)

    @property
    def done(self) -> np.ndarray:
        return self.mems[:, g.H_KIND] == g.DONE

    def legal(self) -> np.ndarray:
        """int64 (B,) bitmasks over token ids (0 for finished sequences)."""
        out = np.empty(len(self.mems), np.int64)
        geo = self.geo
        g.batch_legal(self.mems, geo.scan_index, geo.parent, geo.n_desc, geo.is_ll, out)
        return self.codec.lang.mask_from_symbols(out)

    def slots(self) -> tuple[np.ndarray, np.ndarray]:
        """(int64 (B, 5) plane/channel/level/orientation/kind, float64 (B, 2) y/x)."""
        b = len(self.mems)
        si, sp = np.empty((b, 5), np.int64), np.empty((b, 2))
        geo = self.geo
        g.batch_slots(self.mems, geo.scan_index, geo.block_slot, geo.quad_slot, geo.coef_slot,
                      si, sp)
        return si, sp

    def context(self) -> np.ndarray:
        """int64 (B, N_CONTEXT): every row's decoder-state features at its cursor (zeros for
        finished rows); see :func:`wavar.codec.grammar.context_of`."""
        out = np.empty((len(self.mems), g.N_CONTEXT), np.int64)
        geo = self.geo
        g.batch_context(self.mems, geo.scan_index, geo.parent, *geo.context_tables, out)
        return out

    def push(self, tokens: np.ndarray) -> None:
        """Push one token per row; raises TokenStreamError naming the first bad row."""
        tokens = np.asarray(tokens, np.int64)
        syms = np.where(tokens >= 0, self._sym_of_tok[np.clip(tokens, 0, None)], -1)
        out = np.empty(len(self.mems), np.int64)
        geo = self.geo
        g.batch_push(self.mems, syms, geo.scan_index, geo.parent, geo.children, geo.n_desc,
                     geo.is_ll, out)
        bad = np.flatnonzero((out == g.ERR_ILLEGAL) | ((out == g.ERR_DONE) & (tokens >= 0)))
        if bad.size:
            i = int(bad[0])
            raise TokenStreamError(f"row {i}: token {int(tokens[i])} is not legal here")
