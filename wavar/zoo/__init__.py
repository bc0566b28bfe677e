"""The model zoo: pretrained weights shipped with wavar, behind one table and one factory.

>>> from wavar import WaveletGPT
>>> model = WaveletGPT.from_pretrained("fashion-mnist")   # doctest: +SKIP

Each entry is a folder under ``wavar/zoo/weights`` holding ``model.safetensors`` (stored in
float16, half the bytes; loaded into float32), or for a model past git's 20 MB a file, shards
of it beside an index (``save_pretrained(..., max_shard_mb=19)``, :mod:`wavar.model.weights`),
and ``config.json`` (the model config, the codec parameters and the data statistics the sampler
uses). The sha256 (of the weight files' bytes, :func:`wavar.model.weights.digest`) guards
against a damaged or half-copied file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wavar.errors import CheckpointError
from wavar.model import weights

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
             "MNIST, Haar 2^-3, zero-block, decoder-state features; 8 x 256, 1 KV head (5.6M), "
             "4.5 H200-minutes: FID 35.5, 28.2 with a per-plane schedule; "
             "mnist-fine is better (its sequences 1.4x longer)",
             "ff77d682051bd26ff4e0a490b11ae2534a585e6aded00efbe0f43009310801f5"),
    ZooEntry("fashion-mnist", "fashion-mnist",
             "Fashion-MNIST, bior4.4 2^-4, zero-block, decoder-state features; 8 x 320, 1 KV "
             "head (8.6M), 16 H200-minutes, packed batches: FID 24.3 with a per-plane "
             "schedule (fashion-mnist-fine is better, its sequences 1.8x longer)",
             "acd71b308277fb6393b69c4754903d39194a259c7973eaa64e2e939a8883bdee"),
    ZooEntry("mnist-fine", "mnist",
             "MNIST, Haar 2^-4 (a finer final threshold: codec floor FID 2.36 against 4.83), "
             "zero-block, decoder-state features; mnist's shape (5.6M), started from mnist's "
             "weights and trained 3.8 H200-minutes at 2^-4, then 14 and 7.7 H100-minutes more "
             "(30 GPU-minutes in all): FID 4.5 with a per-plane schedule and top-p 0.8; the best "
             "wavelet-language MNIST model",
             "9118112ad7cd73066da843ec0d10e6c4f300fb8ba60fb5ea7c087e589b47258c"),
    ZooEntry("fashion-mnist-fine", "fashion-mnist",
             "Fashion-MNIST, bior4.4 2^-6 (a finer final threshold: codec floor FID 3.56 "
             "against 9.69), zero-block, decoder-state features; fashion-mnist's shape (8.6M), "
             "started from fashion-mnist's weights and trained 14 H200-minutes more at 2^-6 "
             "(two 7-minute runs, 30 in all): FID 15.9 with a per-plane schedule; the best "
             "wavelet-language Fashion-MNIST model, wavar sample's default",
             "599ca5ec4550d4a9a1d2eea51bd7beee3c484ee4e639b1c8f1b0e6c8ff2afecc"),
    ZooEntry("mnist-small", "mnist",
             "MNIST, Haar 2^-3, zero-block; 4 x 128, 1 KV head (0.72M), 5 H200-minutes: FID "
             "108.9; fast on a CPU (tests, examples)",
             "364ffecfcc428e49951a1fcd39adb086ee1cf48347fe54bd70b6b38cd035de02"),
    ZooEntry("fashion-mnist-small", "fashion-mnist",
             "Fashion-MNIST, bior4.4 2^-4, zero-block; 4 x 128, 1 KV head (0.72M), 6 "
             "H200-minutes: FID 104.6; fast on a CPU (make demo)",
             "5808dffd0c33d5e239fc96596e999c8ffb6cd916b40fd0233ef6fac32960c63e"),
    ZooEntry("fashion-mnist-raster", "fashion-mnist",
             "Fashion-MNIST, raster baseline (one 256-way token per pixel); 4 x 120, 1 KV head "
             "(0.70M), trained for the same GPU time as fashion-mnist-small",
             "c571077b3d1c8023e11355b99c02ade5c45ecb0191665dac677d1543ec0c22b7"),
    ZooEntry("fashion-mnist-raster-medium", "fashion-mnist",
             "Fashion-MNIST, raster baseline at fashion-mnist's shape: 8 x 320, 1 KV head "
             "(8.8M), 7 H200-minutes: FID 4.5; the best Fashion-MNIST model (the size "
             "sweep's raster arm)",
             "67c8e97b15e32a185ba4bbeceb9e539573967361c8b025933c89efc2946e5c4b"),
    ZooEntry("mnist-raster-medium", "mnist",
             "MNIST, raster baseline at mnist's shape: 8 x 256, 1 KV head (5.7M), 4.5 "
             "H200-minutes: FID 3.0; the best MNIST model (the size sweep's raster arm)",
             "0f2ecc6ccb84ccbd82d1472dcf448021483607ceab57cd82687cf2f020a31792"),
    ZooEntry("cifar10", "cifar10",
             "CIFAR-10, bior4.4 + YCbCr 2^-4 (lossy, ~31 dB), zero-block; 8 x 320, 1 KV head "
             "(8.6M)",
             "b28973a594fd6067f798b2e00bf0be73c0f5244ac834609bf768b802d5baaa56"),
    ZooEntry("cifar10-lossless", "cifar10",
             "CIFAR-10, cdf53 + RCT, threshold 1 (lossless), zero-block; 6 x 256, 1 KV head "
             "(4.2M): a likelihood model (bits/dim)",
             "6469a9cc4f62de8c3b2bc84c437abda1ba7b04177dec56f907db90ac665315c3"),
)}


def resolve(name: str, verify: bool = True) -> Path:
    """Folder of zoo model ``name``; raises :class:`CheckpointError` for an unknown name."""
    if name not in MODELS:
        raise CheckpointError(f"unknown model {name!r}: not a path and not in the zoo "
                              f"({', '.join(MODELS)})")
    entry = MODELS[name]
    if not weights.present(entry.path):
        raise CheckpointError(f"zoo model {name!r} is missing its weights "
                              f"({entry.path / weights.SINGLE})")
    if verify:
        try:
            digest = weights.digest(entry.path)
        except CheckpointError as e:
            raise CheckpointError(f"zoo model {name!r} is damaged: {e}") from e
        if digest != entry.sha256:
            raise CheckpointError(f"zoo model {name!r} is damaged: sha256 {digest[:12]}... "
                                  f"is not {entry.sha256[:12]}...")
    return entry.path
