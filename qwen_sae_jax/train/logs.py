"""Training logs: ``metrics.jsonl``, a progress bar (tqdm, with ETA) on a terminal or plain lines otherwise,
and optional wandb / tensorboard. Only process 0 logs.

One JSONL record per logging step::

    {"step": 100, "tokens": 102400, "tokens_per_s": 51234.5, "elapsed_s": 2.0, "lr": {"topk-k32-512": 4e-4},
     "saes": {"layers.1__topk-k32-512": {"loss": ..., "mse": ..., "fvu": ..., "aux": ..., "sparsity": ...,
                                         "l0": ..., "dead_fraction": ..., "n_nonfinite": 0}, ...},
     "dropped": {"seen": ..., "special": ..., "first": ..., "nonfinite": [...], "outlier": [...], "kept": ...}}
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train.config import LogConfig


def _fmt_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def require_backends(cfg: LogConfig) -> None:
    """Fail at start-up (not after the first buffer fill) if an enabled logging backend is not installed."""
    import importlib.util
    if cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise UserError("log.wandb=true needs the wandb package (pip install wandb)")
    if cfg.tensorboard and importlib.util.find_spec("tensorboardX") is None and \
            importlib.util.find_spec("tensorboard") is None:
        raise UserError("log.tensorboard=true needs tensorboardX (pip install tensorboardX)")


class TrainLogger:
    def __init__(self, run_dir: Path, cfg: LogConfig, total_steps: int, start_step: int, is_main: bool,
                 config_dict: dict, stream=None):
        self.cfg, self.total, self.is_main = cfg, total_steps, is_main
        self.stream = stream or sys.stderr
        self._bar = None
        self._wandb = self._tb = None
        self.start_time = time.time()
        self._start_step = start_step
        if not is_main:
            return
        self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        use_bar = cfg.progress == "bar" or (cfg.progress == "auto" and self.stream.isatty())
        if use_bar:
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             file=self.stream, smoothing=0.1)
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise UserError("log.wandb=true needs the wandb package (pip install wandb)") from None
            self._wandb = wandb.init(project=cfg.wandb_project, config=config_dict, dir=str(run_dir),
                                     name=run_dir.name, resume="allow")
        if cfg.tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise UserError("log.tensorboard=true needs tensorboardX (pip install tensorboardX)") from None
            self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def message(self, text: str) -> None:
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()

    def log(self, step: int, record: dict[str, Any], summary: str | None = None) -> None:
        """Write ``record`` (needs ``tokens`` and ``tokens_per_s``); ``summary`` is the tail of the progress line
        (default: the mean fvu / l0 / dead fraction of the record's ``saes``)."""
        if not self.is_main:
            return
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if summary is None:
            saes = record.get("saes", {})
            mean = lambda key: sum(m[key] for m in saes.values()) / max(len(saes), 1)  # noqa: E731
            summary = (f"fvu {mean('fvu'):.3f} | l0 {mean('l0'):.1f} | dead {100 * mean('dead_fraction'):.1f}% "
                       f"(mean of {len(saes)} SAEs)")
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix_str(f"{_fmt_count(record['tokens_per_s'])} tok/s | {summary}")
        else:
            done = step - self._start_step
            elapsed = time.time() - self.start_time
            eta = elapsed / done * (self.total - step) if done else 0.0
            print(f"step {step}/{self.total} ({100 * step / self.total:.0f}%) | {_fmt_count(record['tokens'])} tokens "
                  f"| {_fmt_count(record['tokens_per_s'])} tok/s | ETA {_fmt_time(eta)} | {summary}",
                  file=self.stream, flush=True)
        flat = flatten({k: v for k, v in record.items() if k != "step"})
        if self._wandb is not None:
            self._wandb.log(flat, step=step)
        if self._tb is not None:
            for key, value in flat.items():
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.close()
        self._jsonl.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
