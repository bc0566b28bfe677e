"""The raster language: one token per pixel value, the same-budget baseline (issue 5).

An image is read in raster order (row-major; colour images channel-interleaved per pixel:
R, G, B of pixel 0, then of pixel 1, ...), one token per uint8 value (256 tokens). Every
sequence has exactly H * W * C tokens, the code is lossless, and there is no grammar: all 256
tokens are legal until the end. A model trained on it is the PixelCNN-style pixel baseline for
the wavelet models, with the same transformer, conditioning and guidance; its bits per token
are bits per dimension.

:class:`RasterCodec` offers the parts of :class:`~wavar.codec.WaveletCodec` that training,
sampling and evaluation use. m~ has no meaning here and is 0 everywhere.

>>> import numpy as np
>>> codec = RasterCodec()
>>> img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
>>> seq = codec.encode(img)
>>> seq.tokens[:6].tolist()                     # R, G, B of pixel (0, 0), then of (0, 1)
[0, 1, 2, 3, 4, 5]
>>> bool((codec.decode(seq) == img).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wavar.codec import grammar as g
from wavar.codec.bitstream import CodedImage, Header, padded_side
from wavar.codec.codec import Slots
from wavar.errors import ImageError, TokenStreamError
from wavar.imageio import check_image

RASTER = "raster"

# Legal-token mask meaning "every token": all bits set. Masks are int64 bitmasks read with
# two's-complement sign extension (bit v >= 63 is the sign bit), so -1 covers any vocabulary.
ALL_LEGAL = -1


@dataclass(frozen=True)
class RasterLanguage:
    """The raster vocabulary: token v is the pixel value v."""

    name: str = RASTER
    vocab_size: int = 256


class RasterCodec:
    """uint8 images <-> raster token sequences (one token per pixel value, lossless)."""

    lang = RasterLanguage()
    language = RASTER
    lossless = True

    def params(self) -> dict[str, Any]:
        """Codec parameters as a JSON-able dict (recorded in model configs)."""
        return {"language": RASTER}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RasterCodec:
        if params.get("language") != RASTER:
            raise ValueError(f"not raster codec parameters: {params!r}")
        return cls()

    def __repr__(self) -> str:
        return "RasterCodec()"

    def header(self, height: int, width: int, channels: int, m_tilde: int = 0) -> Header:
        """The header of a raster sequence (``m_tilde`` must be 0: it has no meaning here)."""
        if int(m_tilde) != 0:
            raise ValueError(f"raster sequences have m_tilde 0, got {m_tilde}")
        return Header(height, width, channels, 0, wavelet="none", language=RASTER,
                      refinement="none", final_exponent=0, levels=0)

    def _check_header(self, h: Header) -> None:
        if h.language != RASTER:
            raise ValueError(f"sequence was coded in the {h.language} language, not raster; "
                             "use codec_from_params")

    # -- images <-> tokens ---------------------------------------------------------------------
    def encode(self, img: np.ndarray) -> CodedImage:
        """Encode one uint8 image, grey (H, W) or RGB (H, W, 3)."""
        img = check_image(img)
        c = 3 if img.ndim == 3 else 1
        return CodedImage(img.reshape(-1).copy(), self.header(img.shape[0], img.shape[1], c))

    def encode_batch(self, images: Sequence[np.ndarray] | np.ndarray) -> list[CodedImage]:
        """Encode many images (a stack (N, H, W[, 3]) or a list of images)."""
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] not in (1, 3):
            raise ImageError(f"images must be (N, H, W) or (N, H, W, 3), got {images.shape}")
        return [self.encode(im) for im in images]

    def _tokens(self, seq: CodedImage) -> np.ndarray:
        self._check_header(seq.header)
        toks = np.asarray(seq.tokens)
        if toks.ndim != 1:
            raise TokenStreamError(f"tokens must be a 1-D array, got shape {toks.shape}")
        bad = np.flatnonzero((toks < 0) | (toks > 255))
        if bad.size:
            raise TokenStreamError(f"token {int(toks[bad[0]])} at position {int(bad[0])} is not "
                                   "a pixel value (0..255)", int(bad[0]))
        h = seq.header
        n = h.height * h.width * h.channels
        if len(toks) > n:
            raise TokenStreamError(f"token at position {n} comes after the end of the sequence "
                                   f"(complete after {n} tokens)", n)
        return toks

    def decode(self, seq: CodedImage, n_tokens: int | None = None) -> np.ndarray:
        """Decode a sequence (or its first ``n_tokens`` tokens) to a uint8 image.

        Pixels a prefix has not reached yet are 0.
        """
        h = seq.header
        toks = self._tokens(seq)[:n_tokens]
        flat = np.zeros(h.height * h.width * h.channels, np.uint8)
        flat[: len(toks)] = toks
        shape = (h.height, h.width, 3) if h.channels == 3 else (h.height, h.width)
        return flat.reshape(shape)

    def decode_batch(
        self, seqs: Sequence[CodedImage], n_tokens: int | None = None
    ) -> list[np.ndarray]:
        """Decode many sequences."""
        return [self.decode(s, n_tokens) for s in seqs]

    # -- slots and states ----------------------------------------------------------------------
    def slots(self, seq: CodedImage) -> Slots:
        """Slot and legal mask of every position of ``seq``, plus one past its end.

        Every pixel value is a ``coefficient`` slot of plane 0, level 0, orientation 0 (LL) in
        its channel; (y, x) is the pixel centre in the frame of the wavelet slots (the centred
        padded square). The legal mask is :data:`ALL_LEGAL` until the end, 0 after it.
        """
        h = seq.header
        toks = self._tokens(seq)
        si, sp = raster_slots(np.arange(len(toks) + 1), h.height, h.width, h.channels)
        legal = np.where(si[:, 4] == g.DONE, 0, ALL_LEGAL).astype(np.int64)
        return Slots(*(si[:, i] for i in range(5)), sp[:, 0], sp[:, 1], legal)

    def batch_state(self, height: int, width: int, channels: int,
                    m_tilde: Sequence[int] | np.ndarray) -> RasterBatchState:
        """States of B sequences stepped together (for the sampler); m~ must be 0."""
        return RasterBatchState(height, width, channels, m_tilde)


def raster_slots(t: np.ndarray, height: int, width: int,
                 channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots of raster positions ``t`` (n,): (int64 (n, 5), float64 (n, 2) y/x).

    A position at or past ``height * width * channels`` gets kind ``done`` and (y, x) = 0.
    """
    t = np.asarray(t, np.int64)
    n = height * width * channels
    done = t >= n
    pixel, channel = np.divmod(np.minimum(t, n - 1), channels)
    row, col = np.divmod(pixel, width)
    side = padded_side(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    si = np.zeros((len(t), 5), np.int64)  # plane, level and orientation stay 0
    si[:, 1] = np.where(done, 0, channel)
    si[:, 4] = np.where(done, g.DONE, g.COEF)
    sp = np.stack([(top + row + 0.5) / side, (left + col + 0.5) / side], 1)
    sp[done] = 0.0
    return si, sp


class RasterBatchState:
    """Raster states of B sequences stepped together: the interface of ``BatchScanState``.

    ``mems`` (B, 1) int64 holds the tokens consumed by each row; the caller may re-index its
    rows (``states.mems = states.mems[idx]``). ``legal()`` is :data:`ALL_LEGAL` for every live
    row: there is no grammar.
    """

    def __init__(self, height: int, width: int, channels: int,
                 m_tilde: Sequence[int] | np.ndarray) -> None:
        mt = np.asarray(m_tilde, np.int64)
        if mt.any():
            raise ValueError("raster sequences have m_tilde 0")
        self.height, self.width, self.channels = height, width, channels
        self.length = height * width * channels
        self.mems = np.zeros((len(mt), 1), np.int64)

    def __len__(self) -> int:
        return len(self.mems)

    @property
    def done(self) -> np.ndarray:
        return self.mems[:, 0] >= self.length

    def legal(self) -> np.ndarray:
        """int64 (B,) masks: :data:`ALL_LEGAL` (-1), 0 for finished sequences."""
        return np.where(self.done, 0, ALL_LEGAL).astype(np.int64)

    def slots(self) -> tuple[np.ndarray, np.ndarray]:
        """(int64 (B, 5) plane/channel/level/orientation/kind, float64 (B, 2) y/x)."""
        return raster_slots(self.mems[:, 0], self.height, self.width, self.channels)

    def push(self, tokens: np.ndarray) -> None:
        """Push one token per row (negative = leave the row alone); raises TokenStreamError
        naming the first row whose token is no pixel value or comes after its end."""
        tokens = np.asarray(tokens, np.int64)
        live = tokens >= 0
        bad = np.flatnonzero((tokens > 255) | (live & self.done))
        if bad.size:
            i = int(bad[0])
            raise TokenStreamError(f"row {i}: token {int(tokens[i])} is not legal here")
        self.mems[live, 0] += 1
