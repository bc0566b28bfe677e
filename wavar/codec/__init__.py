"""The wavelet-language codec: transforms, vocabularies, scan, grammar, coder, file format.

Plus the raster language (:mod:`wavar.codec.raster`), the pixel baseline; build either from
recorded parameters with :func:`codec_from_params`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wavar.codec.bitstream import CodedImage, Header, padded_side
from wavar.codec.codec import BatchScanState, ScanState, Slots, WaveletCodec
from wavar.codec.raster import RASTER, RasterBatchState, RasterCodec
from wavar.codec.tokens import LANGUAGES, ZEROBLOCK, ZEROTREE, Language, get_language

Codec = WaveletCodec | RasterCodec

# The keys of WaveletCodec.params(): recorded params may carry more (a model config's
# image_shape, classes, m~ statistics), which the factory leaves aside.
WAVELET_KEYS = ("wavelet", "language", "final_threshold", "refinement", "levels")


def codec_from_params(params: Mapping[str, Any]) -> Codec:
    """The codec whose ``params()`` are recorded in ``params`` (extra keys are ignored).

    >>> codec_from_params({"language": "raster", "image_shape": [28, 28]})
    RasterCodec()
    >>> codec_from_params({"wavelet": "haar", "classes": ["a"]}).wavelet
    'haar'
    """
    if params.get("language") == RASTER:
        return RasterCodec.from_params(dict(params))
    return WaveletCodec.from_params({k: params[k] for k in WAVELET_KEYS if k in params})


__all__ = [
    "BatchScanState", "Codec", "CodedImage", "Header", "LANGUAGES", "Language", "RASTER",
    "RasterBatchState", "RasterCodec", "ScanState", "Slots", "WaveletCodec", "ZEROBLOCK",
    "ZEROTREE", "codec_from_params", "get_language", "padded_side",
]
