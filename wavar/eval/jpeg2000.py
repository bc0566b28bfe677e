"""JPEG 2000 baseline (OpenJPEG through Pillow) that the wavelet codec is compared against.

All codestreams are raw J2K (``no_jp2=True``): no JP2 box wrapper, so the only overhead
is the J2K main header and the tile-part headers, which :func:`payload_bits` strips.

Encoder settings, chosen to make the baseline fair on the project's tiny images:

* ``num_resolutions`` = ``min(6, floor(log2(min(H, W))) + 1)`` (see
  :func:`num_resolutions_for`). OpenJPEG's default of 6 resolutions (5 DWT levels) needs
  both sides >= 32; asking for more levels than the size allows makes the encoder fail
  ("broken data stream"), e.g. 6 resolutions on a 28x28 image.
* ``mct=1`` for RGB (the reversible RCT for lossless, the irreversible ICT for lossy).
  Pillow's default is ``mct=0``, i.e. channels coded independently, which wastes bits on
  correlated colour channels and would make the baseline look worse than it is.
* Lossless: reversible 5/3 wavelet (``irreversible=False``), a single quality layer.
* Lossy: irreversible 9/7 wavelet, ``quality_mode="rates"`` with one layer whose
  compression ratio is searched for (see :func:`encode_at_rate`).
"""

from __future__ import annotations

import io
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from wavar.eval.metrics import psnr
from wavar.imageio import check_image

__all__ = [
    "CodestreamLayout",
    "TilePart",
    "decode",
    "encode_at_rate",
    "encode_lossless",
    "num_resolutions_for",
    "parse_codestream",
    "payload_bits",
    "rd_curve",
    "time_lossless_roundtrip",
]

# J2K marker codes (second byte; the first is always 0xFF).
_SOC = 0x4F  # start of codestream
_SOT = 0x90  # start of tile-part
_SOD = 0x93  # start of data
_EOC = 0xD9  # end of codestream
_MAX_RESOLUTIONS = 6  # OpenJPEG's default


# --------------------------------------------------------------------------------------
# Encoding / decoding
# --------------------------------------------------------------------------------------


def _check_image(img: np.ndarray) -> np.ndarray:
    """Validate a uint8 grey ``(H, W)`` or RGB ``(H, W, 3)`` image and make it contiguous."""
    return np.ascontiguousarray(check_image(np.asarray(img)))


def num_resolutions_for(height: int, width: int, max_resolutions: int = _MAX_RESOLUTIONS) -> int:
    """Number of JPEG 2000 resolution levels valid for an image of this size.

    OpenJPEG requires ``2 ** (num_resolutions - 1) <= min(H, W)``, so this returns
    ``min(max_resolutions, floor(log2(min(H, W))) + 1)``: 6 for 32x32, 5 for 28x28,
    1 (no DWT at all) for a 1-pixel-wide image.

    Parameters
    ----------
    height, width : int
        Image size in pixels (both >= 1).
    max_resolutions : int, optional
        Upper bound, OpenJPEG's default of 6.

    Returns
    -------
    int
        Number of resolutions (= DWT levels + 1).
    """
    side = min(int(height), int(width))
    if side < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    # floor(log2(side)) + 1 == side.bit_length() for side >= 1, without float rounding.
    return min(max_resolutions, side.bit_length())


def _encode(img: np.ndarray, **options: object) -> bytes:
    """Encode a validated image to a raw J2K codestream with the baseline's fixed options."""
    h, w = img.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(img).save(
        buf,
        format="JPEG2000",
        no_jp2=True,
        num_resolutions=num_resolutions_for(h, w),
        mct=1 if img.ndim == 3 else 0,
        **options,
    )
    return buf.getvalue()


def encode_lossless(img: np.ndarray) -> bytes:
    """Losslessly encode an image as a raw J2K codestream (reversible 5/3, RCT for RGB).

    Parameters
    ----------
    img : np.ndarray
        uint8 image, grey ``(H, W)`` or RGB ``(H, W, 3)``.

    Returns
    -------
    bytes
        J2K codestream (starts with SOC ``FF4F``, ends with EOC ``FFD9``);
        ``decode(encode_lossless(img))`` equals ``img`` exactly.
    """
    return _encode(_check_image(img), irreversible=False)


def _encode_lossy(img: np.ndarray, ratio: float) -> bytes:
    return _encode(img, irreversible=True, quality_mode="rates", quality_layers=[float(ratio)])


def encode_at_rate(img: np.ndarray, bits: float, iters: int = 12) -> bytes:
    """Lossy-encode an image so that its payload is close to, but not above, ``bits``.

    OpenJPEG's rate control (``quality_mode="rates"``, one layer with compression ratio
    ``raw_bits / target_bits``) is approximate and counts headers, so a fixed ratio does
    not hit a payload target. Instead this bisects ``log(ratio)`` over ``[1, raw_bits/8]``
    for ``iters`` encodes and returns the codestream with the *largest payload not
    exceeding* ``bits``. The achieved size is whatever :func:`payload_bits` says; the
    rate-distortion plots use that, not the target.

    If even the strongest compression overshoots (OpenJPEG has a floor: packet headers
    and the first code-block passes), the smallest codestream found is returned, so the
    result can exceed ``bits`` for tiny targets. A target above what ratio 1 gives
    (OpenJPEG's "no truncation" of the quantised 9/7 coefficients) returns the ratio-1
    stream, which is near- but not exactly lossless.

    Parameters
    ----------
    img : np.ndarray
        uint8 image, grey ``(H, W)`` or RGB ``(H, W, 3)``.
    bits : float
        Target payload bits (codestream bits minus headers, see :func:`payload_bits`).
    iters : int, optional
        Number of bisection encodes after the two bracketing ones.

    Returns
    -------
    bytes
        Raw J2K codestream (irreversible 9/7, ICT for RGB).
    """
    img = _check_image(img)
    if not bits > 0:
        raise ValueError(f"target bits must be positive, got {bits}")
    raw_bits = img.size * 8

    best: tuple[int, bytes] | None = None  # largest payload <= bits
    smallest: tuple[int, bytes] | None = None

    def attempt(ratio: float) -> int:
        nonlocal best, smallest
        data = _encode_lossy(img, ratio)
        p = payload_bits(data)
        if p <= bits and (best is None or p > best[0]):
            best = (p, data)
        if smallest is None or p < smallest[0]:
            smallest = (p, data)
        return p

    lo, hi = 0.0, math.log(max(raw_bits / 8.0, 1.0))  # log ratio: 1 .. ~8 bits total
    if attempt(1.0) <= bits:
        return best[1]  # the target is above the largest stream we would produce
    attempt(math.exp(hi))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if attempt(math.exp(mid)) <= bits:
            hi = mid  # fits: try a smaller ratio (more bits)
        else:
            lo = mid
    return (best or smallest)[1]


def decode(data: bytes) -> np.ndarray:
    """Decode a J2K codestream (or JP2 file) to a uint8 array.

    Parameters
    ----------
    data : bytes
        Codestream as produced by :func:`encode_lossless` or :func:`encode_at_rate`.

    Returns
    -------
    np.ndarray
        uint8 ``(H, W)`` for grey, ``(H, W, 3)`` for RGB.
    """
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode not in ("L", "RGB"):
            raise ValueError(f"unsupported decoded mode {im.mode!r} (expected L or RGB)")
        return np.array(im, dtype=np.uint8)


# --------------------------------------------------------------------------------------
# Codestream parsing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TilePart:
    """One tile-part of a J2K codestream.

    Attributes
    ----------
    offset : int
        Byte offset of its SOT marker.
    tile_index : int
        ``Isot``: the tile this part belongs to.
    header_bytes : int
        SOT marker through SOD marker inclusive (SOT segment, e.g. PLT/COD/QCD, SOD).
    payload_bytes : int
        Packet data after SOD up to the end of the tile-part (includes packet headers,
        which are part of the entropy-coded data, not marker segments).
    """

    offset: int
    tile_index: int
    header_bytes: int
    payload_bytes: int


@dataclass(frozen=True)
class CodestreamLayout:
    """Byte accounting of a J2K codestream.

    ``main_header_bytes + sum(header_bytes + payload_bytes of tile parts) + eoc_bytes``
    equals ``total_bytes``.
    """

    total_bytes: int
    main_header_bytes: int
    tile_parts: tuple[TilePart, ...]
    eoc_bytes: int = 2

    @property
    def payload_bytes(self) -> int:
        """Packet-data bytes over all tile-parts."""
        return sum(tp.payload_bytes for tp in self.tile_parts)

    @property
    def header_bytes(self) -> int:
        """Everything that is not packet data: main header, tile-part headers, EOC."""
        return self.total_bytes - self.payload_bytes


def _has_no_length(code: int) -> bool:
    # Markers without a length field: SOC, SOD, EOC, EPH and the reserved 0xFF30-0xFF3F.
    return code in (_SOC, _SOD, _EOC, 0x92) or 0x30 <= code <= 0x3F


def _skip_segment(data: bytes, pos: int, limit: int, where: str) -> int:
    """Return the position after the marker segment starting at ``pos``."""
    if pos + 2 > limit:
        raise ValueError(f"truncated codestream: marker expected at byte {pos} ({where})")
    if data[pos] != 0xFF:
        raise ValueError(
            f"expected a marker (0xFF..) at byte {pos} ({where}), got {data[pos]:#04x}"
        )
    code = data[pos + 1]
    if _has_no_length(code):
        return pos + 2
    if pos + 4 > limit:
        raise ValueError(f"truncated marker segment 0xFF{code:02X} at byte {pos} ({where})")
    (length,) = struct.unpack_from(">H", data, pos + 2)
    if length < 2 or pos + 2 + length > limit:
        raise ValueError(
            f"marker segment 0xFF{code:02X} at byte {pos} has length {length}, "
            f"running past byte {limit} ({where})"
        )
    return pos + 2 + length


def parse_codestream(codestream: bytes) -> CodestreamLayout:
    """Walk the J2K marker segments and account for every byte.

    Layout expected (ISO/IEC 15444-1 Annex A): ``SOC``, main-header marker segments
    (``SIZ``, ``COD``, ``QCD``, ``COM``, ...) up to the first ``SOT``; then tile-parts,
    each ``SOT`` (whose ``Psot`` is the tile-part length from the SOT marker, or 0 for
    "runs to EOC", allowed only for the last one), tile-part header segments, ``SOD``
    and packet data; finally ``EOC``.

    Parameters
    ----------
    codestream : bytes
        Raw J2K codestream (not a JP2 file).

    Returns
    -------
    CodestreamLayout

    Raises
    ------
    ValueError
        On anything that does not follow that layout: missing SOC/SOT/SOD/EOC,
        truncated or overlong segments, bytes after EOC.
    """
    data = bytes(codestream)
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != _SOC:
        raise ValueError("not a J2K codestream: missing SOC marker (0xFF4F) at byte 0")

    # Main header: everything up to the first SOT.
    pos = 2
    while True:
        if pos + 2 > n:
            raise ValueError("truncated codestream: no SOT marker after the main header")
        if data[pos] == 0xFF and data[pos + 1] == _SOT:
            break
        if data[pos] == 0xFF and data[pos + 1] in (_SOD, _EOC):
            raise ValueError(f"marker 0xFF{data[pos + 1]:02X} at byte {pos} before any SOT")
        pos = _skip_segment(data, pos, n, "main header")
    main_header_bytes = pos

    tile_parts: list[TilePart] = []
    while True:
        if pos + 2 > n:
            raise ValueError("truncated codestream: missing EOC marker (0xFFD9)")
        if data[pos] != 0xFF or data[pos + 1] not in (_SOT, _EOC):
            raise ValueError(f"expected SOT or EOC at byte {pos}, got {data[pos : pos + 2].hex()}")
        if data[pos + 1] == _EOC:
            if pos + 2 != n:
                raise ValueError(f"{n - pos - 2} unexpected bytes after EOC at byte {pos}")
            break
        start = pos
        if start + 12 > n:
            raise ValueError(f"truncated SOT segment at byte {start}")
        lsot, isot, psot, _tpsot, _tnsot = struct.unpack_from(">HHIBB", data, start + 2)
        if lsot != 10:
            raise ValueError(f"SOT at byte {start} has Lsot={lsot}, expected 10")
        if psot == 0:
            # Last tile-part, runs up to the final EOC.
            if data[n - 2 :] != b"\xff\xd9":
                raise ValueError(f"SOT at byte {start} has Psot=0 but the stream lacks EOC")
            end = n - 2
        else:
            end = start + psot
            if end > n:
                raise ValueError(
                    f"SOT at byte {start}: Psot={psot} runs past the end of the codestream"
                )
        # Tile-part header: marker segments up to SOD.
        pos = start + 12
        while True:
            if pos + 2 > end:
                raise ValueError(f"tile-part at byte {start} has no SOD marker")
            if data[pos] == 0xFF and data[pos + 1] == _SOD:
                pos += 2
                break
            pos = _skip_segment(data, pos, end, f"tile-part header at byte {start}")
        tile_parts.append(
            TilePart(
                offset=start, tile_index=isot, header_bytes=pos - start, payload_bytes=end - pos
            )
        )
        pos = end

    return CodestreamLayout(
        total_bytes=n, main_header_bytes=main_header_bytes, tile_parts=tuple(tile_parts)
    )


def payload_bits(codestream: bytes) -> int:
    """Bits of packet data in a J2K codestream: total minus all marker-segment headers.

    Counts, for each tile-part, the bytes after its SOD marker up to its end (``Psot``,
    or EOC when ``Psot == 0``). Excluded: SOC, the main header (SIZ, COD, QCD, COM, ...),
    SOT and other tile-part header segments, SOD and EOC. Packet headers stay in (they
    are inside the packet data); a PPM/PPT segment would move them to a header, but
    Pillow never writes one.

    Parameters
    ----------
    codestream : bytes
        Raw J2K codestream.

    Returns
    -------
    int
        ``8 * payload bytes``.

    Raises
    ------
    ValueError
        If the codestream is malformed (see :func:`parse_codestream`).
    """
    return 8 * parse_codestream(codestream).payload_bytes


# --------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------


def _as_image_list(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    out = [_check_image(im) for im in images]
    if not out:
        raise ValueError("no images given")
    return out


def rd_curve(
    images: Sequence[np.ndarray] | np.ndarray, bits_list: Sequence[float]
) -> list[dict[str, float]]:
    """Rate-distortion points of the JPEG 2000 baseline over a set of images.

    Parameters
    ----------
    images : sequence of np.ndarray or np.ndarray
        uint8 grey or RGB images (a batch array iterates over its first axis).
    bits_list : sequence of float
        Target payload bits per image, one curve point each (see :func:`encode_at_rate`).

    Returns
    -------
    list of dict
        One dict per target, in order, with ``target_bits``; ``bits`` (mean achieved
        payload bits); ``total_bits`` (mean codestream bits incl. headers); ``bpp``
        (mean payload bits per pixel); ``psnr`` (mean of per-image PSNR in dB, ``inf``
        if any image came back exact); ``n_images``.
    """
    imgs = _as_image_list(images)
    points = []
    for target in bits_list:
        payloads, totals, psnrs, bpps = [], [], [], []
        for im in imgs:
            data = encode_at_rate(im, target)
            p = payload_bits(data)
            payloads.append(p)
            totals.append(8 * len(data))
            bpps.append(p / (im.shape[0] * im.shape[1]))
            psnrs.append(psnr(im, decode(data)))
        points.append(
            {
                "target_bits": float(target),
                "bits": float(np.mean(payloads)),
                "total_bits": float(np.mean(totals)),
                "bpp": float(np.mean(bpps)),
                "psnr": float(np.mean(psnrs)),
                "n_images": len(imgs),
            }
        )
    return points


def time_lossless_roundtrip(
    images: Sequence[np.ndarray] | np.ndarray, warmup: int = 3
) -> dict[str, float]:
    """Time lossless encode + decode of every image once.

    Parameters
    ----------
    images : sequence of np.ndarray or np.ndarray
        uint8 grey or RGB images.
    warmup : int, optional
        Number of images round-tripped first, untimed (library loading, caches).

    Returns
    -------
    dict
        ``images_per_s``, ``seconds`` (wall time of the timed loop), ``n_images`` and
        ``mean_payload_bits`` / ``mean_total_bits`` of the lossless codestreams
        (computed after the timed loop, so not included in ``seconds``).
    """
    imgs = _as_image_list(images)
    for im in imgs[: max(0, warmup)]:
        decode(encode_lossless(im))
    streams = []
    t0 = time.perf_counter()
    for im in imgs:
        data = encode_lossless(im)
        decode(data)
        streams.append(data)
    seconds = time.perf_counter() - t0
    return {
        "images_per_s": len(imgs) / seconds if seconds > 0 else math.inf,
        "seconds": seconds,
        "n_images": len(imgs),
        "mean_payload_bits": float(np.mean([payload_bits(s) for s in streams])),
        "mean_total_bits": float(np.mean([8 * len(s) for s in streams])),
    }
