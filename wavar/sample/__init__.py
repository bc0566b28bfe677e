"""Sampling from a wavar model: decoded images (:func:`sample_images`), token sequences
(:func:`wavar.sample.generate.generate`), and the plan of code paths a generation takes
(:func:`plan`).

>>> from wavar import WaveletGPT
>>> from wavar.sample import sample_images
>>> model = WaveletGPT.from_pretrained("fashion-mnist")          # doctest: +SKIP
>>> images = sample_images(model, "Sneaker", n=16, seed=0)       # doctest: +SKIP

Imports are lazy, so that the numba-only parts (:mod:`wavar.sample.gpu_grammar`) load without
torch. (``wavar.sample.generate`` is the module of :func:`~wavar.sample.generate.generate`.)
"""

from typing import Any

__all__ = ["Machine", "Region", "Samples", "SamplingOptions", "SamplingPlan", "decode",
           "decode_prefixes", "plan", "prefix_tokens", "sample_images"]

_HOMES = {"Machine": "planning", "SamplingPlan": "planning", "plan": "planning",
          "Region": "options", "SamplingOptions": "options"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(f"wavar.sample.{_HOMES.get(name, 'generate')}"), name)
    raise AttributeError(f"module 'wavar.sample' has no attribute {name!r}")
