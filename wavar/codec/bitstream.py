"""One coded image (:class:`Header` + tokens) and its file format (``.wvr``), with a checksum.

The codecs (:mod:`wavar.codec.codec`, :mod:`wavar.codec.raster`) build on these classes. The
classes and the format share a module because each needs the other (``CodedImage.save`` writes
the format, :func:`loads` builds a ``CodedImage``); apart, they were an import cycle.

File layout (little-endian)::

    magic   4s   b"WVAR"
    version u8   1
    height  u32, width u32, channels u8, m_tilde i8,
    wavelet u8, language u8, refinement u8, final_exponent i8, levels u8
    n_tok   u32
    tokens  ceil(n_tok / 2) bytes, two 4-bit token ids per byte (low nibble first)
    crc32   u32  of everything before it

Ids in the file are explicit (the tables below never reorder), so old files stay readable.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wavar.atomic import write_atomic
from wavar.errors import FileFormatError

MAGIC = b"WVAR"
VERSION = 1
_HEAD = struct.Struct("<4sBIIBbBBBbBI")
WAVELET_IDS = {"bior4.4": 0, "haar": 1, "cdf53": 2}
LANGUAGE_IDS = {"zeroblock": 0, "zerotree": 1}
REFINEMENT_IDS = {"deferred": 0, "immediate": 1}


@dataclass(frozen=True)
class Header:
    """What a decoder needs besides the tokens: image shape, m~ and the codec parameters.

    The first bit-plane threshold is ``2 ** (m_tilde - 1)``; the last is ``2 ** final_exponent``.
    """

    height: int
    width: int
    channels: int
    m_tilde: int
    wavelet: str = "bior4.4"
    language: str = "zeroblock"
    refinement: str = "deferred"
    final_exponent: int = -4
    levels: int = 4

    @property
    def side(self) -> int:
        """Side M of the padded square coefficient array."""
        return padded_side(self.height, self.width)

    @property
    def n_planes(self) -> int:
        return max(self.m_tilde - self.final_exponent, 0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CodedImage:
    """One coded image: token ids (uint8) plus its :class:`Header`."""

    tokens: np.ndarray
    header: Header
    _complete: bool | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, key: slice) -> CodedImage:
        """A prefix (or any slice) of the sequence with the same header."""
        return CodedImage(np.asarray(self.tokens[key], np.uint8), self.header)

    def to_bytes(self) -> bytes:
        return dumps(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> CodedImage:
        return loads(data)

    def save(self, path: str | os.PathLike) -> None:
        save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CodedImage:
        return load(path)


def padded_side(height: int, width: int) -> int:
    """Side of the power-of-two square (at least 4) an image is padded into."""
    return max(4, 1 << (max(height, width) - 1).bit_length())


def _inverse(table: dict[str, int]) -> dict[int, str]:
    return {v: k for k, v in table.items()}


def dumps(seq: CodedImage) -> bytes:
    """Serialise a :class:`CodedImage`."""
    h = seq.header
    toks = np.asarray(seq.tokens, np.uint8)
    n = len(toks)
    padded = np.zeros(n + (n & 1), np.uint8)
    padded[:n] = toks
    packed = (padded[0::2] | (padded[1::2] << 4)).astype(np.uint8)
    head = _HEAD.pack(MAGIC, VERSION, h.height, h.width, h.channels, h.m_tilde,
                      WAVELET_IDS[h.wavelet], LANGUAGE_IDS[h.language],
                      REFINEMENT_IDS[h.refinement], h.final_exponent, h.levels, n)
    body = head + packed.tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def loads(data: bytes) -> CodedImage:
    """Parse bytes written by :func:`dumps`; raises :class:`FileFormatError` on any damage."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise FileFormatError("not a wavar coded image (bad magic number)")
    if len(data) < _HEAD.size + 4:
        raise FileFormatError(f"file is truncated: {len(data)} bytes, header alone needs "
                              f"{_HEAD.size + 4}")
    (_, version, height, width, channels, m_tilde, wid, lid, rid, fexp, levels,
     n) = _HEAD.unpack_from(data)
    if version != VERSION:
        raise FileFormatError(f"unsupported format version {version} (this wavar reads "
                              f"{VERSION})")
    need = _HEAD.size + (n + 1) // 2 + 4
    if len(data) != need:
        raise FileFormatError(f"file is truncated or has trailing bytes: {len(data)} bytes, "
                              f"expected {need} for {n} tokens")
    (crc,) = struct.unpack_from("<I", data, need - 4)
    if zlib.crc32(data[: need - 4]) != crc:
        raise FileFormatError("file is corrupted (checksum mismatch)")
    try:
        wavelet = _inverse(WAVELET_IDS)[wid]
        language = _inverse(LANGUAGE_IDS)[lid]
        refinement = _inverse(REFINEMENT_IDS)[rid]
    except KeyError:
        raise FileFormatError("file names an unknown wavelet, language or refinement") from None
    if not (height and width and channels in (1, 3)):
        raise FileFormatError(f"bad image shape in header: {height}x{width}x{channels}")
    packed = np.frombuffer(data, np.uint8, (n + 1) // 2, _HEAD.size)
    toks = np.empty(2 * len(packed), np.uint8)
    toks[0::2], toks[1::2] = packed & 15, packed >> 4
    header = Header(height, width, channels, m_tilde, wavelet, language, refinement, fexp,
                    levels)
    return CodedImage(toks[:n].copy(), header)


def save(seq: CodedImage, path: str | os.PathLike) -> None:
    """Write atomically (:func:`wavar.atomic.write_atomic`): a crash never leaves half a file."""
    data = dumps(seq)
    write_atomic(path, lambda f: f.write(data))


def load(path: str | os.PathLike) -> CodedImage:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileFormatError(f"no such file: {path}") from None
    return loads(data)
