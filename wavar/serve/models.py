"""The models a server offers, by name, and the process-wide cache of the loaded ones.

A client names a model; the name is looked up in a table built from the zoo, the server's
``--model`` list and the folders under ``--model-root``. It is never joined to a path, so no
name (``../x``, ``/etc``) reaches a file the operator did not offer.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from wavar import zoo
from wavar.errors import CheckpointError
from wavar.model import weights
from wavar.serve.errors import ApiError
from wavar.serve.settings import Settings

log = logging.getLogger("wavar.serve")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# loaded models kept in memory: the whole zoo fits (tens of MB each in float32)
CACHED_MODELS = max(8, len(zoo.MODELS))


@dataclass(frozen=True)
class ModelEntry:
    """An offered model: its name, its folder, and whether it is a zoo model (verified by
    sha256 on load)."""

    name: str
    path: Path
    description: str = ""
    in_zoo: bool = False

    @property
    def config(self) -> dict[str, Any]:
        """The model's ``config.json`` (read without loading the weights)."""
        file = self.path / "config.json"
        try:
            return _read_config(file, file.stat().st_mtime_ns)
        except (OSError, ValueError) as e:
            raise ApiError(500, f"model {self.name!r} has an unreadable config.json: {e}") from e

    def info(self) -> dict[str, Any]:
        """What the page shows and checks: classes, image shape, language, and the sampling
        the model recommends (its config's ``sampling``: the page fills its fields with it)."""
        codec = self.config.get("codec", {})
        classes = codec.get("classes") or [str(i) for i in range(self.config["num_classes"])]
        shape = list(codec.get("image_shape", []))
        return {"name": self.name, "description": self.description, "classes": list(classes),
                "image_shape": shape + [1] * (3 - len(shape)),
                "language": codec.get("language", "zeroblock"),
                "wavelet": codec.get("wavelet"), "max_tokens": self.config.get("max_seq_len"),
                "sampling": dict(self.config.get("sampling") or {})}


@lru_cache(maxsize=64)
def _read_config(file: Path, mtime_ns: int) -> dict[str, Any]:
    # keyed on the modification time too: a model folder rewritten in place is read again
    return json.loads(file.read_text())


def _folder_entry(path: Path, name: str | None = None) -> ModelEntry | None:
    if (path / "config.json").is_file() and weights.present(path):
        return ModelEntry(name or path.name, path, f"model folder {path.name}")
    return None


class ModelRegistry:
    """Names -> :class:`ModelEntry`, and the loaded models (loaded once, then cached)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.model_root.resolve() if settings.model_root else None
        self._chosen = self._choose(settings.models) if settings.models else None
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    # -- which models

    def _zoo_entry(self, name: str) -> ModelEntry:
        e = zoo.MODELS[name]
        return ModelEntry(name, e.path, e.description, in_zoo=True)

    def _root_entries(self) -> dict[str, ModelEntry]:
        out: dict[str, ModelEntry] = {}
        if self.root is None or not self.root.is_dir():
            return out
        for child in sorted(self.root.iterdir()):
            if NAME.fullmatch(child.name) and child.is_dir():
                entry = _folder_entry(child)
                if entry is not None:
                    out[child.name] = entry
        return out

    def _choose(self, names: tuple[str, ...]) -> dict[str, ModelEntry]:
        """The ``--model`` list: each a zoo name, a folder under the root, or a folder path."""
        out: dict[str, ModelEntry] = {}
        under_root = self._root_entries()
        for name in names:
            if name in zoo.MODELS:
                entry = self._zoo_entry(name)
            elif name in under_root:
                entry = under_root[name]
            else:
                entry = _folder_entry(Path(name).expanduser().resolve())
                if entry is None:
                    raise CheckpointError(
                        f"--model {name}: not a zoo model ({', '.join(zoo.MODELS)}), not a "
                        "folder under --model-root, and not a folder holding config.json and "
                        "model.safetensors (or its shards)")
                if not NAME.fullmatch(entry.name):
                    raise CheckpointError(f"--model {name}: the folder name {entry.name!r} is "
                                          "not usable as a model name (letters, digits, . _ -)")
            if entry.name in out:
                raise CheckpointError(f"--model: two models are named {entry.name!r}")
            out[entry.name] = entry
        return out

    def entries(self) -> dict[str, ModelEntry]:
        """The offered models by name (the root folder is re-read: new models show up)."""
        if self._chosen is not None:
            return dict(self._chosen)
        out = {name: self._zoo_entry(name) for name in zoo.MODELS}
        for name, entry in self._root_entries().items():
            out.setdefault(name, entry)  # a zoo name keeps meaning the zoo model
        return out

    def entry(self, name: str) -> ModelEntry:
        """The entry named ``name``, else a 400 (not a name) or 404 (not offered)."""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ApiError(400, f"{name!r} is not a model name: names are letters, digits, "
                                "'.', '_' and '-' (no paths); GET /api/models lists them")
        entries = self.entries()
        if name not in entries:
            raise ApiError(404, f"unknown model {name!r}; this server offers "
                                f"{', '.join(entries) or 'no models'}")
        return entries[name]

    # -- loaded models

    def load(self, name: str) -> Any:
        """The model ``name``, loaded on first use onto the server's device and kept."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            entry = self.entry(name)
            from wavar.model.transformer import WaveletGPT

            t = time.perf_counter()
            path = zoo.resolve(name) if entry.in_zoo else entry.path  # zoo: sha256-checked
            try:
                model = WaveletGPT.from_pretrained(path, device=self.settings.device)
            except CheckpointError as e:
                raise ApiError(500, f"model {name!r} cannot be loaded: {e}") from e
            log.info("loaded model %s (%.2fM parameters) on %s in %.1f s", name,
                     model.num_params() / 1e6, self.settings.device, time.perf_counter() - t)
            self._loaded[name] = model
            while len(self._loaded) > CACHED_MODELS:
                dropped, _ = self._loaded.popitem(last=False)
                log.info("unloaded model %s (more than %d loaded)", dropped, CACHED_MODELS)
            return model

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)
