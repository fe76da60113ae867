"""What kind of file a path holds, from its first bytes; without torch, so that fm-export
--add-divergence runs with onnx alone."""
from __future__ import annotations

from pathlib import Path

from fm_runtime.errors import ModelError


def sniff(path: str) -> str:
    """'onnx', 'pt2', 'torch' (a torch.save zip) or 'unknown', from the file's first bytes."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{path}: checkpoint not found" if p.suffix != ".onnx" else f"{path}: file not found")
    head = p.read_bytes()[:4]
    if head.startswith(b"PK"):
        import zipfile
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):        # "PK" and then not a readable zip
            return "unknown"
        return "pt2" if any(n.endswith(("archive_format", "models/model.json")) or "/models/" in n for n in names) else "torch"
    if head[:1] in (b"\x08", b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x3a", b"\x42"):   # protobuf fields of ModelProto
        return "onnx"
    return "unknown"
