"""Numba's thread pool must not undo torch's CPU thread count (a fresh interpreter each)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np, torch
torch.ones(512, 512) @ torch.ones(512, 512)  # torch's OpenMP runtime in use
torch.set_num_threads(1)
from wavar.codec import WaveletCodec
WaveletCodec(wavelet="haar").encode(np.arange(784, dtype=np.uint8).reshape(28, 28))
print(torch.get_num_threads())
"""


@pytest.mark.parametrize("first", ["torch", "wavar"])
def test_a_parallel_encode_keeps_torchs_thread_count(first):
    """Set before wavar is imported or after: the count stays what was set. (Before the fix,
    numba's OpenMP pool, started by the first parallel encode, set it to the core count.)"""
    # "wavar": imported before the count is set; "torch": after
    code = ("import wavar.codec\n" if first == "wavar" else "") + SCRIPT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.split() == ["1"]
