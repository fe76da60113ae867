"""The export side's error: one line, exit code 8."""
from __future__ import annotations

from fm_runtime.errors import EXIT_EXPORT, FmError


class ExportError(FmError):
    exit_code = EXIT_EXPORT
