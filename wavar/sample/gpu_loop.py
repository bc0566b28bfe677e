"""The sampling loop with the grammar on the GPU: no host round trip per token.

Every step stays on the device: the step (the model's, or the fused Triton step) for every row
at its own cache position (a finished row reads no cache, and the batch keeps its shape), the
draw (PyTorch, or inside the fused step's last kernel), and the grammar step of all rows (one
numba-cuda kernel, :mod:`wavar.sample.gpu_grammar`, on the same stream). With
``plan.graphs == "step"`` all of it is captured once as a CUDA graph and replayed at every
step; the host only looks every ``CHECK`` steps whether rows are still generating.
"""

from __future__ import annotations

import numpy as np
import torch

from wavar.codec import BatchScanState
from wavar.sample import gpu_grammar
from wavar.sample.draw import Draw, ForcedPrefix, PlaneSchedule, draw, draw_tokens
from wavar.sample.forcing import Forcing
from wavar.sample.options import SamplingOptions
from wavar.sample.planning import SamplingPlan
from wavar.sample.steps import StepInputs, TorchStep, conditions, prefill

CHECK = 16  # steps between the host's looks at whether any row is still generating


class DeviceGrammar:
    """Every row's scan state on the device, stepped by one numba-cuda kernel (one thread a
    row) on PyTorch's current stream: it pushes the rows' tokens ``tok`` (B,) (negative:
    nothing) and writes their next legal bitmasks ``legal`` (B,), :class:`StepInputs`
    ``inputs``, liveness ``live`` (B,) bool and, for a token outside its mask, ``status``."""

    def __init__(self, states: BatchScanState, tok: torch.Tensor, limit: int,
                 max_plane: int | None, device: torch.device, context: bool = False) -> None:
        n = len(states.mems)
        geo, lang = states.geo, states.codec.lang
        tables = [torch.as_tensor(np.ascontiguousarray(a), device=device)
                  for a in (lang.to_symbols().astype(np.int64), geo.scan_index, geo.parent,
                            geo.children, geo.n_desc, geo.is_ll, geo.block_slot, geo.quad_slot,
                            geo.coef_slot)]
        self.mems = torch.as_tensor(states.mems, device=device)
        self.legal = torch.zeros(n, dtype=torch.long, device=device)
        self.inputs = StepInputs.zeros(n, device, context)
        self.live = torch.ones(n, dtype=torch.bool, device=device)
        self.status = torch.zeros(1, dtype=torch.int32, device=device)
        plane_cap = np.iinfo(np.int32).max if max_plane is None else int(max_plane)
        # (first: it readies numba's CUDA target)
        self.kernel = gpu_grammar.step_kernel(context)
        from numba import cuda

        self.numba_cuda, self.on_cuda = cuda, device.type == "cuda"
        # the kernel's views of the buffers: numba's of CUDA tensors, numpy's of CPU ones
        # (numba's simulator)
        self.args = [cuda.as_cuda_array(x, sync=False) if self.on_cuda and torch.is_tensor(x)
                     else x.numpy() if torch.is_tensor(x) else x
                     for x in (self.mems, tok, *tables, plane_cap, limit, self.legal,
                               self.inputs.slots, self.inputs.pos, self.live, self.status,
                               *self.context_args(geo, device))]

    def context_args(self, geo, device: torch.device) -> list:
        """The decoder-state kernel's extra arguments: its output, then the tables it reads."""
        if self.inputs.context is None:
            return []
        return [self.inputs.context, *(torch.as_tensor(np.ascontiguousarray(a), device=device)
                                       for a in geo.context_tables)]

    def step(self) -> None:
        n = len(self.mems)
        threads = min(128, n)
        # PyTorch's current stream: the sampling stream, or a graph's capture stream
        stream = self.numba_cuda.external_stream(torch.cuda.current_stream().cuda_stream) \
            if self.on_cuda else 0
        self.kernel[-(-n // threads), threads, stream](*self.args)

    def check(self) -> None:
        if int(self.status.item()):
            raise RuntimeError(f"GPU grammar: row {int(self.status.item()) - 1} got an "
                               "illegal token")


class CapturedStep:
    """A whole step (``run``: in place on the loop's buffers) captured as one CUDA graph at the
    first call and replayed after, so a step costs the host one launch; ``enabled=False`` runs
    it eagerly. ``warm_up`` runs the library initialisation a capture must not see (on a side
    stream, rewriting the cache entries the replay will write); the generator advances at each
    replay as it would eagerly."""

    def __init__(self, run, warm_up, gen: torch.Generator, enabled: bool) -> None:
        self.run, self.warm_up, self.gen, self.enabled = run, warm_up, gen, enabled
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self) -> None:
        if not self.enabled:
            self.run()
            return
        if self.graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.warm_up()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            self.graph.register_generator_state(self.gen)
            with torch.cuda.graph(self.graph):
                self.run()
        self.graph.replay()


def gpu_loop(model, plan: SamplingPlan, options: SamplingOptions, states: BatchScanState,
             labels: np.ndarray, m_tilde: np.ndarray, limit: int, gen: torch.Generator,
             forced: ForcedPrefix | None = None,
             forcing: Forcing | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample up to ``limit`` tokens per row as ``plan`` says: (tokens (n, limit) int8, -1
    past each row's end; lengths (n,))."""
    device = next(model.parameters()).device
    if forcing is not None:
        raise ValueError("region completion and LL initialisation need the CPU loop")
    if plan.graphs == "step" and device.type != "cuda":
        raise ValueError("CUDA graphs need the model on a CUDA device")
    n = len(labels)
    guided = options.guided
    tok = torch.full((n,), -1, dtype=torch.long, device=device)  # this step's tokens
    t = torch.zeros(n, dtype=torch.long, device=device)  # each row's step
    out = torch.full((n, limit), -1, dtype=torch.int8, device=device)
    rows = torch.arange(n, device=device)
    grammar = DeviceGrammar(states, tok, limit, options.max_plane, device,
                            context=bool(model.config.decoder_state))
    legal, inputs, live = grammar.legal, grammar.inputs, grammar.live
    lab, mt = conditions(model, labels, m_tilde, guided, device)
    cache = model.new_cache(len(lab), limit, device=device)
    if plan.step == "fused":
        from wavar.sample.fused_step import FusedDecodeStep

        step = FusedDecodeStep(model)
    else:
        step = TorchStep(model)
    schedule = PlaneSchedule.of(options, device)
    if plan.draw == "kernel" and (guided or options.filtered or schedule or not step.can_draw):
        raise ValueError("the kernel draws plain samples of a vocabulary within a weight tile")

    def both(x: torch.Tensor) -> torch.Tensor:  # the conditional rows and their null twins
        return torch.cat([x, x]) if guided else x

    def plain_draw() -> Draw:
        return Draw.plain(legal, live, tok, out, model.config.vocab_size, options.temperature,
                          forced, gen)

    def finish(logits: torch.Tensor) -> None:  # draw, record, advance every row's step
        if plan.draw == "kernel":
            draw_tokens(logits, t, plain_draw())
            return
        tok.copy_(draw(logits, legal, options, gen, t, forced, schedule, inputs.slots[:, 0])
                  .masked_fill(~live, -1))
        out.index_put_((rows, t), tok.to(torch.int8))
        t.add_(1)

    def model_step() -> torch.Tensor:
        return step(cache, both(tok), inputs.twins() if guided else inputs, mt, both(t),
                    both(live))

    def whole_step() -> None:
        if plan.draw == "kernel":  # the step's last kernel draws, records and advances
            step(cache, tok, inputs, mt, t, live, draw=plain_draw())
        else:
            finish(model_step())
        grammar.step()

    grammar.step()  # masks and inputs of the fresh states
    finish(prefill(model, cache, lab, mt, inputs.twins() if guided else inputs))
    grammar.step()
    captured = CapturedStep(whole_step, model_step, gen, enabled=plan.graphs == "step")
    for i in range(1, limit):
        if i % CHECK == 0 and int(live.sum()) == 0:
            break
        captured()
    grammar.check()
    out_np = out.cpu().numpy()
    return out_np, (out_np >= 0).sum(1)
