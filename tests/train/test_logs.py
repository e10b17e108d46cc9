"""Training logs: a tqdm bar with ETA on a terminal, plain lines otherwise, JSONL records, backend errors."""
import io
import json

import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train.config import LogConfig
from qwen_sae_jax.train.logs import TrainLogger, flatten, require_backends


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _record(step):
    return {"step": step, "tokens": step * 100, "tokens_per_s": 2500.0, "lr": {"v": 1e-3},
            "saes": {"a": {"fvu": 0.25, "l0": 8.0, "dead_fraction": 0.5}, "b": {"fvu": 0.75, "l0": 4.0,
                                                                                  "dead_fraction": 0.0}}}


@pytest.mark.parametrize("stream, progress, expect", [
    (io.StringIO(), "auto", "step 5/10 (50%) | 500 tokens | 2.5k tok/s | ETA"),
    (_Tty(), "auto", "2.5k tok/s | fvu 0.500 | l0 6.0 | dead 25.0% (mean of 2 SAEs)"),
    (io.StringIO(), "bar", "5/10"),
])
def test_progress_and_jsonl(tmp_path, stream, progress, expect):
    logger = TrainLogger(tmp_path, LogConfig(progress=progress), total_steps=10, start_step=0, is_main=True,
                         config_dict={}, stream=stream)
    logger.advance(5)
    logger.log(5, _record(5))
    logger.close()
    assert expect in stream.getvalue()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["saes"]["a"]["fvu"] == 0.25


def test_only_process_zero_writes(tmp_path):
    logger = TrainLogger(tmp_path, LogConfig(), 10, 0, is_main=False, config_dict={}, stream=io.StringIO())
    logger.log(5, _record(5))
    logger.close()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_flatten_and_missing_backends(monkeypatch):
    assert flatten({"lr": {"v": 1.0}, "saes": {"a": {"fvu": 0.5}}, "name": "x"}) == {"lr/v": 1.0, "saes/a/fvu": 0.5}
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="log.wandb=true needs the wandb package"):
        require_backends(LogConfig(wandb=True))
    with pytest.raises(UserError, match="log.tensorboard=true needs tensorboardX"):
        require_backends(LogConfig(tensorboard=True))
