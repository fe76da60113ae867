"""What a conditioned velocity graph takes besides x and t (contract version 4): named extra
inputs with shapes that may share symbols with the data (`mu` [16, T], `mask` [1, T]), the
symbols' bounds, and the nulls guidance uses. Parses the command line's spellings, checks them,
and makes the concrete bindings and example feeds the export traces and verifies with."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from fm_runtime.definitions import CONTRACT
from fm_runtime.model.schema import MAX_DIM, is_symbol

from .errors import ExportError

_INPUT = re.compile(r"^(?P<dtype>float32|int64)\[(?P<shape>[^\]]*)\](?::(?P<role>\w+))?$")
ROLES = tuple(CONTRACT["keys"]["inputs"]["schema"]["items"]["properties"]["role"]["enum"])
NULLS = tuple(CONTRACT["keys"]["inputs"]["schema"]["items"]["properties"]["null"]["enum"])


def parse_shape(text, what: str = "data shape", low: int = 1) -> tuple:
    """'16,T' or [16, 'T'] -> (16, 'T'): positive sizes or symbols."""
    items = [s.strip() for s in text.replace("x", ",").split(",") if s.strip()] if isinstance(text, str) else list(text)
    out = []
    for s in items:
        if isinstance(s, str) and not s.isdigit():
            if not is_symbol(s):
                raise ExportError(f"{what}: {s!r} is neither a size nor a symbol (letters, digits, _)")
            out.append(s)
        elif isinstance(s, bool) or len(str(s)) > 10 or int(s) < 1 or int(s) > MAX_DIM:
            shown = str(s) if len(str(s)) <= 20 else f"{str(s)[:20]}... ({len(str(s)):,} digits)"
            raise ExportError(f"{what}: sizes are positive integers up to {MAX_DIM:,}, got {shown}")
        else:
            out.append(int(s))
    if len(out) < low:
        raise ExportError(f"{what} is empty; give sizes or symbols like 16,T")
    fixed = int(np.prod([d for d in out if isinstance(d, int)], dtype=np.float64))
    if fixed > MAX_DIM:
        raise ExportError(f"{what}: {list(out)} holds {fixed:,} values per row before any symbol; the runtime takes at "
                          f"most {MAX_DIM:,}")
    return tuple(out)


def parse_input(name: str, text) -> dict:
    """'float32[16,T]' or 'float32[1,T]:mask' (or a dict) -> {"name", "dtype", "shape", "role"}."""
    if isinstance(text, dict):
        item = {"name": name, "role": "condition", **text}
        item["shape"] = parse_shape(item.get("shape", ()), f"input {name}", low=0)
    else:
        m = _INPUT.match(str(text).replace(" ", ""))
        if not m:
            raise ExportError(f"input {name}: {text!r} is not DTYPE[SHAPE][:ROLE], e.g. float32[16,T] or "
                              "float32[1,T]:mask (dtype float32 or int64)")
        item = {"name": name, "dtype": m["dtype"], "shape": parse_shape(m["shape"], f"input {name}", low=0),
                "role": m["role"] or "condition"}
    if item["role"] not in ROLES:
        raise ExportError(f"input {name}: role {item['role']!r} is not one of {', '.join(ROLES)}")
    if item.get("dtype") not in ("float32", "int64"):
        raise ExportError(f"input {name}: dtype {item.get('dtype')!r} is not float32 or int64")
    return item


def stored_null(name: str, value, item: dict) -> np.ndarray:
    """A null stored in the file: an array (or a .npy file's) shaped as the input with 1 for each
    symbol (it broadcasts along it), e.g. a learned speaker vector [8] or a channel vector [16, 1]."""
    if isinstance(value, str):
        if not value.endswith(".npy"):
            raise ExportError(f"null {name}: {value!r} is not zeros, stage or a .npy file of the stored null")
        try:
            value = np.load(value, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ExportError(f"null {name}: cannot read {value}: {e}") from None
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    want = tuple(1 if isinstance(d, str) else d for d in item["shape"])
    if arr.dtype.kind not in "fiu" or arr.shape != want or (arr.dtype.kind == "f" and not np.isfinite(arr).all()):
        raise ExportError(f"null {name}: a stored null is finite numbers of shape {list(want)} (the input's, 1 for each "
                          f"symbol), got {arr.dtype} {list(arr.shape)}")
    return arr.astype(np.float32 if item["dtype"] == "float32" else np.int64)


@dataclass
class Signature:
    """x's shape (with symbols), the extra inputs in graph order, the symbols' bounds."""

    data_shape: tuple
    inputs: list[dict] = field(default_factory=list)
    symbols: dict[str, dict] = field(default_factory=dict)
    null_values: dict[str, np.ndarray] = field(default_factory=dict)     # nulls stored in the file

    @classmethod
    def of(cls, data_shape, inputs=None, symbols=None, nulls=None, extra_shapes=()) -> "Signature":
        """extra_shapes: shapes of a condition stage's inputs, whose symbols are declared here too."""
        shape = parse_shape(data_shape)
        items = [parse_input(k, v) for k, v in (inputs or {}).items()] if isinstance(inputs, dict) else \
            [parse_input(i["name"], i) for i in (inputs or [])]
        stored = {}
        for name, null in (nulls or {}).items():
            item = next((i for i in items if i["name"] == name), None)
            if item is None or item["role"] != "condition":
                raise ExportError(f"null {name}: only a declared condition input has a null value")
            if isinstance(null, str) and null in NULLS and null != "stored":
                item["null"] = null
            else:
                item["null"], stored[name] = "stored", stored_null(name, null, item)
        reserved = {"x", "t", "y", "z", "e", "jv", "v"}
        for item in items:
            if item["name"] in reserved or sum(i["name"] == item["name"] for i in items) > 1:
                raise ExportError(f"input {item['name']}: the name is taken (x, t, y and every other input "
                                  "name the graph's inputs)")
        used = [d for d in shape if isinstance(d, str)] + [d for i in items for d in i["shape"] if isinstance(d, str)] + \
            [d for extra in extra_shapes for d in extra if isinstance(d, str)]
        bounds = {s: dict((symbols or {}).get(s, {})) for s in dict.fromkeys(used)}
        unknown = sorted(set(symbols or {}) - set(bounds))
        if unknown:
            raise ExportError(f"symbols {', '.join(unknown)} appear in no shape")
        return cls(shape, items, bounds, stored)

    @property
    def names(self) -> list[str]:
        return [i["name"] for i in self.inputs]

    def sizes(self, which: int = 0) -> dict[str, int]:
        """A binding of every symbol inside its bounds: which = 0, 1, 2 give three different ones."""
        out = {}
        for name, b in self.symbols.items():
            step, low = b.get("multiple_of", 1), max(b.get("min", 1), 2)
            high = b.get("max", 64)
            first = -(-low // step) * step
            want = first + step * [3, 1, 6][which % 3]
            out[name] = max(first, min(want, high - high % step))
        return out

    def concrete(self, shape, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in shape)

    def examples(self, b: int, rng: np.random.Generator, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """Random extra inputs for b rows: conditions N(0, 1), masks with a random valid prefix
        along their last symbolic axis, guidance scales in [1, 4], int64 ids in [0, 4)."""
        feed = {}
        for item in self.inputs:
            shape = (b, *self.concrete(item["shape"], sizes))
            if item["dtype"] == "int64":
                feed[item["name"]] = rng.integers(0, 4, shape).astype(np.int64)
            elif item["role"] == "mask":
                mask = np.ones(shape, np.float32)
                if shape[-1] > 1:
                    for r in range(b):
                        mask[r, ..., int(rng.integers(max(1, shape[-1] // 2), shape[-1] + 1)):] = 0.0
                feed[item["name"]] = mask
            elif item["role"] == "guidance":
                feed[item["name"]] = rng.uniform(1.0, 4.0, shape).astype(np.float32)
            else:
                feed[item["name"]] = rng.standard_normal(shape).astype(np.float32)
        return feed

    def metadata(self) -> dict:
        """fm.inputs, fm.symbols and fm.null_values as build_metadata takes them."""
        return {"inputs": [dict(i, shape=list(i["shape"])) for i in self.inputs], "symbols": self.symbols,
                "null_values": self.null_values}
