"""Training configuration: a dataclass, read from TOML, with ``key=value`` overrides.

A config file sets :class:`TrainConfig` fields at its top level, plus two tables::

    model = "small"          # preset of wavar.model.transformer.PRESETS
    [model_args]             # overrides of the preset's ModelConfig fields
    n_layer = 8
    [codec]                  # codec parameters, recorded in the saved model config
    wavelet = "bior4.4"

On the command line: ``lr=3e-4 compile=true model_args.n_layer=8 codec.wavelet=haar``. Each
value is typed by its dataclass field; an unknown key or a value of the wrong type raises
:class:`ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wavar.codec import codec_from_params
from wavar.errors import WavarError
from wavar.model.config import ModelConfig
from wavar.model.transformer import config_from_preset


class ConfigError(WavarError, ValueError):
    """A training config names an unknown key or gives a value of the wrong type."""


@dataclass
class TrainConfig:
    """Everything a training run needs besides its data.

    Steps count optimizer updates. ``*_every`` = 0 means "only at the end" (eval, samples) or
    "only at the end and at the time limit" (checkpoints).

    Training in chunks: ``time_limit_s`` ends each call with a checkpoint and the next call
    resumes from it; ``budget_s`` is the wall time of the whole run (all chunks, counted from
    the start of each call's training loop, ``torch.compile`` and evaluations included), over
    which the cosine decays. A chunk may train on other data than the one before (CIFAR-10 on
    rotating source shards): the checkpoint's data generator does not depend on the dataset
    size, and resuming checks the model architecture and codec, not the data statistics
    recorded beside them. ``val_holdout`` gives such a chunk a validation set without the test
    split.
    """

    dataset: str = "mnist"  # a name for the data source; the CLI maps it to shards
    out_dir: str = "runs/debug"  # metrics.jsonl, ckpt.pt, model/ (published EMA weights)
    model: str = "tiny"  # preset name
    model_args: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides
    codec: dict[str, Any] = field(default_factory=dict)  # recorded in the model config
    batch_size: int = 32  # sequences per GPU per step
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    ema_decay: float = 0.999
    eval_every: int = 500
    eval_batches: int = 0  # 0 = the whole validation source
    ckpt_every: int = 1000
    sample_every: int = 0  # how often on_eval (sample grids) runs
    log_every: int = 10
    compile: bool = False  # torch.compile each transformer block (one graph per padded length)
    pad_to: int = 512  # on CUDA, batches are padded to a multiple of this: few compiled shapes
    length_buckets: int = 1  # >1: each batch one of this many length-sorted blocks of a
    # larger random draw (less padding: wavar.data.shards.bucketed_indices)
    pack_len: int = 0  # >0: each batch's sequences packed end to end into rows of this many
    # positions (wavar.train.packing): no padding, the plain uniform draw; batch_size still
    # counts sequences. At least max_seq_len + 1; on CUDA wants compile (FlexAttention)
    seed: int = 0
    time_limit_s: float = 0.0  # stop, checkpoint and return after this much wall time; 0 = never
    wall_limit_s: float = 0.0  # `wavar train`: the same, counted from the command's start, its
    #                            set-up (tokenizing, decoder-state features) included: a job or
    #                            machine lent for a fixed time; 0 = none. The earlier limit wins
    budget_s: float = 0.0  # >0: the run lasts this much training wall time (across resumes),
    #                        the cosine follows time, and max_steps is only a cap
    val_holdout: int = 0  # 0: validate on the test split; N > 0: the last N training images
    #                       are the validation set and are left out of training (for runs whose
    #                       data has no test split, e.g. a CIFAR-10 chunk without test.npz)
    hflip: bool = False  # also train on every training image mirrored left-right (coded
    #                      from the flipped image, not the tokens; each image drawn half the time
    #                      each way); held-out images stay out in both orientations
    device: str = "auto"  # "auto", "cpu", "cuda"
    peak_flops: float = 989e12  # per-device peak for MFU: H200 bf16 dense
    resume: bool = True  # continue from out_dir/ckpt.pt if it exists
    init_from: str = ""  # zoo name or model folder: start from its weights (same architecture)
    #                      with a fresh optimizer and schedule; ignored when out_dir/ckpt.pt
    #                      resumes the run (continued training when the old optimizer is gone)
    schedule_start_s: float = 0.0  # with init_from and budget_s: the seconds of this same
    #                                schedule that the init_from weights trained already (an
    #                                earlier session's run whose optimizer state stayed behind):
    #                                the cosine, budget_s and elapsed_s go on from there
    snapshot_every_s: float = 0.0  # >0: also publish the EMA weights to out_dir/snapshots/
    #                                every this much run wall time (learning curves of FID)

    def __post_init__(self) -> None:
        positive = ("batch_size", "log_every", "pad_to", "length_buckets")
        non_negative = ("max_steps", "warmup_steps", "eval_every", "eval_batches", "ckpt_every",
                        "sample_every", "lr", "min_lr", "weight_decay", "grad_clip",
                        "time_limit_s", "wall_limit_s", "budget_s", "val_holdout",
                        "snapshot_every_s", "schedule_start_s",
                        "pack_len")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.pack_len and self.length_buckets > 1:
            raise ConfigError("pack_len and length_buckets > 1 both cut padding: packing keeps "
                              "the uniform draw (buckets make batches of like lengths); use one")
        if self.schedule_start_s and not (self.init_from and
                                          0 < self.schedule_start_s < self.budget_s):
            raise ConfigError(f"schedule_start_s {self.schedule_start_s} takes up a time "
                              f"schedule midway: it needs init_from (the weights trained so "
                              f"far) and a budget_s above it (got {self.budget_s})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for checkpoints and logs)."""
        return dataclasses.asdict(self)

    def model_config(self) -> ModelConfig:
        """The :class:`ModelConfig`: the preset, its overrides and the codec parameters.

        The vocabulary follows the codec (7 tokens zero-block, 256 raster); ``model_args`` may
        restate it but not contradict it.
        """
        args = dict(self.model_args)
        try:
            if self.codec:
                vocab = codec_from_params(self.codec).lang.vocab_size
                if args.setdefault("vocab_size", vocab) != vocab:
                    raise ValueError(f"model_args.vocab_size={args['vocab_size']} but the codec "
                                     f"({self.codec.get('language', 'zeroblock')}) has {vocab} "
                                     "tokens")
            return config_from_preset(self.model, **args, codec=dict(self.codec))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"bad model config: {e}") from e


def load_config(path: str | os.PathLike | None = None,
                overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML config (or start from the defaults) and apply ``key=value`` overrides.

    Examples
    --------
    >>> cfg = load_config(None, ["lr=3e-4", "model_args.n_layer=4", "codec.wavelet=haar"])
    >>> cfg.lr, cfg.model_args, cfg.codec
    (0.0003, {'n_layer': 4}, {'wavelet': 'haar'})
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        for key, value in raw.items():
            _set(values, key, value, where=str(path), from_text=False)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set(values, key.strip(), text.strip(), where="command line", from_text=True)
    return TrainConfig(**values)


_TRAIN_TYPES = typing.get_type_hints(TrainConfig)
_MODEL_TYPES = {k: v for k, v in typing.get_type_hints(ModelConfig).items() if k != "codec"}


def _set(values: dict[str, Any], key: str, value: Any, where: str, from_text: bool) -> None:
    table, dot, sub = key.partition(".")
    if table not in _TRAIN_TYPES:
        raise ConfigError(f"unknown config key {key!r} ({where}); known: {sorted(_TRAIN_TYPES)}")
    if table in ("model_args", "codec"):
        items = {sub: value} if dot else value
        if not isinstance(items, dict):
            raise ConfigError(f"{key} must be a table ({where}), got {value!r}")
        merged = dict(values.get(table, {}))
        for name, v in items.items():
            if table == "codec":  # opaque to training: TOML-typed, else the raw string
                merged[name] = _parse_toml_value(v) if from_text else v
                continue
            if name not in _MODEL_TYPES:
                raise ConfigError(f"unknown model_args key {name!r} ({where}); known: "
                                  f"{sorted(_MODEL_TYPES)}")
            merged[name] = _typed(f"model_args.{name}", v, _MODEL_TYPES[name], where, from_text)
        values[table] = merged
    elif dot:
        raise ConfigError(f"unknown config key {key!r} ({where}): {table} is not a table")
    else:
        values[key] = _typed(key, value, _TRAIN_TYPES[key], where, from_text)


def _parse_toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _typed(name: str, value: Any, typ: Any, where: str, from_text: bool) -> Any:
    """``value`` as type ``typ``, or a ConfigError naming the key."""
    original = value

    def bad() -> ConfigError:
        return ConfigError(f"{name} = {original!r} ({where}) is not a valid {_type_name(typ)}")

    if from_text and typ is not str:
        value = _parse_toml_value(value)
        if typing.get_origin(typ) is tuple and isinstance(value, str):  # "0.9,0.95"
            value = [_parse_toml_value(v.strip()) for v in value.strip("()[]").split(",")]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if typ is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if typ is str:
        if from_text and value[:1] in "\"'":
            value = _parse_toml_value(value)
        if isinstance(value, str):
            return value
        raise bad()
    if typing.get_origin(typ) is tuple:
        args = typing.get_args(typ)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise bad()
        return tuple(_typed(name, v, a, where, False) for v, a in zip(value, args, strict=True))
    raise bad()


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) if typing.get_origin(typ) is None else str(typ)
