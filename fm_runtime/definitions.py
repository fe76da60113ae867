"""The contract as data: fm_runtime/contract.json, read once. Every fm.* key with its value schema,
which kinds require it, the version that introduced it, its default and limits; graph names;
the format version; solver tableaus (dopri5 included) and schedule bounds. The Python reader
(model/), the solvers (solve/), the JavaScript runtime (js/src) and the docs check all take
these facts from that one file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTRACT: dict[str, Any] = json.loads((Path(__file__).parent / "contract.json").read_text(encoding="utf-8"))
LIMITS: dict[str, int] = CONTRACT["limits"]
KEYS: dict[str, dict[str, Any]] = CONTRACT["keys"]
