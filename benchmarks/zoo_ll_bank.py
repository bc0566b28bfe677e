"""Add the per-class LL bank (for ``--ll-init``) to the zoo models trained before it existed.

The bank is computed from the cached training split exactly as ``wavar train`` now records it;
only config.json changes (the weights and their sha256 do not).

    python benchmarks/zoo_ll_bank.py
"""

from __future__ import annotations

import json

from wavar.data.datasets import load
from wavar.model.transformer import WaveletGPT
from wavar.sample.forcing import ll_bank
from wavar.sample.generate import codec_of
from wavar.zoo import MODELS

for name, entry in MODELS.items():
    model = WaveletGPT.from_pretrained(name)
    data = load(entry.dataset, "train")
    path = entry.path / "config.json"
    cfg = json.loads(path.read_text())
    cfg["codec"]["ll_bank"] = ll_bank(codec_of(model), data.x, data.y)
    path.write_text(json.dumps(cfg, indent=2))
    print(f"{name}: LL bank of {sum(len(b['m_tilde']) for b in cfg['codec']['ll_bank'])} images")
