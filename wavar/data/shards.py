"""Tokenized datasets: token shards on disk, and the batches the model trains on.

A dataset is coded once (``wavar data tokenize``) into shards of at most ``shard_size`` images,
``<cache>/tokens/<dataset>-<codec tag>/<split>-NNNN.npz`` holding

* ``tokens``  uint8, all sequences concatenated,
* ``offsets`` int64 (n + 1,), sequence i is ``tokens[offsets[i]:offsets[i + 1]]``,
* ``m_tilde`` int16 (n,), ``label`` int64 (n,),

plus ``meta.json`` (codec parameters, image shape, counts). Shards are written atomically and
finished shards are skipped, so an interrupted run resumes. Slots and legal masks are not
stored: they are replayed from the tokens by the grammar when a :class:`TokenDataset` is
loaded (tens of nanoseconds per token), which keeps the shards small enough to carry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit, prange

from wavar.atomic import write_atomic
from wavar.codec import Codec, RasterCodec, coder, grammar
from wavar.codec.raster import ALL_LEGAL, raster_slots
from wavar.data.datasets import ImageDataset, cache_dir, load
from wavar.errors import DatasetError


def codec_tag(codec: Codec) -> str:
    """Short name of the codec parameters, used in shard folder names."""
    if isinstance(codec, RasterCodec):
        return "raster"
    p = codec.params()
    lv = "" if p["levels"] is None else f"-L{p['levels']}"
    return (f"{p['wavelet']}-{p['language']}-T{codec.final_exponent}"
            f"{'-imm' if p['refinement'] == 'immediate' else ''}{lv}")


def shard_dir(dataset: str, codec: Codec) -> Path:
    return cache_dir() / "tokens" / f"{dataset}-{codec_tag(codec)}"


def fingerprint(data: ImageDataset) -> str:
    """sha256 of a split's images and labels (with their shapes): which images shards hold."""
    h = hashlib.sha256()
    for a in (data.x, data.y.astype(np.int64)):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def tokenize(
    dataset: str | ImageDataset,
    codec: Codec,
    split: str = "train",
    shard_size: int = 10_000,
    progress: bool = True,
) -> Path:
    """Code a dataset split into token shards (resumable); returns the shard folder.

    ``meta.json`` records the split's :func:`fingerprint`. When the images differ from those the
    shards were made from (e.g. CIFAR-10 trained in chunks on rotating source shards), the
    split's shards are deleted and made again, so shards never serve another image set.
    """
    from tqdm import tqdm

    data = load(dataset, split) if isinstance(dataset, str) else dataset
    out = shard_dir(data.name, codec)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    fp = fingerprint(data)
    if old.get(f"{split}_fingerprint") != fp:
        # Unfinished or other images: mark the split incomplete first, then drop its shards.
        old = {k: v for k, v in old.items() if not k.startswith(f"{split}_")}
        old[f"{split}_fingerprint"] = fp
        _write_json(meta_path, old)
        for stale in out.glob(f"{split}-*.npz"):
            stale.unlink()
    n = len(data)
    starts = range(0, n, shard_size)
    bar = tqdm(total=n, desc=f"tokenize {data.name}/{split}", unit="img", disable=not progress)
    for i, s in enumerate(starts):
        path = out / f"{split}-{i:04d}.npz"
        e = min(n, s + shard_size)
        if not path.exists():
            seqs = codec.encode_batch(data.x[s:e])
            lengths = np.array([len(q) for q in seqs], np.int64)
            offsets = np.zeros(len(seqs) + 1, np.int64)
            offsets[1:] = np.cumsum(lengths)
            arrays = dict(tokens=np.concatenate([q.tokens for q in seqs]), offsets=offsets,
                          m_tilde=np.array([q.header.m_tilde for q in seqs], np.int16),
                          label=data.y[s:e].astype(np.int64))
            write_atomic(path, lambda f, a=arrays: np.savez(f, **a))
        bar.update(e - s)
    bar.close()
    meta = {"dataset": data.name, "codec": codec.params(), "image_shape": list(data.x.shape[1:]),
            "classes": list(data.classes), f"{split}_count": n,
            f"{split}_shards": len(starts), f"{split}_fingerprint": fp}
    _write_json(meta_path, {**old, **meta})
    return out


def _write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=1)
    write_atomic(path, lambda f: f.write(text.encode()))  # readers see the old or the new


@njit(cache=True, parallel=True)
def _replay_all(syms, offsets, n_planes, lang, immediate, channels, n_coef, scan_index, parent,
                children, n_desc, is_ll, block_slot, quad_slot, coef_slot, slot_out, pos_out,
                legal_out, context_tables, context_out, errors):
    with_context = context_out.shape[0] > 0
    for i in prange(offsets.shape[0] - 1):
        a, b = offsets[i], offsets[i + 1]
        n = b - a
        si = np.empty((n + 1, 5), np.int64)
        sp = np.empty((n + 1, 2))
        sl = np.empty(n + 1, np.int64)
        sc = np.empty((n + 1 if with_context else 0, context_out.shape[1]), np.int8)
        errors[i] = coder.replay_slots(syms[a:b], n_planes[i], lang, immediate, channels, n_coef,
                                       scan_index, parent, children, n_desc, is_ll, block_slot,
                                       quad_slot, coef_slot, si, sp, sl, context_tables, sc)
        for t in range(n):
            for j in range(5):
                slot_out[a + t, j] = si[t, j]
            pos_out[a + t, 0] = sp[t, 0]
            pos_out[a + t, 1] = sp[t, 1]
            legal_out[a + t] = sl[t]
            if with_context:
                for j in range(context_out.shape[1]):
                    context_out[a + t, j] = sc[t, j]


def bucketed_indices(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     buckets: int = 1) -> np.ndarray:
    """``batch_size`` random sequence indices. With ``buckets`` > 1: draw ``buckets`` times as
    many, sort them by length and keep one of the ``buckets`` aligned blocks, chosen at random,
    so a batch pads less. Every draw is uniform and every block equally likely, so each
    sequence is as likely to be in a batch as without buckets; the batch holds similar lengths
    instead of a cross-section. ``buckets = 1`` draws exactly what a plain uniform draw does.
    """
    if buckets <= 1:
        return rng.integers(0, len(lengths), batch_size)
    idx = rng.integers(0, len(lengths), batch_size * buckets)
    order = np.argsort(lengths[idx], kind="stable")
    block = int(rng.integers(buckets))
    return idx[order[block * batch_size : (block + 1) * batch_size]]


@dataclass
class TokenDataset:
    """Sequences of one split with their slots and legal masks, ready for batching.

    Implements the model's data-source contract: :meth:`sample_batch` (random training
    batches) and :meth:`iter_batches` (a deterministic pass, for validation).
    """

    codec: Codec
    image_shape: tuple[int, ...]
    tokens: np.ndarray  # uint8 (total,)
    offsets: np.ndarray  # int64 (n + 1,)
    m_tilde: np.ndarray  # int64 (n,)
    label: np.ndarray  # int64 (n,)
    slots: np.ndarray  # int8 (total, 5)
    pos: np.ndarray  # float32 (total, 2)
    # int8 (total,) bitmask over token ids, sign-extended when widened: -1 = every token legal
    legal: np.ndarray
    classes: tuple[str, ...] = ()
    # int8 (total, N_CONTEXT) decoder-state features before each token (grammar.context_of),
    # replayed only for models that read them (ModelConfig.decoder_state)
    context: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_coded(cls, codec: Codec, image_shape, seqs, label, context: bool = False
                   ) -> TokenDataset:
        """Build from coded images (:class:`~wavar.codec.CodedImage`), one label each."""
        return cls.from_sequences(
            codec, image_shape, np.concatenate([s.tokens for s in seqs]).astype(np.uint8),
            np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64),
            np.array([s.header.m_tilde for s in seqs], np.int64), np.asarray(label, np.int64),
            context=context)

    @classmethod
    def from_sequences(cls, codec: Codec, image_shape, tokens, offsets, m_tilde, label,
                       classes=(), context: bool = False) -> TokenDataset:
        """Build from concatenated sequences; replays the grammar for slots and masks (and,
        with ``context``, the decoder-state features)."""
        h, w = image_shape[:2]
        channels = image_shape[2] if len(image_shape) == 3 else 1
        if isinstance(codec, RasterCodec):
            if context:
                raise DatasetError("the raster language has no decoder state to replay: "
                                   "decoder-state features need a wavelet codec")
            return cls._from_raster(codec, image_shape, tokens, offsets, m_tilde, label, classes)
        geo = codec.geometry(h, w)
        total = len(tokens)
        slot_out = np.empty((total, 5), np.int8)
        pos_out = np.empty((total, 2), np.float32)
        legal_out = np.empty(total, np.int64)
        context_out = np.empty((total if context else 0, grammar.N_CONTEXT), np.int8)
        errors = np.empty(len(offsets) - 1, np.int64)
        syms = codec.lang.to_symbols()[tokens.astype(np.int64)]
        n_planes = np.maximum(m_tilde.astype(np.int64) - codec.final_exponent, 0)
        _replay_all(syms, offsets, n_planes, codec.lang.code,
                    int(codec.refinement == "immediate"), channels, geo.n_coef,
                    geo.scan_index, geo.parent, geo.children, geo.n_desc, geo.is_ll,
                    geo.block_slot, geo.quad_slot, geo.coef_slot, slot_out, pos_out, legal_out,
                    geo.context_tables, context_out, errors)
        bad = np.flatnonzero(errors >= 0)
        if bad.size:
            raise DatasetError(f"token shard is corrupt: sequence {int(bad[0])} breaks the "
                               f"grammar at position {int(errors[bad[0]])}; re-tokenize")
        legal = codec.lang.mask_from_symbols(legal_out).astype(np.int8)  # <= 7 bits
        return cls(codec, tuple(image_shape), tokens, offsets, m_tilde.astype(np.int64),
                   label.astype(np.int64), slot_out, pos_out, legal, tuple(classes),
                   context_out if context else None)

    @classmethod
    def _from_raster(cls, codec: RasterCodec, image_shape, tokens, offsets, m_tilde, label,
                     classes) -> TokenDataset:
        # No grammar to replay: every sequence has H * W * C tokens, every token is legal.
        n = int(np.prod(image_shape))
        lengths = np.diff(offsets)
        bad = np.flatnonzero(lengths != n)
        if bad.size:
            raise DatasetError(f"token shard is corrupt: raster sequence {int(bad[0])} has "
                               f"{int(lengths[bad[0]])} tokens, not {n}; re-tokenize")
        if np.any(m_tilde):
            raise DatasetError("token shard is corrupt: raster sequences have m_tilde 0")
        h, w = image_shape[:2]
        si, sp = raster_slots(np.arange(n), h, w, image_shape[2] if len(image_shape) == 3 else 1)
        reps = len(lengths)
        slots = np.tile(si.astype(np.int8), (reps, 1))
        pos = np.tile(sp.astype(np.float32), (reps, 1))
        legal = np.full(len(tokens), ALL_LEGAL, np.int8)
        return cls(codec, tuple(image_shape), tokens, offsets, m_tilde.astype(np.int64),
                   label.astype(np.int64), slots, pos, legal, tuple(classes))

    @classmethod
    def load(cls, dataset: str, codec: Codec, split: str = "train",
             tokenize_missing: bool = True, limit: int | None = None,
             context: bool = False) -> TokenDataset:
        """Load a split's shards (``context``: replay the decoder-state features too).

        With ``tokenize_missing`` (the default) the shards are first brought up to date by
        :func:`tokenize` (a no-op, bar hashing the images, when they are), so they always
        match the dataset as :func:`~wavar.data.datasets.load` returns it now.
        """
        folder = shard_dir(dataset, codec)
        meta_path = folder / "meta.json"
        if tokenize_missing:
            tokenize(dataset, codec, split, progress=False)
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if f"{split}_shards" not in meta:
            raise DatasetError(f"{dataset}/{split} is not tokenized for {codec_tag(codec)}:"
                               f" run 'wavar data tokenize {dataset}'")
        toks, offs, mts, labels = [], [0], [], []
        for i in range(meta[f"{split}_shards"]):
            path = folder / f"{split}-{i:04d}.npz"
            try:
                with np.load(path) as z:
                    t, o = z["tokens"], z["offsets"]
                    toks.append(t)
                    offs.extend((o[1:] + offs[-1]).tolist())
                    mts.append(z["m_tilde"])
                    labels.append(z["label"])
            except (OSError, ValueError, KeyError) as err:
                raise DatasetError(f"token shard {path} is unreadable ({err}); delete it and run "
                                   f"'wavar data tokenize {dataset}' again") from None
            if limit is not None and len(offs) - 1 >= limit:
                break
        offsets = np.array(offs, np.int64)
        tokens, m_tilde, label = np.concatenate(toks), np.concatenate(mts), np.concatenate(labels)
        if limit is not None:
            offsets = offsets[: limit + 1]
            tokens, m_tilde, label = tokens[: offsets[-1]], m_tilde[:limit], label[:limit]
        return cls.from_sequences(codec, tuple(meta["image_shape"]), tokens, offsets, m_tilde,
                                  label, meta.get("classes", ()), context)

    def subset(self, index: np.ndarray) -> TokenDataset:
        """The sequences ``index`` (in that order), as a dataset of their own."""
        index = np.asarray(index, np.int64)
        lens = self.lengths[index]
        offsets = np.zeros(len(index) + 1, np.int64)
        offsets[1:] = np.cumsum(lens)
        take = (np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in index])
                if len(index) else np.zeros(0, np.int64))
        return TokenDataset(self.codec, self.image_shape, self.tokens[take], offsets,
                            self.m_tilde[index], self.label[index], self.slots[take],
                            self.pos[take], self.legal[take], self.classes,
                            None if self.context is None else self.context[take])

    def concat(self, other: TokenDataset) -> TokenDataset:
        """This dataset's sequences followed by ``other``'s (same codec and image shape)."""
        if (other.image_shape != self.image_shape or other.codec.params() != self.codec.params()
                or (other.context is None) != (self.context is None)):
            raise DatasetError("cannot join token datasets of different codecs, image shapes "
                               "or feature sets")
        offsets = np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        return TokenDataset(self.codec, self.image_shape,
                            *(np.concatenate([getattr(self, k), getattr(other, k)])
                              for k in ("tokens",)), offsets,
                            *(np.concatenate([getattr(self, k), getattr(other, k)])
                              for k in ("m_tilde", "label", "slots", "pos", "legal")),
                            self.classes,
                            None if self.context is None
                            else np.concatenate([self.context, other.context]))

    def holdout(self, n: int) -> tuple[TokenDataset, TokenDataset]:
        """``(first len - n sequences, last n sequences)``: training and validation parts."""
        if not 0 < n < len(self):
            raise DatasetError(f"cannot hold out {n} of {len(self)} sequences for validation")
        k = len(self) - n
        return self.subset(np.arange(k)), self.subset(np.arange(k, len(self)))

    # -- batches (the model's data contract) -----------------------------------------------------
    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Sequences ``index`` padded to the longest: tokens, slots, pos, legal, valid, ..."""
        index = np.asarray(index)
        lens = self.lengths[index]
        t_max = int(lens.max())
        b = len(index)
        tokens = np.zeros((b, t_max), np.int64)
        slots = np.zeros((b, t_max, 5), np.int64)
        pos = np.zeros((b, t_max, 2), np.float32)
        legal = np.zeros((b, t_max), np.int64)
        valid = np.zeros((b, t_max), bool)
        context = (None if self.context is None else
                   np.zeros((b, t_max, self.context.shape[1]), np.int8))  # int8: 1/8 the bytes
        for r, i in enumerate(index):
            a, e = self.offsets[i], self.offsets[i + 1]
            n = e - a
            tokens[r, :n] = self.tokens[a:e]
            slots[r, :n] = self.slots[a:e]
            pos[r, :n] = self.pos[a:e]
            legal[r, :n] = self.legal[a:e]
            valid[r, :n] = True
            if context is not None:
                context[r, :n] = self.context[a:e]
        legal[~valid] = 1  # padding: a harmless non-empty mask (excluded from the loss)
        out = {"tokens": tokens, "slots": slots, "pos": pos, "legal": legal, "valid": valid,
               "m_tilde": self.m_tilde[index], "label": self.label[index]}
        if context is not None:
            out["context"] = context
        return out

    def sample_batch(self, batch_size: int, rng: np.random.Generator,
                     buckets: int = 1) -> dict[str, np.ndarray]:
        """A random training batch (with ``buckets`` > 1, of similar lengths: see
        :func:`bucketed_indices`)."""
        return self.batch(bucketed_indices(self.lengths, batch_size, rng, buckets))

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for s in range(0, len(self), batch_size):
            yield self.batch(np.arange(s, min(len(self), s + batch_size)))

    def class_statistics(self) -> dict[str, np.ndarray]:
        """Per class: the empirical distribution of m~ (for the sampler's initialisation)."""
        n_classes = int(self.label.max()) + 1
        lo, hi = int(self.m_tilde.min()), int(self.m_tilde.max())
        hist = np.zeros((n_classes, hi - lo + 1), np.int64)
        np.add.at(hist, (self.label, self.m_tilde - lo), 1)
        return {"m_tilde_min": np.array(lo), "m_tilde_hist": hist}
