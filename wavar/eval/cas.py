"""Classification Accuracy Score (Ravuri & Vinyals 2019, "Classification accuracy score for
conditional generative models"), as in docs/design.md §4.

A small CNN is trained on the real training set of a dataset; CAS is its accuracy on generated
samples labelled by the class they were conditioned on, reported beside its accuracy on the real
test set (the ceiling a perfect class-conditional model would reach). Per-class accuracies
show which classes a model draws badly.

The classifier is trained once per dataset and cached at ``<cache>/cas/<dataset>.pt``
(``<cache>`` = ``$WAVAR_CACHE`` or ``~/.cache/wavar``): its weights, its input shape and its
real-test accuracies, loaded with ``weights_only=True``. A dataset whose classifier ships with
wavar (``wavar/eval/classifiers/<dataset>.safetensors``: CIFAR-10's, trained on this project's
CPU by ``benchmarks/cas_bundle.py``) is judged by that one instead, so that its CAS does not
depend on a classifier trained afresh on the machine that measures (a GPU's training is not
bit-reproducible); :func:`load_classifier` says which it uses.

Examples
--------
>>> from wavar.eval.cas import cas
>>> report = cas(samples_x, samples_y, "fashion-mnist")  # doctest: +SKIP
>>> report["accuracy"], report["real_test_accuracy"]  # doctest: +SKIP
(0.83, 0.91)
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wavar.atomic import write_atomic
from wavar.data.cache import cache_dir
from wavar.data.datasets import load
from wavar.errors import CheckpointError, WavarError

__all__ = [
    "BUNDLED",
    "SmallCNN",
    "bundle_classifier",
    "cas",
    "classifier_accuracy",
    "classifier_path",
    "fit_classifier",
    "load_classifier",
    "train_classifier",
]

_FORMAT = "wavar-cas-classifier"
_VERSION = 1
#: Classifiers shipped with wavar, one ``<dataset>.safetensors`` each (weights, and the cache
#: file's meta as JSON in the safetensors metadata).
BUNDLED = Path(__file__).parent / "classifiers"
#: Default training epochs: on two CPU cores Fashion-MNIST takes about 2 min and reaches 92.1 %
#: test accuracy (4 epochs: 91.3 %), MNIST 99.4 %.
EPOCHS = 8


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head; any input size of about 28 to 32 pixels.

    ``(B, C, H, W)`` float in ``[-1, 1]`` -> ``(B, num_classes)`` logits. About 0.1M
    parameters and 2M multiply-adds per 28 x 28 image: an epoch of 60k images takes about
    20 s on two CPU cores.
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(channels, w), nn.MaxPool2d(2),       # 28 -> 14 (32 -> 16)
            *block(w, 2 * w), nn.MaxPool2d(2),          # 14 -> 7  (16 -> 8)
            *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(3),  # -> 3 x 3 whatever the input size
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 9, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _to_input(x: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """uint8 ``(B, H, W[, 3])`` -> float ``(B, C, H, W)`` in ``[-1, 1]``."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch.float32)
    t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t / 127.5 - 1


def _check(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8 or not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 3)):
        raise WavarError(f"{what}: expected uint8 (N, H, W) or (N, H, W, 3) images, got "
                         f"{x.dtype} {x.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise WavarError(f"{what}: expected {len(x)} integer labels, got {y.dtype} {y.shape}")
    if len(x) == 0:
        raise WavarError(f"{what}: no images")
    return x, y.astype(np.int64)


def fit_classifier(x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int = EPOCHS,
                   batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                   device: str = "cpu", log=None) -> SmallCNN:
    """Train a :class:`SmallCNN` on images ``x`` with labels ``y`` (AdamW, one-cycle schedule).

    Parameters
    ----------
    x : np.ndarray
        uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` images.
    y : np.ndarray
        Integer labels ``(N,)`` in ``0 .. num_classes - 1``.
    num_classes : int
    epochs, batch_size, lr, seed : optional
        Training schedule; the same seed gives the same model on the same device.
    device : str, optional
    log : callable, optional
        Called with one line of progress per epoch.

    Returns
    -------
    SmallCNN
        In eval mode.
    """
    x, y = _check(x, y, "fit_classifier")
    if y.min() < 0 or y.max() >= num_classes:
        raise WavarError(f"fit_classifier: labels outside 0..{num_classes - 1}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the weight initialisation
    model = SmallCNN(1 if x.ndim == 3 else 3, num_classes).to(device)
    steps_per_epoch = -(-len(x) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    # one-cycle: a warm start and an annealed end converge in few epochs without tuning
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                total_steps=max(1, epochs * steps_per_epoch))
    yt = torch.from_numpy(y)
    for epoch in range(epochs):
        model.train()
        t, total, correct = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb, yb = _to_input(x[idx.numpy()], device), yt[idx].to(device)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, train accuracy "
                f"{correct / len(x):.4f} ({time.perf_counter() - t:.0f} s)")
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray,
                        batch_size: int = 500) -> tuple[float, np.ndarray]:
    """Accuracy of ``model`` on images ``x`` with labels ``y``.

    Returns
    -------
    (float, np.ndarray)
        Overall accuracy, and per-class accuracy ``(num_classes,)`` (NaN for a class with no
        image).
    """
    x, y = _check(x, y, "classifier_accuracy")
    num_classes = model.head[-1].out_features
    if y.min() < 0 or y.max() >= num_classes:
        raise WavarError(f"classifier_accuracy: labels outside 0..{num_classes - 1}")
    model.eval()
    device = next(model.parameters()).device
    pred = np.concatenate([model(_to_input(x[s : s + batch_size], device)).argmax(1).cpu().numpy()
                           for s in range(0, len(x), batch_size)])
    hit = pred == y
    count = np.bincount(y, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.bincount(y, weights=hit, minlength=num_classes) / count
    return float(hit.mean()), per_class


# --------------------------------------------------------------------------------------------
# the cached classifier of a dataset


def classifier_path(dataset: str) -> Path:
    """Cache file of the CAS classifier of ``dataset``: ``<cache>/cas/<dataset>.pt``."""
    return cache_dir() / "cas" / f"{dataset}.pt"


def train_classifier(dataset_name: str, epochs: int = EPOCHS, device: str = "cpu",
                     seed: int = 0, batch_size: int = 128, lr: float = 2e-3,
                     log=print) -> SmallCNN:
    """Train the CAS classifier of a dataset on its real training set, and cache it.

    Parameters are those of :func:`fit_classifier`. The returned model carries
    ``model.meta``: the dataset, classes, input shape, schedule and its accuracy (overall and
    per class) on the real test set.
    """
    train, test = load(dataset_name, "train"), load(dataset_name, "test")
    t = time.perf_counter()
    model = fit_classifier(train.x, train.y, len(train.classes), epochs=epochs,
                           batch_size=batch_size, lr=lr, seed=seed, device=device, log=log)
    acc, per_class = classifier_accuracy(model, test.x, test.y)
    meta = {"format": _FORMAT, "version": _VERSION, "dataset": dataset_name,
            "classes": list(train.classes), "image_shape": list(train.x.shape[1:]),
            "width": model.features[0].out_channels, "epochs": epochs, "seed": seed,
            "batch_size": batch_size, "lr": lr, "train_images": len(train),
            "train_seconds": time.perf_counter() - t, "test_accuracy": acc,
            "test_per_class": per_class.tolist()}
    if log is not None:
        log(f"CAS classifier of {dataset_name}: real test accuracy {acc:.4f}")
    model = model.cpu()
    buf = io.BytesIO()
    torch.save({"meta": meta, "state_dict": model.state_dict()}, buf)
    write_atomic(classifier_path(dataset_name), lambda f: f.write(buf.getvalue()))
    model.meta = meta
    return model.to(device)


def bundle_classifier(model: SmallCNN, path: Path) -> None:
    """Write a trained classifier (with ``.meta``) as a bundled ``.safetensors`` file."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"wavar": json.dumps(model.meta)})
    write_atomic(path, lambda f: f.write(data))


def _classifier(meta: dict, state_dict: dict) -> SmallCNN:
    if meta.get("format") != _FORMAT:
        raise ValueError("not a wavar CAS classifier")
    if meta.get("version", 0) > _VERSION:
        raise ValueError(f"format version {meta['version']} is newer than {_VERSION}")
    shape = meta["image_shape"]
    model = SmallCNN(3 if len(shape) == 3 else 1, len(meta["classes"]), meta["width"])
    model.load_state_dict(state_dict)
    model.meta = meta
    return model


def _load_bundled(path: Path) -> SmallCNN:
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            meta = json.loads(f.metadata()["wavar"])
            return _classifier(meta, {k: f.get_tensor(k) for k in f.keys()})
    except Exception as e:  # safetensors, JSON and state-dict errors
        raise CheckpointError(f"the CAS classifier bundled with wavar, {path}, is unreadable "
                              f"({e}); reinstall wavar") from e


def load_classifier(dataset: str, device: str = "cpu", train_if_missing: bool = True,
                    epochs: int = EPOCHS, log=print) -> SmallCNN:
    """The CAS classifier of ``dataset`` with ``.meta``: the one bundled with wavar where it
    ships one, else the cached one (trained first if missing).

    Raises
    ------
    CheckpointError
        If the cache file is unreadable or not a classifier (the message says to delete it),
        or if it is missing and ``train_if_missing`` is false; if a bundled one is unreadable.
    """
    bundled = BUNDLED / f"{dataset}.safetensors"
    if bundled.is_file():
        model = _load_bundled(bundled)
        if log is not None:
            log(f"CAS classifier of {dataset}: the one bundled with wavar ({bundled.name}; "
                f"real test accuracy {model.meta['test_accuracy']:.4f})")
        return model.to(device).eval()
    path = classifier_path(dataset)
    if not path.is_file():
        if not train_if_missing:
            raise CheckpointError(f"no CAS classifier for {dataset} at {path}")
        if log is not None:
            log(f"training the CAS classifier of {dataset} ({epochs} epochs; cached at {path})")
        return train_classifier(dataset, epochs=epochs, device=device, log=log)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = _classifier(ckpt["meta"], ckpt["state_dict"])
    except Exception as e:  # pickle, zip and state-dict errors come in many classes
        raise CheckpointError(f"CAS classifier cache {path} is unreadable ({e}); delete it to "
                              "train the classifier again") from e
    return model.to(device).eval()


def cas(samples_x: np.ndarray, samples_y: np.ndarray, dataset: str,
        classifier: SmallCNN | None = None, device: str = "cpu") -> dict:
    """Classification Accuracy Score of labelled samples.

    Parameters
    ----------
    samples_x : np.ndarray
        uint8 samples of the dataset's image shape.
    samples_y : np.ndarray
        The class each sample was conditioned on.
    dataset : str
        Whose classifier judges them (:func:`load_classifier`, trained on first use).
    classifier : SmallCNN, optional
        A classifier with ``.meta`` to use instead.
    device : str, optional

    Returns
    -------
    dict
        ``accuracy`` (on the samples), ``real_test_accuracy``, ``samples``, ``classifier``
        (its training epochs, seed and image count), and ``per_class``:
        one entry per class with ``class``, ``name``, ``samples``, ``accuracy`` (NaN without
        samples) and ``real_test_accuracy``.
    """
    x, y = _check(samples_x, samples_y, "cas")
    model = load_classifier(dataset, device) if classifier is None else classifier
    meta = model.meta
    if list(x.shape[1:]) != list(meta["image_shape"]):
        raise WavarError(f"cas: samples are {'x'.join(map(str, x.shape[1:]))} but the "
                         f"{dataset} classifier takes "
                         f"{'x'.join(map(str, meta['image_shape']))} images")
    acc, per_class = classifier_accuracy(model, x, y)
    counts = np.bincount(y, minlength=len(meta["classes"]))
    return {
        "dataset": dataset,
        "samples": len(x),
        "accuracy": acc,
        "real_test_accuracy": meta["test_accuracy"],
        "classifier": {k: meta.get(k) for k in ("epochs", "seed", "train_images")},
        "per_class": [{"class": c, "name": name, "samples": int(counts[c]),
                       "accuracy": float(per_class[c]),
                       "real_test_accuracy": float(meta["test_per_class"][c])}
                      for c, name in enumerate(meta["classes"])],
    }
