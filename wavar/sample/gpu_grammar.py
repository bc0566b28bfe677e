"""The grammar on the GPU: :mod:`wavar.codec.grammar`'s own functions, compiled by numba-cuda.

There is no second implementation of the state machine. The functions of ``grammar.py`` are
re-bound to a copy of that module's namespace in which every helper they call is its CUDA
device-function twin, so the very same source runs on the CPU (numba) for the encoder, decoder
and training data, and on the GPU (numba-cuda) for the sampler: one thread per sequence, states
in a (B, state_size) int32 device array, launched on PyTorch's current stream so a generation
step needs no host round trip.

:func:`step_kernel` needs numba's CUDA target (the ``numba-cuda`` package and a CUDA driver);
``NUMBA_ENABLE_CUDASIM=1`` runs it in numba's simulator on the CPU, which is how the tests
check it against the CPU stepping.
"""

from __future__ import annotations

import functools
import types

from wavar.codec import grammar as g
from wavar.codec.grammar import (
    DONE,
    ERR_DONE,
    ERR_ILLEGAL,
    H_KIND,
    H_NTOK,
    H_PLANE,
    context_of,
    legal_symbols,
    push,
    slot_of,
)

# grammar functions a step calls, in dependency order
_DEVICE_FUNCTIONS = ("_offsets", "_mag_offset", "_land", "_advance", "legal_symbols",
                     "_set_significant", "push", "slot_of", "_floor_log2", "_rel",
                     "_mean_bucket", "context_of")


def _step_row(i, mems, toks, tok_sym, scan_index, parent, children, n_desc, is_ll, block_slot,
              quad_slot, coef_slot, max_plane, max_tokens, legal_out, slot_out, pos_out, live,
              status):
    """Row i: push its token (if any), then write its next legal mask, slot and liveness.

    The grammar functions named here are bound to their CUDA twins by :func:`step_kernel`.
    """
    mem = mems[i]
    t = toks[i]
    if t >= 0 and live[i]:
        r = push(mem, tok_sym[t], scan_index, parent, children, n_desc, is_ll, True)
        if r == ERR_ILLEGAL or r == ERR_DONE:
            status[0] = i + 1  # a caller bug (a token outside the mask): reported, not hidden
    alive = (mem[H_KIND] != DONE and mem[H_PLANE] < max_plane
             and mem[H_NTOK] < max_tokens)
    live[i] = alive
    if not alive:
        legal_out[i] = 1  # finished rows ride along until compaction: any valid input will do
        for j in range(5):
            slot_out[i, j] = 0
        pos_out[i, 0] = 0.0
        pos_out[i, 1] = 0.0
        return
    m = legal_symbols(mem, scan_index, parent, n_desc, is_ll)
    bits = 0
    for v in range(tok_sym.shape[0]):
        if (m >> tok_sym[v]) & 1:
            bits |= 1 << v
    legal_out[i] = bits
    slot_of(mem, scan_index, block_slot, quad_slot, coef_slot, slot_out[i], pos_out[i])


def _step_row_context(i, mems, context_out, scan_index, parent, neighbours, siblings,
                      block_ring, quad_ring):
    """Row i's decoder-state features at its cursor (zeros once it is done)."""
    context_of(mems[i], scan_index, parent, neighbours, siblings, block_ring, quad_ring,
               context_out[i])


def _step_with_context(mems, toks, tok_sym, scan_index, parent, children, n_desc, is_ll,
                       block_slot, quad_slot, coef_slot, max_plane, max_tokens, legal_out,
                       slot_out, pos_out, live, status, context_out, neighbours, siblings,
                       block_ring, quad_ring):
    i = cuda.grid(1)  # noqa: F821 - bound by step_kernel
    if i < mems.shape[0]:
        _step_row(i, mems, toks, tok_sym, scan_index, parent, children, n_desc, is_ll,
                  block_slot, quad_slot, coef_slot, max_plane, max_tokens, legal_out, slot_out,
                  pos_out, live, status)
        _step_row_context(i, mems, context_out, scan_index, parent, neighbours, siblings,
                          block_ring, quad_ring)


def _step(mems, toks, tok_sym, scan_index, parent, children, n_desc, is_ll, block_slot, quad_slot,
          coef_slot, max_plane, max_tokens, legal_out, slot_out, pos_out, live, status):
    i = cuda.grid(1)  # noqa: F821 - bound by step_kernel
    if i < mems.shape[0]:
        _step_row(i, mems, toks, tok_sym, scan_index, parent, children, n_desc, is_ll,
                  block_slot, quad_slot, coef_slot, max_plane, max_tokens, legal_out, slot_out,
                  pos_out, live, status)


@functools.cache
def step_kernel(context: bool = False):
    """The CUDA kernel ``step[blocks, threads, stream](mems, toks, ..., live, status)``.

    Arguments as :func:`_step_row`; one thread per row. ``toks[i] < 0`` pushes nothing (the
    first call only computes the masks and slots of fresh states). With ``context`` the kernel
    also writes each row's decoder-state features (``context_out`` (B, N_CONTEXT), then the
    geometry's ``context_tables``, after ``status``); a kernel of its own, so models without
    them keep the lean one.
    """
    import numpy as np

    if not hasattr(np, "row_stack"):  # numba-cuda 0.2x still registers the removed alias
        np.row_stack = np.vstack
    from numba import cuda

    ns = dict(vars(g))
    for name in _DEVICE_FUNCTIONS:
        f = getattr(g, name).py_func
        ns[name] = cuda.jit(device=True)(
            types.FunctionType(f.__code__, ns, name, f.__defaults__))
    for f in (_step_row, _step_row_context):
        ns[f.__name__] = cuda.jit(device=True)(types.FunctionType(f.__code__, ns, f.__name__))
    ns["cuda"] = cuda
    kernel = _step_with_context if context else _step
    return cuda.jit(types.FunctionType(kernel.__code__, ns, "step"))


def available() -> bool:
    """True when numba can compile and launch CUDA kernels here."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - no numba-cuda, no driver: the CPU path serves
        return False
