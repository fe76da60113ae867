"""The training progress every fm-train loop shows (fit, reflow, the task models): a bar on a
terminal, plain lines in a log."""
from __future__ import annotations

import time


def progress_bar(total: int, enabled: bool | None, initial: int = 0):
    """A progress bar on a terminal; in a log (stderr not a terminal) one line every 10% of the
    run or 30 s, whichever comes first; None when disabled (--no-progress)."""
    import sys
    if enabled is False:
        return None
    if enabled is None and not sys.stderr.isatty():
        return _LineProgress(total, initial)
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="training", unit="step", dynamic_ncols=True, leave=True)


class _LineProgress:
    """The progress bar's interface (update, set_postfix, close) as plain lines for logs."""

    def __init__(self, total: int, initial: int = 0):
        self.total, self.done, self.postfix = total, initial, ""
        self.start = self.last = time.perf_counter()
        self.next = initial + max(1, total // 10)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.done >= self.next or now - self.last >= 30 or self.done == self.total:
            import sys
            print(f"training: {self.done}/{self.total} steps ({100 * self.done / max(1, self.total):.0f}%), "
                  f"{now - self.start:.0f} s{', ' + self.postfix if self.postfix else ''}", file=sys.stderr, flush=True)
            self.last, self.next = now, self.done + max(1, self.total // 10)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        pass
