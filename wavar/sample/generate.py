"""Sampling: token sequences (:func:`generate`) and decoded images (:func:`sample_images`).

One generation: :func:`~wavar.sample.planning.plan` picks the code paths once (and says why), the
settings set up the rows (labels, m~, forced prefixes, region or LL forcing), and one of two
loops samples: :func:`~wavar.sample.cpu_loop.cpu_loop` (grammar on the host; any device, every
option) or :func:`~wavar.sample.gpu_loop.gpu_loop` (grammar on the GPU, the whole step one CUDA
graph). Both draw the same tokens for the same seed.

Conditioning on the generation process:

* ``prefix``: per row, tokens to force first (e.g. the coarse bit-planes of a real image);
* ``region``: a real image and a kept-pixels mask; wherever the scan reaches a node whose
  coefficients all have their support inside the kept region, the real image's symbol is
  forced (if the grammar allows it there), elsewhere the model samples.

The model's config records the codec (``config.codec``): parameters, image shape, class names
and the per-class distribution of m~ seen in training (the sampler's "robust initialisation").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from wavar.codec import Codec, CodedImage, WaveletCodec, codec_from_params
from wavar.errors import SamplingMemoryError
from wavar.sample.cpu_loop import cpu_loop
from wavar.sample.draw import ForcedPrefix
from wavar.sample.forcing import forcing_of
from wavar.sample.gpu_loop import gpu_loop
from wavar.sample.options import SamplingOptions
from wavar.sample.planning import REFUSE_SHARE, SamplingPlan, images_per_call, token_limit
from wavar.sample.planning import plan as plan_for

log = logging.getLogger("wavar.sample")


def codec_of(model) -> Codec:
    """The codec a model was trained on (recorded in its config): wavelet or raster."""
    return codec_from_params(model.config.codec)


def image_shape_of(model) -> tuple[int, int, int]:
    shape = list(model.config.codec["image_shape"])
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def class_names(model) -> list[str]:
    """The model's class names (its config's, else "0", "1", ...)."""
    return list(model.config.codec.get("classes") or map(str, range(model.config.num_classes)))


def class_indices(names: Sequence[str], spec: int | str | Sequence[int | str] | None) -> list[int]:
    """Class indices from a class name or index, a list of them, or ``"all"`` / ``None`` (every
    class). Names match case-insensitively; an unknown one raises ``ValueError`` naming the
    classes the model knows."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(len(names)))
    items = [spec] if isinstance(spec, int | str | np.integer) else list(spec)
    lower = [n.lower() for n in names]
    out = []
    for item in items:
        s = str(item).strip()
        if s.isdigit() and int(s) < len(names):
            out.append(int(s))
        elif s.lower() in lower:
            out.append(lower.index(s.lower()))
        else:
            raise ValueError(f"unknown class {item!r}; this model knows "
                             f"{', '.join(f'{i}={n}' for i, n in enumerate(names))}")
    return out


def sample_m_tilde(model, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw m~ for each label from that class's training distribution."""
    info = model.config.codec
    hist = np.asarray(info["m_tilde_hist"], np.float64)
    lo = int(info["m_tilde_min"])
    out = np.empty(len(labels), np.int64)
    for i, y in enumerate(labels):
        row = hist[y] if y < len(hist) else hist.sum(0)  # the null class: all classes
        out[i] = lo + rng.choice(len(row), p=row / row.sum())
    return out


class Samples(list):
    """Sampled sequences (a list of :class:`~wavar.codec.CodedImage`), with the
    :class:`~wavar.sample.planning.SamplingPlan` that drew them as ``.plan``."""

    def __init__(self, seqs: Sequence[CodedImage], plan: SamplingPlan) -> None:
        super().__init__(seqs)
        self.plan = plan


@torch.no_grad()
def generate(model, labels: Sequence[int] | np.ndarray, options: SamplingOptions | None = None,
             *, plan: SamplingPlan | None = None, **settings: Any) -> Samples:
    """Sample one token sequence per label.

    Parameters
    ----------
    model : WaveletGPT
    labels : (B,) class indices (``num_classes`` = unconditional).
    options, settings : a :class:`~wavar.sample.options.SamplingOptions`, or its fields as
        keywords (``cfg``, ``temperature``, ``top_k``, ``top_p``, ``seed``, ``m_tilde``,
        ``max_tokens``, ``max_plane``, ``prefix``, ``region``, ``ll_init``).
    plan : the code paths to take (default: :func:`~wavar.sample.planning.plan` for this machine;
        tests and benchmarks pass others). Logged at INFO on the ``wavar.sample`` logger.

    Returns
    -------
    Samples: a list of CodedImage (complete, or prefixes where a budget stopped them), with
    the plan that ran as ``.plan``.
    """
    if options is not None and settings:
        raise TypeError("give the settings as options or as keywords, not both")
    options = options or SamplingOptions(**settings)
    labels = np.asarray(labels, np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() > model.config.num_classes):
        raise ValueError(f"labels must lie in 0..{model.config.num_classes - 1} "
                         f"({model.config.num_classes} = unconditional)")
    codec = codec_of(model)
    if not isinstance(codec, WaveletCodec):  # the raster language: one plane, no grammar
        if options.max_plane is not None:
            raise ValueError("max_plane (--planes) needs a wavelet-language model: a raster "
                             "sequence has no bit-planes (max_tokens, --tokens, stops it after "
                             "its first pixels)")
        if options.scheduled:
            raise ValueError("a cfg, temperature or top_p per bit-plane needs a wavelet-language "
                             "model: a raster sequence has no bit-planes; give one value")
    plan = plan or plan_for(model, options)
    log.info("sampling plan for %d rows:\n%s", len(labels), plan)
    if len(labels) == 0:
        return Samples([], plan)
    device = next(model.parameters()).device
    fit, why = images_per_call(model, options, device, REFUSE_SHARE)
    if fit is not None and len(labels) > fit:  # before the cache: fail at once, lose nothing
        raise SamplingMemoryError(f"{len(labels):,} images in one generation: {why}; generate "
                                  "them in batches (wavar sample does; wavar eval --batch N)")
    h, w, c = image_shape_of(model)
    rng = np.random.default_rng(options.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(2**62)))
    forcing, m_tilde = forcing_of(model, codec, options, labels, (h, w, c), rng)
    if m_tilde is None:
        m_tilde = (sample_m_tilde(model, labels, rng) if options.m_tilde is None
                   else options.m_tilde)
    m_tilde = np.asarray(m_tilde, np.int64)
    states = codec.batch_state(h, w, c, m_tilde)
    limit = token_limit(model, options)
    forced = None if options.prefix is None else ForcedPrefix.of(options.prefix, limit, device)
    if plan.loop == "cpu":
        out, lengths = cpu_loop(model, options, states, labels, m_tilde, limit, gen, forced,
                                forcing)
    else:
        out, lengths = gpu_loop(model, plan, options, states, labels, m_tilde, limit, gen,
                                forced, forcing)
    return Samples([CodedImage(out[i, : lengths[i]].astype(np.uint8),
                               codec.header(h, w, c, int(m_tilde[i]))) for i in range(len(out))],
                   plan)


def sample_images(model, classes: int | str | Sequence[int | str] | None = None, n: int = 1, *,
                  progressive: int | None = None, **settings: Any
                  ) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Sample ``n`` images of each class and decode them: uint8 (N, H, W) or (N, H, W, 3).

    ``classes`` is a class name or index, a list of them, or ``"all"`` / ``None`` (every
    class); images come class by class (``n`` of the first class, then the next...).
    ``settings`` go to :func:`generate`: ``cfg``, ``temperature``, ``top_k``, ``top_p``,
    ``seed``, ``max_tokens``, ``max_plane``, ``prefix``, ``region``, ``ll_init``, ``m_tilde``
    (and ``plan``). With ``progressive=K`` it also returns K (at most) arrays of the same images
    decoded from log-spaced token prefixes, coarse to fine, the last one complete: the frames of
    a progressive display.

    >>> from wavar import WaveletGPT, sample_images
    >>> model = WaveletGPT.from_pretrained("fashion-mnist")   # doctest: +SKIP
    >>> sample_images(model, "Sneaker", n=16, seed=0).shape   # doctest: +SKIP
    (16, 28, 28)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    labels = np.repeat(class_indices(class_names(model), classes), n)
    seqs = generate(model, labels, **settings)
    images = np.stack(decode(model, seqs))
    if progressive is None:
        return images
    return images, [np.stack(frame) for frame in decode_prefixes(model, seqs, progressive)]


def prefix_tokens(codec: Codec, image: np.ndarray, planes: int | None = None,
                  tokens: int | None = None) -> CodedImage:
    """The first ``planes`` bit-planes (or ``tokens`` tokens) of a real image's sequence."""
    if planes is not None and tokens is not None:
        raise ValueError(f"give planes or tokens, not both (planes={planes}, tokens={tokens})")
    if planes is not None and not isinstance(codec, WaveletCodec):
        raise ValueError("a raster sequence has no bit-planes: keep its first pixels with "
                         "tokens=N (--prefix-tokens N)")
    seq = codec.encode(image)
    if planes is not None:
        plane = codec.slots(seq).plane[:-1]
        return seq[: int(np.searchsorted(plane, planes))]
    return seq[:tokens]


def decode(model, seqs: Sequence[CodedImage], n_tokens: int | None = None) -> list[np.ndarray]:
    """uint8 images of sampled sequences."""
    return codec_of(model).decode_batch(list(seqs), n_tokens)


def decode_prefixes(model, seqs: Sequence[CodedImage], steps: int) -> list[list[np.ndarray]]:
    """The sequences decoded from at most ``steps`` log-spaced token prefixes, coarse to fine,
    the last complete: one list of images per prefix length (a progressive display's frames)."""
    from wavar.viz import prefix_lengths

    ks = prefix_lengths(max(len(s) for s in seqs), steps)
    return [decode(model, seqs, k) for k in ks]
