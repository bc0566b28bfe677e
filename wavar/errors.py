"""Exceptions raised for bad user input. Each names the problem; none is an ``assert``."""


class WavarError(Exception):
    """Base class of every error wavar raises for bad input or missing resources."""


class TokenStreamError(WavarError, ValueError):
    """A token sequence breaks the grammar of its language.

    ``position`` is the index of the first offending token.
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class ImageError(WavarError, ValueError):
    """An image has an unsupported dtype, shape or mode, or is empty."""


class FileFormatError(WavarError, ValueError):
    """A coded-image file or checkpoint is truncated, corrupted or not ours."""


class DatasetError(WavarError):
    """A dataset is missing, or its cache is unreadable."""


class CheckpointError(WavarError):
    """A checkpoint is missing, truncated or corrupted."""


class ModelMismatchError(WavarError, ValueError):
    """A compressed file (.wvc) was coded with another model than the one given."""


class SamplingMemoryError(WavarError, ValueError):
    """A generation's key/value cache would outgrow the device's free memory (raised before
    anything is allocated; the message says how many images a call fits)."""


class DeviceMismatchError(WavarError, ValueError):
    """A compressed file (.wvc) coded on a GPU is decoded where that GPU's arithmetic is not."""
