"""The model's configuration: one dataclass, saved as JSON beside the weights.

Size presets live at the bottom of :mod:`wavar.model.transformer`, next to the model they size.
This module imports nothing heavy, so a config can be read without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`wavar.model.transformer.WaveletGPT`.

    Parameters
    ----------
    vocab_size : int
        Tokens of the language (7 zero-block, 6 zero-tree, 256 raster); training sets it from
        the codec.
    n_layer, n_head, n_embd : int
        Transformer depth, attention heads, width.
    max_seq_len : int
        Most tokens in a sequence (the class prefix position comes on top).
    num_classes : int
        Class labels; index ``num_classes`` is the null label used for classifier-free guidance.
    class_dropout : float
        Probability, in training, of replacing a label by the null label.
    dropout : float
        Residual and attention dropout.
    n_planes_max, max_level, n_kinds, n_channels : int
        Sizes of the slot vocabularies: bit-planes from the top, wavelet levels (0 = LL),
        node kinds (4x4 block, 2x2 quad, insignificant coefficient, refinement), colour channels.
    m_tilde_min, m_tilde_max : int
        Range of the per-image initial-threshold exponent m~; values outside are clamped.
    fourier_features : int
        Frequencies of the learned Fourier map of a slot's (y, x) centre.
    rope : bool
        Rotary embeddings for the position in the sequence. Without them the model still knows
        where it is in the image from the slot embedding, only not how many tokens came before.
    attn_window : int
        Positions each position attends to, itself included, besides its sequence's class
        prefix (position 0, always seen: the label lives there alone); 0 = the whole past.
        Sliding-window attention: at CIFAR-10's ~11,000 tokens an image most of a step's
        FLOPs are attention, and a model that reads the decoder's state looks back only a few
        hundred positions (benchmarks/results/eval/attention_window_cifar10.json). The KV cache
        keeps every position all the same (sampling reads only the window of it).
    decoder_state : int
        Version of the decoder-state features the model reads at every step (what a decoder
        that has read the tokens so far knows about the slot: neighbours' significance, the
        parent's magnitude, ...; :func:`wavar.codec.grammar.context_of`); 0 = none (the models
        trained before they existed).
    codec : dict
        The codec parameters the sequences were made with. Opaque to the model; recorded so a
        saved model says which language it speaks.
    sampling : dict
        The sampling settings measured best for this model (``cfg``, ``temperature``,
        ``top_p`` (the nucleus filter): a value or one per bit-plane), which ``wavar sample``
        uses where its command line names none; empty: plain sampling (1, 1, no filter). Not
        part of the architecture.
    """

    vocab_size: int = 7
    n_layer: int = 6
    n_head: int = 4
    n_kv_head: int = 0  # key/value heads (grouped-query attention); 0 = n_head
    n_embd: int = 256
    max_seq_len: int = 4096
    num_classes: int = 10
    class_dropout: float = 0.1
    dropout: float = 0.0
    n_planes_max: int = 32
    max_level: int = 12
    n_kinds: int = 4
    n_channels: int = 3
    m_tilde_min: int = -16
    m_tilde_max: int = 24
    fourier_features: int = 32
    rope: bool = True
    attn_window: int = 0
    decoder_state: int = 0
    codec: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sampling) - {"cfg", "temperature", "top_p"})
        if unknown:
            raise ValueError(f"sampling recommends only cfg, temperature and top_p, not "
                             f"{unknown}")
        if self.n_kv_head == 0:
            self.n_kv_head = self.n_head
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head="
                             f"{self.n_kv_head}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if self.rope and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rope needs an even head size, got {self.n_embd // self.n_head}")
        if self.m_tilde_max < self.m_tilde_min:
            raise ValueError(f"m_tilde_max={self.m_tilde_max} < m_tilde_min={self.m_tilde_min}")
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "max_seq_len", "num_classes",
                     "n_planes_max", "n_kinds", "n_channels", "fourier_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.attn_window < 0:
            raise ValueError(f"attn_window must be >= 0 (0 = the whole past), got "
                             f"{self.attn_window}")
        if not 0.0 <= self.class_dropout <= 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1], got {self.class_dropout}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)
