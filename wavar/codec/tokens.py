"""Vocabularies of the wavelet languages (docs/design.md §1, "The 7 tokens").

Token ids are per language; the grammar works on shared internal symbols
(:mod:`wavar.codec.grammar`), and the tables here map between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wavar.codec import grammar as g


@dataclass(frozen=True)
class Language:
    """A wavelet language: its name, token names and the id -> internal symbol map."""

    name: str
    code: int  # grammar.ZEROBLOCK or grammar.ZEROTREE
    tokens: tuple[str, ...]
    symbols: tuple[int, ...]  # internal symbol of each token id

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def to_symbols(self) -> np.ndarray:
        """int64 array: token id -> internal symbol."""
        return np.array(self.symbols, np.int64)

    def from_symbols(self) -> np.ndarray:
        """int64 array: internal symbol -> token id (-1 where the language lacks it)."""
        out = np.full(8, -1, np.int64)
        out[list(self.symbols)] = np.arange(len(self.symbols))
        return out

    def mask_from_symbols(self, sym_mask: np.ndarray) -> np.ndarray:
        """Convert bitmasks over internal symbols into bitmasks over token ids."""
        sym_mask = np.asarray(sym_mask, np.int64)
        out = np.zeros_like(sym_mask)
        for tok, sym in enumerate(self.symbols):
            out |= ((sym_mask >> sym) & 1) << tok
        return out


ZEROBLOCK = Language(
    name="zeroblock",
    code=g.ZEROBLOCK,
    tokens=(
        "Group4x4",
        "Group2x2",
        "Insignificant",
        "NowSignificantPos",
        "NowSignificantNeg",
        "NextAccuracy0",
        "NextAccuracy1",
    ),
    symbols=(g.S_G4, g.S_G2, g.S_INS, g.S_POS, g.S_NEG, g.S_ACC0, g.S_ACC1),
)

ZEROTREE = Language(
    name="zerotree",
    code=g.ZEROTREE,
    tokens=(
        "ZeroTree",
        "Insignificant",
        "NowSignificantPos",
        "NowSignificantNeg",
        "NextAccuracy0",
        "NextAccuracy1",
    ),
    symbols=(g.S_ZTR, g.S_INS, g.S_POS, g.S_NEG, g.S_ACC0, g.S_ACC1),
)

LANGUAGES = {lang.name: lang for lang in (ZEROBLOCK, ZEROTREE)}


def get_language(name: str) -> Language:
    """Look a language up by name ('zeroblock' or 'zerotree')."""
    try:
        return LANGUAGES[name]
    except KeyError:
        raise ValueError(
            f"unknown language {name!r}; choose one of {', '.join(LANGUAGES)}"
        ) from None
