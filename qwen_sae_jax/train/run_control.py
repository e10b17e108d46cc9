"""Control of a long run shared by `train.loop` and `posttrain.loop`: stop at a step boundary on SIGTERM / SIGINT
(every process at the same step), and drop the metrics logged after the checkpoint a run resumes from."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np


class StopRequest:
    """SIGTERM / SIGINT -> save a checkpoint at the next step boundary, then stop."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: no handlers (the caller manages stopping)
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt   # a second Ctrl-C stops at once
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def stop_signal(signum: int | None) -> int | None:
    """The signal that stops the job: this process's, else the first other process's (a scheduler may signal
    only one process; every process then stops at the same step and reports that signal)."""
    import jax
    if jax.process_count() == 1:
        return signum
    from jax.experimental import multihost_utils
    received = [int(s) for s in np.asarray(multihost_utils.process_allgather(np.asarray([signum or 0]))).ravel() if s]
    return signum or (received[0] if received else None)


def drop_records_after(path: Path, step: int) -> None:
    """Keep the records of ``path`` (metrics.jsonl) up to ``step``: those after it are logged again on resume."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)
