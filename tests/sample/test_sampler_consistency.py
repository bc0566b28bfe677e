"""The sampler and the training data path feed the model the same inputs.

The sampler (``generate``, CPU path) draws every token from the grammar-masked softmax of one
cached decode step. Rebuilding the same sequences into a training batch, the way training does
(``TokenDataset.from_sequences`` -> ``.batch`` -> ``batch_to_device`` -> ``model(batch)``),
must give every drawn token the same log-probability, and the per-position inputs the sampler
fed (slot, (y, x) centre, previous token, m~, label, legal mask, sequence position) must be
the ones in the batch. A mismatch here (an off-by-one slot, a stale m~, a wrong legal mask, a
shifted position) would make samples worse than the model's likelihood says; agreement means
sample quality is the model's own.

Run on the bundled zoo models in fp32 on the CPU; the budgets keep it to a few seconds while
still crossing the KV-cache span blocks (256 steps) and, with rows of different lengths, the
batch compaction of finished rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wavar.codec.grammar import CONTEXT_NAMES, N_CONTEXT
from wavar.data.shards import TokenDataset
from wavar.model.config import ModelConfig
from wavar.model.transformer import WaveletGPT
from wavar.sample import filters
from wavar.sample import generate as gen_mod
from wavar.train.loop import batch_to_device

LABELS = [0, 3, 5, 9]
TOL = 1e-4  # nats, per token


def _sample_recording(model, labels, monkeypatch, **kwargs):
    """Run ``generate`` and record, per (sequence, step), what the sampler fed and drew.

    Returns the sequences and a dict of (n, T) / (n, T, k) arrays: ``logp`` (log-softmax of
    the masked logits at the drawn token), ``legal``, ``slots``, ``pos``, ``prev`` (-2 at the
    prefill step, whose previous token is the model's BOS), ``m_tilde``, ``t`` (the step index
    the decode step was told) and ``label`` (the prefill's labels, (n,)).
    """
    steps, legals, logits_seen, drawn = [], [], [], []
    prefill, decode_step = model.prefill, model.decode_step

    def rec_prefill(cache, labels_t, m_tilde, slots, pos, tokens=None, context=None):
        steps.append(dict(t=0, prev=None, slots=slots.clone(), pos=pos.clone(),
                          m_tilde=m_tilde.clone(), label=labels_t.clone(), context=context))
        return prefill(cache, labels_t, m_tilde, slots, pos, tokens, context=context)

    def rec_decode(cache, prev, slots, pos, m_tilde, t, context=None):
        steps.append(dict(t=int(t), prev=prev.clone(), slots=slots.clone(), pos=pos.clone(),
                          m_tilde=m_tilde.clone(), context=context))
        return decode_step(cache, prev, slots, pos, m_tilde, t, context=context)

    apply_mask, sample = filters.apply_legal_mask, filters.sample

    def rec_mask(logits, legal):
        legals.append(legal.clone())
        return apply_mask(logits, legal)

    def rec_sample(logits, generator=None):
        tok = sample(logits, generator)
        logits_seen.append(logits.clone())
        drawn.append(tok.clone())
        return tok

    monkeypatch.setattr(model, "prefill", rec_prefill)
    monkeypatch.setattr(model, "decode_step", rec_decode)
    monkeypatch.setattr(filters, "apply_legal_mask", rec_mask)
    monkeypatch.setattr(filters, "sample", rec_sample)
    seqs = gen_mod.generate(model, labels, **kwargs)
    monkeypatch.undo()

    n = len(seqs)
    lens = np.array([len(s) for s in seqs])
    T = int(lens.max())
    rec = {"logp": torch.full((n, T), float("nan")), "legal": torch.zeros(n, T, dtype=torch.long),
           "slots": torch.full((n, T, 5), -1, dtype=torch.long), "pos": torch.zeros(n, T, 2),
           "prev": torch.full((n, T), -1, dtype=torch.long),
           "m_tilde": torch.full((n, T), -99, dtype=torch.long),
           "t": torch.full((n, T), -1, dtype=torch.long), "label": steps[0]["label"],
           "context": torch.full((n, T, N_CONTEXT), -1, dtype=torch.long)}
    assert len(steps) == len(legals) == len(logits_seen) == len(drawn)
    rows = np.arange(n)  # original sequence of each batch row (the sampler compacts in order)
    for t, (st, legal, logits, tok) in enumerate(zip(steps, legals, logits_seen, drawn,
                                                     strict=True)):
        if len(tok) < len(rows):  # compaction: the rows still generating at step t remain
            rows = rows[lens[rows] > t]
        assert len(rows) == len(tok)
        logp = torch.log_softmax(logits, -1)
        for r, i in enumerate(rows):
            if t >= lens[i]:
                continue  # a finished row riding along until the next compaction
            assert int(tok[r]) == int(seqs[i].tokens[t]), f"sequence {i} step {t}"
            rec["logp"][i, t] = logp[r, tok[r]]
            rec["legal"][i, t] = legal[r]
            rec["slots"][i, t] = st["slots"][r]
            rec["pos"][i, t] = st["pos"][r]
            rec["prev"][i, t] = -2 if st["prev"] is None else st["prev"][r]
            rec["m_tilde"][i, t] = st["m_tilde"][r]
            rec["t"][i, t] = st["t"]
            if st["context"] is not None:
                rec["context"][i, t] = st["context"][r]
    return seqs, rec


def _training_batch(model, seqs, labels) -> dict[str, torch.Tensor]:
    """The sequences as the training loop sees them (replayed slots, masks; padded batch)."""
    codec = gen_mod.codec_of(model)
    lens = np.array([len(s) for s in seqs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    data = TokenDataset.from_sequences(
        codec, tuple(model.config.codec["image_shape"]), np.concatenate([s.tokens for s in seqs]),
        offsets, np.array([s.header.m_tilde for s in seqs], np.int16),  # int16 as in the shards
        np.asarray(labels, np.int64), context=bool(model.config.decoder_state))
    return batch_to_device(data.batch(np.arange(len(seqs))), torch.device("cpu"))


def _token_logp(model, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(batch)  # the training forward (masked by batch["legal"])
    return torch.log_softmax(logits, -1).gather(-1, batch["tokens"][..., None])[..., 0]


def _decoder_state_model(zoo_name: str = "mnist-small") -> WaveletGPT:
    """A small model that reads the decoder-state features, on a zoo model's codec, with
    random weights large enough that every input moves the logits."""
    zoo = WaveletGPT.from_pretrained(zoo_name).config.to_dict()
    model = WaveletGPT(ModelConfig.from_dict({**zoo, "n_layer": 2, "n_embd": 64, "n_head": 4,
                                              "n_kv_head": 2, "decoder_state": 1}))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("name, kwargs", [
    ("mnist-small", {}),  # complete sequences: rows end at different steps -> compaction
    ("fashion-mnist-small", {"max_plane": 4}),  # planes 0..3: ~600 tokens, lengths differ per m~
    ("decoder-state", {"max_plane": 2}),  # a model that reads context_of's features
    # issue 19's kind: colour, lossless (cdf53 + RCT to threshold 1), the other channels'
    # significance among the features
    ("decoder-state-colour", {"max_plane": 1}),
])
def test_sampler_and_training_forward_agree(name, kwargs, monkeypatch):
    torch.manual_seed(0)
    model = (_decoder_state_model() if name == "decoder-state"
             else _decoder_state_model("cifar10-lossless") if name == "decoder-state-colour"
             else WaveletGPT.from_pretrained(name).float().eval())
    seqs, rec = _sample_recording(model, LABELS, monkeypatch, seed=0, temperature=1.0,
                                  cfg=1.0, **kwargs)
    lens = np.array([len(s) for s in seqs])
    assert lens.min() > 300 and len(set(lens.tolist())) > 1  # the budget did its job
    batch = _training_batch(model, seqs, LABELS)
    valid = batch["valid"]
    n, T = valid.shape
    assert torch.equal(valid, torch.as_tensor(np.arange(T)[None] < lens[:, None]))

    # inputs, position by position
    assert torch.equal(rec["label"], batch["label"])
    m_header = torch.as_tensor([s.header.m_tilde for s in seqs])
    assert torch.equal(batch["m_tilde"], m_header)
    assert torch.equal(rec["m_tilde"][valid], m_header[:, None].expand(n, T)[valid])
    assert torch.equal(rec["legal"][valid], batch["legal"][valid])
    assert torch.equal(rec["slots"][valid], batch["slots"][valid])
    assert torch.equal(rec["pos"][valid], batch["pos"][valid].float())
    prev_train = torch.cat([torch.full((n, 1), -2), batch["tokens"][:, :-1]], dim=1)  # -2: BOS
    assert torch.equal(rec["prev"][valid], prev_train[valid])
    assert torch.equal(rec["t"][valid], torch.arange(T).expand(n, T)[valid])  # position t + 1
    if model.config.decoder_state:
        assert torch.equal(rec["context"][valid], batch["context"][valid].long())
        assert len(torch.unique(batch["context"][valid], dim=0)) > 20
        if len(model.config.codec["image_shape"]) == 3:  # colour
            channels = batch["context"][valid][:, CONTEXT_NAMES.index("channels")]
            assert set(channels.tolist()) == {0, 1, 2}  # the other channels' significance

    # outputs: every drawn token's log-probability
    logp_train = _token_logp(model, batch)
    diff = (rec["logp"] - logp_train).abs()[valid]
    assert not torch.isnan(diff).any()
    worst = int(diff.argmax())
    assert diff.max() < TOL, f"max |dlogp| {diff.max():.3g} at valid token #{worst}"

    # the draws follow the model: their mean code length is the model's mean entropy
    with torch.no_grad():
        lp = torch.log_softmax(model(batch), -1)
    entropy = -(torch.where(lp.isfinite(), lp.exp() * lp, 0)).sum(-1)[valid].mean()
    nll = -logp_train[valid].mean()
    assert abs(float(nll - entropy)) < 0.1 * float(entropy) + 0.01

    # negative control: the comparison has teeth (slots shifted by one token disagree)
    shifted = dict(batch, slots=torch.roll(batch["slots"], 1, dims=1))
    shifted["legal"] = batch["legal"]
    assert (_token_logp(model, shifted) - logp_train).abs()[valid].max() > 1e-2
    if model.config.decoder_state:  # ... and so do shifted decoder-state features
        shifted = dict(batch, context=torch.roll(batch["context"], 1, dims=1))
        assert (_token_logp(model, shifted) - logp_train).abs()[valid].max() > 1e-2
