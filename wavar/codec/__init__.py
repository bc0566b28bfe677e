"""The wavelet-language codec: transforms, vocabularies, scan, grammar, coder, file format."""

from wavar.codec.codec import (
    BatchScanState,
    CodedImage,
    Header,
    ScanState,
    Slots,
    WaveletCodec,
    padded_side,
)
from wavar.codec.tokens import LANGUAGES, ZEROBLOCK, ZEROTREE, Language, get_language

__all__ = [
    "BatchScanState", "CodedImage", "Header", "LANGUAGES", "Language", "ScanState", "Slots",
    "WaveletCodec", "ZEROBLOCK", "ZEROTREE", "get_language", "padded_side",
]
