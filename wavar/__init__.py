"""wavar: autoregressive image generation in a wavelet language.

``import wavar`` stays light: the codec needs numpy, PyWavelets and numba; torch is imported
only when a model is used.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["CodedImage", "WaveletCodec", "WaveletGPT", "sample_images"]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import wavar` cheap and let torch stay optional.
    if name in ("CodedImage", "WaveletCodec"):
        from wavar import codec

        return getattr(codec, name)
    if name == "WaveletGPT":
        from wavar.model.transformer import WaveletGPT

        return WaveletGPT
    if name == "sample_images":
        from wavar.sample.generate import sample_images

        return sample_images
    raise AttributeError(f"module 'wavar' has no attribute {name!r}")
