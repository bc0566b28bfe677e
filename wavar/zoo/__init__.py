"""The model zoo: pretrained weights shipped with wavar, behind one table and one factory.

>>> from wavar import WaveletGPT
>>> model = WaveletGPT.from_pretrained("fashion-mnist")   # doctest: +SKIP

Each entry is a folder under ``wavar/zoo/weights`` holding ``model.safetensors`` and
``config.json`` (the model config, the codec parameters and the data statistics the sampler
uses). The sha256 guards against a damaged or half-copied file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from wavar.errors import CheckpointError

WEIGHTS = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    dataset: str  # what it was trained on (a wavar.data.datasets name)
    description: str
    sha256: str

    @property
    def path(self) -> Path:
        return WEIGHTS / self.name


MODELS: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("mnist", "mnist",
             "MNIST, Haar 2^-3, zero-block; 4 x 128, 1 KV head (0.72M): the bundled CPU model",
             "99867a0ceaf1d91557b91bbe966ba725f432462be574519231afc68ac6291cb6"),
    ZooEntry("fashion-mnist", "fashion-mnist",
             "Fashion-MNIST, bior4.4 2^-4, zero-block; 4 x 128, 1 KV head (0.72M): the bundled "
             "CPU model",
             "6ff1e6cb44e406e0387bac3628d0bc4d316c17f12cdd96a13fbdf2630f0f680e"),
    ZooEntry("mnist-large", "mnist", "MNIST, Haar 2^-3, zero-block; 6 x 224, 2 KV heads (3.4M)",
             "ee924f77ce411722290e69a0c54ac1621db3a9ec188616aced2bde15f4e52d64"),
    ZooEntry("fashion-mnist-large", "fashion-mnist",
             "Fashion-MNIST, bior4.4 2^-4, zero-block; 6 x 224, 2 KV heads (3.4M)",
             "0867ac96ffaf867d4ffd0551df53dca8314f245046fb014d869fdc4d3857a410"),
)}


def resolve(name: str, verify: bool = True) -> Path:
    """Folder of zoo model ``name``; raises :class:`CheckpointError` for an unknown name."""
    if name not in MODELS:
        raise CheckpointError(f"unknown model {name!r}: not a path and not in the zoo "
                              f"({', '.join(MODELS)})")
    entry = MODELS[name]
    weights = entry.path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"zoo model {name!r} is missing its weights ({weights})")
    if verify:
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != entry.sha256:
            raise CheckpointError(f"zoo model {name!r} is damaged: sha256 {digest[:12]}... "
                                  f"is not {entry.sha256[:12]}...")
    return entry.path
