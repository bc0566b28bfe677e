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

It also says how many images one generation can take before its key/value cache outgrows the
device's free memory (:func:`images_per_call`): a lossless CIFAR-10 row holds ~17,900 positions,
55-110 MB of cache, so a batch that suits Fashion-MNIST can ask a GPU or a laptop for 100 GB.

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
    # a windowed model's attention, said once for either loop
    window = (f"; each row sees its last {c.attn_window} positions and the class prefix"
              if c.attn_window else "")
    if blocker:
        return SamplingPlan("cpu", "model", "pytorch", "none", "pytorch", why={
            "loop": f"grammar on the host: {blocker}",
            "step": "the model's decode_step; a forced prefix the rows share: one prefill",
            "attention": "PyTorch, over the span of the cache the rows have filled (finished "
                         "rows compacted away)" + window,
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
    why["attention"] += window
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


# --------------------------------------------------------------------------------------------
# memory: the key/value cache is what grows with the rows and their length

#: share of the free memory a generation's cache is planned to take (the rest: activations,
#: logits, the grammar's state, the allocator's slack)
CACHE_SHARE = 0.8
#: share above which :func:`~wavar.sample.generate` refuses a generation before allocating:
#: above the planning share, because a batch planned once meets a little less free memory
#: after an earlier batch (an H100 kept 0.3 GiB of 78: a 1,231-image batch was refused at 1,226)
REFUSE_SHARE = 0.9


def token_limit(model, options: SamplingOptions) -> int:
    """Most tokens a row of this generation can hold: the cache's length."""
    limit = model.config.max_seq_len
    return limit if options.max_tokens is None else min(limit, options.max_tokens)


def cache_bytes(model, rows: int, limit: int, element_size: int | None = None) -> int:
    """Bytes of the key/value cache of ``rows`` rows of up to ``limit`` tokens
    (:meth:`~wavar.model.transformer.WaveletGPT.new_cache`), in the parameters' precision
    unless ``element_size`` says otherwise (``wavar compress`` keeps float32)."""
    c, p = model.config, next(model.parameters())
    return 2 * c.n_layer * rows * c.n_kv_head * (limit + 1) * (c.n_embd // c.n_head) \
        * (element_size or p.element_size())


def free_memory(device: torch.device | str) -> int | None:
    """Bytes a generation can still allocate on ``device``: on a GPU the driver's free memory
    plus what PyTorch holds unused; on the CPU the kernel's MemAvailable; None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    return None


def rows_that_fit(row_bytes: int, device: torch.device, share: float = CACHE_SHARE
                  ) -> tuple[int | None, int | None]:
    """How many rows of ``row_bytes`` of cache fit in ``share`` of ``device``'s free memory,
    and that free memory; ``(None, None)`` where it is unknown."""
    free = free_memory(device)
    return (None, None) if free is None else (int(free * share) // row_bytes, free)


def images_per_call(model, options: SamplingOptions, device: torch.device | str | None = None,
                    share: float = CACHE_SHARE) -> tuple[int | None, str]:
    """The most images (labels) one :func:`~wavar.sample.generate` call can take on ``device``
    (default: the model's) before its key/value cache outgrows ``share`` of the free memory
    (planning: ``CACHE_SHARE``; refusing: ``REFUSE_SHARE``), and why: ``(None, ...)`` where the
    free memory is unknown. Guidance doubles the rows (each image has an unguided twin)."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    limit = token_limit(model, options)
    twins = 2 if options.guided else 1
    row = cache_bytes(model, 1, limit)
    n, free = rows_that_fit(row * twins, device, share)
    if n is None:
        return None, f"the free memory of {device} is unknown"
    return n, (f"an image's key/value cache takes {size_text(row * twins)} ({limit:,} positions"
               + (", with its unguided twin" if twins == 2 else "") + f"); {device} has "
               f"{size_text(free)} free, {share:.0%} of it for the cache: {n:,} images "
               "a call")


def size_text(n: float) -> str:
    """Bytes as the memory messages print them (MiB or GiB)."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
