"""How a generation runs: one decision, made once, with a reason for each choice.

:func:`plan` looks at the model, the settings and the machine and picks

* the **loop**: ``"gpu"`` steps every row's grammar on the device (numba-cuda), so a token
  costs the host nothing; ``"cpu"`` steps it on the host between model steps (any device);
* the **step** that turns the previous tokens into logits: ``"model"``, the model's own
  ``decode_step`` (PyTorch), or ``"fused"``, the Triton step of :mod:`wavar.sample.fused_step`;
* the **attention** inside it: ``"triton"``, the per-row flash-decoding kernel, or
  ``"pytorch"``;
* the **graphs**: ``"step"`` replays each whole step as one CUDA graph, ``"none"`` launches
  eagerly;
* the **draw**: ``"kernel"``, inside the fused step's last kernel, or ``"pytorch"``, the
  filters of :mod:`wavar.sample.filters` and their draw.

Where a fast path does not apply, the plan takes the general one and says why: every model
samples on every machine. :class:`Machine` holds the facts about the machine, so a test can ask
what a CUDA machine with Triton would choose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from wavar.codec import WaveletCodec, codec_from_params
from wavar.model.kernels import attention_kernel_limit
from wavar.sample.fused_step import DRAW_VOCAB, fused_step_limit
from wavar.sample.options import SamplingOptions

CHOICES = {"loop": ("cpu", "gpu"), "step": ("model", "fused"), "attention": ("pytorch", "triton"),
           "graphs": ("none", "step"), "draw": ("pytorch", "kernel")}


@dataclass(frozen=True)
class Machine:
    """What the machine offers the model's tensors: a CUDA device, numba's CUDA target (the
    grammar kernel) and Triton. On a CPU device neither of the last two serves, so
    :meth:`of` reports them False there without looking."""

    cuda: bool = False
    numba_cuda: bool = False
    triton: bool = False

    @classmethod
    def of(cls, device: torch.device | str) -> Machine:
        if torch.device(device).type != "cuda":
            return cls()
        from wavar.model.kernels import triton_available
        from wavar.sample.gpu_grammar import available

        return cls(cuda=True, numba_cuda=available(), triton=triton_available())


@dataclass(frozen=True)
class SamplingPlan:
    """The code paths of one generation (see the module's docstring), each with its reason in
    ``why``. ``str(plan)`` is a table of both; :meth:`replace` changes choices by hand (tests,
    benchmarks). A plan that cannot run (a CPU loop with a fused step, a kernel draw without
    the fused step ...) is refused on construction."""

    loop: str
    step: str
    attention: str
    graphs: str
    draw: str
    why: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.loop == "cpu" and (self.step, self.attention, self.graphs, self.draw) != (
                "model", "pytorch", "none", "pytorch"):
            raise ValueError("the CPU loop runs the model's step with PyTorch attention, no "
                             f"graphs and the PyTorch draw, not {self}")
        if self.step == "fused" and self.attention != "triton":
            raise ValueError("the fused step attends with the Triton kernel")
        if self.draw == "kernel" and self.step != "fused":
            raise ValueError("only the fused step draws in its kernel")

    def replace(self, **choices: str) -> SamplingPlan:
        """This plan with ``choices`` changed, their reason "set by the caller"."""
        why = {**self.why, **{name: "set by the caller" for name in choices}}
        return dataclasses.replace(self, **choices, why=why)

    def __str__(self) -> str:
        return "\n".join(f"{name:<9} {getattr(self, name):<7} {self.why.get(name, '')}".rstrip()
                         for name in CHOICES)


def plan(model, options: SamplingOptions | None = None,
         machine: Machine | None = None) -> SamplingPlan:
    """The :class:`SamplingPlan` for sampling ``model`` with ``options`` on ``machine``
    (default: the machine of the model's parameters)."""
    options = options or SamplingOptions()
    if machine is None:
        machine = Machine.of(next(model.parameters()).device)
    c = model.config
    if not machine.cuda:
        blocker = "the model is on the CPU"
    elif not isinstance(codec_from_params(c.codec), WaveletCodec):
        blocker = "no compiled grammar for the raster language"
    elif options.region is not None or options.ll_init:
        blocker = ("region completion" if options.region is not None else "LL initialisation"
                   ) + " narrows each choice with CPU-side forcing tables"
    elif not machine.numba_cuda:
        blocker = "numba's CUDA target (numba-cuda) is not available"
    else:
        blocker = None
    if blocker:
        return SamplingPlan("cpu", "model", "pytorch", "none", "pytorch", why={
            "loop": f"grammar on the host: {blocker}",
            "step": "the model's decode_step; a forced prefix the rows share: one prefill",
            "attention": "PyTorch, over the span of the cache the rows have filled (finished "
                         "rows compacted away)",
            "graphs": "the host steps the grammar between model steps",
            "draw": "PyTorch filters and draw"})

    why = {"loop": "grammar on the GPU (numba-cuda): no host round trip per token"
                   + ("; forced prefix tokens are stepped too (no prefill on this loop)"
                      if options.prefix is not None else "")}
    attention_limit = attention_kernel_limit(c.n_embd // c.n_head)
    if not machine.triton:
        attention_limit = "Triton is not available"
    if attention_limit:
        attention, why["attention"] = "pytorch", f"reference, each row over its own prefix: " \
                                                 f"{attention_limit}"
    else:
        attention, why["attention"] = "triton", "flash-decoding, each row over its own prefix"
    fused_limit = fused_step_limit(c) if machine.triton else "Triton is not available"
    if fused_limit:
        step, why["step"] = "model", f"the model's decode_step; fused step: {fused_limit}"
    else:
        step, why["step"] = "fused", "Triton kernels (width <= 128, power-of-two heads)"
    why["graphs"] = "the whole step (model, draw, grammar kernel) is one CUDA graph"
    if step != "fused":
        draw_limit = "the model's step returns logits"
    elif options.guided:
        draw_limit = f"guidance (cfg {options.cfg}) mixes each row with its twin's logits"
    elif options.scheduled:
        draw_limit = "the temperature or top-p changes with the bit-plane"
    elif options.filtered:
        draw_limit = "top-k / top-p filters"
    elif c.vocab_size > DRAW_VOCAB:
        draw_limit = f"a vocabulary of {c.vocab_size} > {DRAW_VOCAB} tokens"
    else:
        draw_limit = None
    if draw_limit:
        draw, why["draw"] = "pytorch", f"PyTorch filters and draw: {draw_limit}"
    else:
        draw, why["draw"] = "kernel", "in the fused step's last kernel (plain sampling)"
    return SamplingPlan("gpu", step, attention, "step", draw, why=why)
