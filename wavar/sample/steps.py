"""What a sampling step feeds the model, and the model's own (PyTorch) step.

A step of either loop: the grammar gives each row's legal tokens and its :class:`StepInputs`,
a step (:class:`TorchStep`, or the fused :class:`~wavar.sample.fused_step.FusedDecodeStep`)
turns the previous tokens and those inputs into logits, and a draw picks the tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wavar.codec.grammar import N_CONTEXT


@dataclass
class StepInputs:
    """What the grammar state knows about the slot at each row's cursor, input to the model
    beside the previous token: ``slots`` (B, 5) [plane, channel, level, orientation, node kind]
    and ``pos`` (B, 2), the (y, x) centre of the slot's support; for a model that reads them
    (``config.decoder_state``), ``context`` (B, N_CONTEXT), the decoder-state features of the
    unit at the cursor (:func:`wavar.codec.grammar.context_of`), else None.

    numpy arrays (from the host grammar) or tensors (the GPU grammar kernel writes them in
    place, in field order). Every per-row input is a field here: a loop's grammar step fills
    it, the steps read it, and :meth:`map` carries it through device transfers, guidance
    twins and compaction.
    """

    slots: Any
    pos: Any
    context: Any = None

    @classmethod
    def zeros(cls, n: int, device: torch.device, context: bool = False) -> StepInputs:
        """Buffers for ``n`` rows (the GPU grammar kernel's outputs)."""
        return cls(torch.zeros(n, 5, dtype=torch.long, device=device),
                   torch.zeros(n, 2, dtype=torch.float32, device=device),
                   torch.zeros(n, N_CONTEXT, dtype=torch.long, device=device) if context
                   else None)

    def __iter__(self) -> Iterator[Any]:
        """The fields that are present, in order."""
        return (x for x in (getattr(self, f.name) for f in fields(self)) if x is not None)

    def map(self, fn: Callable[[Any], Any]) -> StepInputs:
        """``fn`` applied to every present field."""
        return StepInputs(*(None if (x := getattr(self, f.name)) is None else fn(x)
                            for f in fields(self)))

    def to(self, device: torch.device) -> StepInputs:
        """Tensors on ``device`` (positions in fp32, the model's phase precision)."""
        return self.map(lambda a: torch.as_tensor(
            a, device=device, dtype=torch.float32 if a.dtype.kind == "f" else None))

    def twins(self) -> StepInputs:
        """Each row twice (the conditional rows, then their unconditional twins)."""
        return self.map(lambda x: torch.cat([x, x]))


def conditions(model, labels: np.ndarray, m_tilde: np.ndarray, guided: bool,
               device: torch.device) -> tuple[Tensor, Tensor]:
    """The rows' labels and m~ as tensors; under guidance followed by the unconditional twins
    (the null label)."""
    lab = torch.as_tensor(labels, device=device)
    mt = torch.as_tensor(m_tilde, device=device)
    if guided:
        lab = torch.cat([lab, torch.full_like(lab, model.config.num_classes)])
        mt = torch.cat([mt, mt])
    return lab, mt


def prefill(model, cache, labels: Tensor, m_tilde: Tensor, inputs: StepInputs,
            known: Tensor | None = None, tokens_per_call: int = 1 << 20) -> Tensor:
    """Raw logits (B, V) of token P of every row: the model's prefill over the class prefix
    and the P tokens ``known`` (B, P) (none: the first token). ``inputs`` holds the slots of
    tokens 0..P, (B, P + 1, ...), or (B, ...) without known tokens. Rows go through in groups
    of at most ``tokens_per_call`` positions, which bounds the activations' memory."""
    if known is None:
        return model.prefill(cache, labels, m_tilde, inputs.slots, inputs.pos,
                             context=inputs.context)
    rows = max(1, tokens_per_call // (known.size(1) + 2))
    out = []
    for a in range(0, len(labels), rows):
        part = slice(a, a + rows)
        sub = type(cache)(cache.k[:, part], cache.v[:, part])  # views: filled in place
        out.append(model.prefill(sub, labels[part], m_tilde[part], inputs.slots[part],
                                 inputs.pos[part], tokens=known[part],
                                 context=None if inputs.context is None
                                 else inputs.context[part]))
    return torch.cat(out)


class TorchStep:
    """The model's own decode step (PyTorch; ``model.decode_step`` looked up at each call)."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, cache, prev_token: Tensor, inputs: StepInputs, m_tilde: Tensor,
                 t: int | Tensor, live: Tensor | None = None) -> Tensor:
        """Raw logits (B, V) for token ``t`` given token t-1 ``prev_token`` (B,) (negative
        reads as 0). ``t``: one step for all rows (an int: over the cache as given) or each
        row's own (B,); rows where ``live`` (B,) is False are skipped."""
        if live is not None:
            t = torch.where(live, t, -1)
        return self.model.decode_step(cache, prev_token.clamp(min=0), inputs.slots, inputs.pos,
                                      m_tilde, t, context=inputs.context)
