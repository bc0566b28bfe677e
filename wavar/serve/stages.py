"""Live frames: a generation run in stages, one bit-plane at a time, each stage a frame.

The sampler (:func:`wavar.sample.generate.generate`) has no per-step callback, so the server
samples in stages through its public options: stage p asks for bit-plane p only
(``max_plane=p + 1``), forcing the tokens of the earlier stages (``prefix=``) with the m~ the
first stage drew (``m_tilde=``), the same labels and settings and a seed derived from the
request's seed and p (a seeded request stays reproducible). After each stage the rows are
decoded and sent; a row whose grammar has ended (its next slot is ``done``) or that reached
its token limit takes no part in later stages. A raster model (no planes) goes the same way
through log-spaced token budgets (``max_tokens=``).

The price: the sampler steps a forced prefix one token at a time, as it samples (a model step
per token; only the very first position is a prefill), so stage p costs as many steps as the
sequences are long at its end, and a whole generation the sum over the planes of the rows'
length at each plane's end: for two mnist-small images 3.0 times the steps of one call, 2.7 times
its time on a CPU (the README's serve section has the measurements). :class:`OneShotGeneration`
is the other way (``Settings.live_frames=False``): one call, then the frames cut from the
finished sequences.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from wavar.codec import CodedImage, RasterCodec
from wavar.codec import grammar as g
from wavar.sample.options import SamplingOptions
from wavar.viz import prefix_lengths

RASTER_FRAMES = 8  # stages (frames) of a raster model's generation: log-spaced token budgets


def stage_seed(seed: int | None, stage: int) -> int | None:
    """The seed of stage ``stage`` of a request seeded ``seed`` (None: unseeded)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, stage]).generate_state(1, np.uint64)[0] >> 2)


@dataclass
class Frame:
    """The rows at a point of their generation: their sequences so far, and which are done.

    ``stage``: the sampler calls made when it was taken (0: the planes of a forced prefix,
    shown before any sampling); ``kind`` and ``number``: plane ``number`` (from 1) or the
    first ``number`` tokens; ``of``: per row, how many frames it will have (its planes, at
    most the ones asked for; an upper bound: a token limit can end it sooner); ``kept``: the
    planes of a forced prefix. ``changed``: the rows whose sequences grew since the last frame,
    and ``measure`` (default ``seqs``) what to measure their model bits on (a prefix of it is
    each row's sequence in this frame and the next ones, until it changes again).
    """

    stage: int
    kind: str
    number: int
    of: np.ndarray
    seqs: list[CodedImage]
    complete: np.ndarray
    changed: np.ndarray
    kept: bool = False
    measure: list[CodedImage] | None = None

    @property
    def final(self) -> bool:
        return bool(self.complete.all())

    def describe(self, rows: slice) -> tuple[str, int]:
        """The frame's label and frame count for ``rows`` ("plane 2 of 5", "40 tokens")."""
        of = int(self.of[rows].max())
        if self.kind == "tokens":
            return f"{self.number} tokens", of
        return f"plane {self.number} of {of}" + (" (kept)" if self.kept else ""), of


class Generation:
    """Iterate to sample ``labels`` with ``options``: each step yields a :class:`Frame`, the
    last one with every row complete. ``starts``: the seconds (since the iteration began)
    at which each sampler call began; ``calls``: the calls made so far."""

    def __init__(self, model, labels: np.ndarray, options: SamplingOptions) -> None:
        from wavar.sample.generate import codec_of, image_shape_of

        self.model, self.labels, self.options = model, np.asarray(labels, np.int64), options
        self.codec = codec_of(model)
        self.shape = image_shape_of(model)
        self.raster = isinstance(self.codec, RasterCodec)
        self.limit = model.config.max_seq_len
        if options.max_tokens is not None:
            self.limit = min(self.limit, options.max_tokens)
        self.starts: list[float] = []
        self.calls = 0
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator[Frame]:
        self._t0 = time.perf_counter()
        if len(self.labels):
            yield from self.frames()

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _generate(self, labels: np.ndarray, options: SamplingOptions) -> list[CodedImage]:
        from wavar.sample.generate import generate

        self.starts.append(time.perf_counter() - self._t0)
        out = list(generate(self.model, labels, options))
        self.calls += 1
        return out

    def planes_of(self, m_tilde: np.ndarray) -> np.ndarray:
        """Per row, its frames by plane: its bit-planes, at most the ones asked for."""
        h, w, c = self.shape
        planes = np.array([self.codec.header(h, w, c, int(m)).n_planes for m in m_tilde])
        cap = self.options.max_plane
        return np.maximum(1, planes if cap is None else np.minimum(planes, cap))

    def budgets(self) -> list[int]:
        """A raster model's frames: log-spaced token counts, the last the whole image."""
        h, w, c = self.shape
        return prefix_lengths(min(h * w * c, self.limit), RASTER_FRAMES)

    def plane_end(self, seq: CodedImage, p: int) -> int:
        """Tokens of ``seq`` up to the end of its plane ``p`` (from 0)."""
        plane = self.codec.slots(seq).plane[: len(seq)]
        return int(np.searchsorted(plane, p + 1))


class OneShotGeneration(Generation):
    """One sampler call, then the frames: the finished sequences cut at the end of each
    bit-plane (a raster model: at each token budget), all sent after the sampling."""

    def frames(self) -> Iterator[Frame]:
        seqs = self._generate(self.labels, self.options)
        n = len(seqs)
        if self.raster:
            budgets = self.budgets()
            cuts = [("tokens", k, [min(k, len(s)) for s in seqs]) for k in budgets]
            of = np.full(n, len(budgets))
        else:
            of = self.planes_of(np.array([s.header.m_tilde for s in seqs]))
            ends = [[self.plane_end(s, p) for p in range(int(of.max()))] for s in seqs]
            cuts = [("plane", p + 1, [min(e[p], len(s)) for e, s in zip(ends, seqs, strict=True)])
                    for p in range(int(of.max()))]
        for i, (kind, number, cut) in enumerate(cuts):
            complete = (i == len(cuts) - 1) | ((kind == "plane") & (number >= of))
            yield Frame(1, kind, number, of, [s[:k] for s, k in zip(seqs, cut, strict=True)],
                        complete, np.full(n, i == 0), measure=seqs if i == 0 else None)


class StagedGeneration(Generation):
    """Plane by plane (a raster model: token budget by token budget), one sampler call
    each, a frame after each (see the module's docstring)."""

    def __init__(self, model, labels: np.ndarray, options: SamplingOptions) -> None:
        super().__init__(model, labels, options)
        if options.ll_init:
            raise ValueError("LL initialisation draws its start anew at each call: it cannot "
                             "be staged")
        n = len(self.labels)
        self.tokens = ([np.asarray(p, np.uint8)[: self.limit] for p in options.prefix]
                       if options.prefix is not None else [np.zeros(0, np.uint8)] * n)
        if len(self.tokens) != n:
            raise ValueError(f"{len(self.tokens)} prefixes for {n} rows")
        self.m_tilde = (np.zeros(n, np.int64) if self.raster
                        else None if options.m_tilde is None
                        else np.asarray(options.m_tilde, np.int64))

    def seqs(self) -> list[CodedImage]:
        h, w, c = self.shape
        return [CodedImage(t, self.codec.header(h, w, c, int(m)))
                for t, m in zip(self.tokens, self.m_tilde, strict=True)]

    def complete(self, seqs: list[CodedImage]) -> np.ndarray:
        """Rows whose grammar has ended (the next slot is ``done``) or at the token limit."""
        return np.array([len(s) >= self.limit or int(self.codec.slots(s).kind[-1]) == g.DONE
                         for s in seqs], bool)

    def sample(self, rows: np.ndarray, **stop: int) -> np.ndarray:
        """One sampler call that extends ``rows`` as far as ``stop`` (``max_plane`` or
        ``max_tokens``) lets them; returns which rows changed."""
        o = self.options
        prefix = [self.tokens[i] for i in rows]
        options = dataclasses.replace(
            o, seed=stage_seed(o.seed, self.calls),
            prefix=prefix if any(len(p) for p in prefix) else None,
            m_tilde=None if self.m_tilde is None else self.m_tilde[rows], **stop)
        out = self._generate(self.labels[rows], options)
        if self.m_tilde is None:  # the first call drew every row's m~
            self.m_tilde = np.array([s.header.m_tilde for s in out], np.int64)
        for i, s in zip(rows, out, strict=True):
            self.tokens[i] = s.tokens
        changed = np.zeros(len(self.labels), bool)
        changed[rows] = True
        return changed

    def frames(self) -> Iterator[Frame]:
        yield from self._raster() if self.raster else self._planes()

    def _planes(self) -> Iterator[Frame]:
        n = len(self.labels)
        complete = np.zeros(n, bool)
        p = 0
        if self.m_tilde is not None and any(len(t) for t in self.tokens):
            # a forced prefix (prefix completion): its complete planes are frames already
            of = self.planes_of(self.m_tilde)
            seqs = self.seqs()
            first = min(min(int(self.codec.slots(s).plane[-1]) for s in seqs), int(of.max()))
            complete = self.complete(seqs)
            for p in range(first):
                cut = [s[: self.plane_end(s, p)] for s in seqs]
                done = np.zeros(n, bool)
                if p == first - 1:
                    if first >= of.max():  # the prefix holds every plane asked for
                        self.tokens = [s.tokens for s in cut]
                        complete[:] = True
                    done = complete
                yield Frame(0, "plane", p + 1, of, cut, done.copy(), np.full(n, p == 0),
                            kept=True, measure=seqs if p == 0 else None)
            if complete.all():
                return
            p = first
        while True:
            changed = self.sample(np.flatnonzero(~complete), max_plane=p + 1)
            of = self.planes_of(self.m_tilde)
            seqs = self.seqs()
            complete = self.complete(seqs)
            p += 1
            if p >= of.max():  # the last plane (or the last asked for): nothing more to sample
                complete[:] = True
            yield Frame(self.calls, "plane", p, of, seqs, complete, changed)
            if complete.all():
                return

    def _raster(self) -> Iterator[Frame]:
        n = len(self.labels)
        budgets = self.budgets()
        of = np.full(n, len(budgets))
        complete = np.zeros(n, bool)
        for k in budgets:
            changed = self.sample(np.flatnonzero(~complete), max_tokens=k)
            seqs = self.seqs()
            complete = self.complete(seqs) | (k == budgets[-1])
            yield Frame(self.calls, "tokens", k, of, seqs, complete, changed)
            if complete.all():
                return
