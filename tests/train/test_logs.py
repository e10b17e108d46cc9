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


def _tfrecords(path):
    """Payloads of a TFRecord file (uint64 length, uint32 crc, data, uint32 crc per record)."""
    import struct
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
    return out


def test_tensorboard_events_hold_every_logged_scalar(tmp_path):
    """log.tensorboard=true writes a real TensorBoard event file (tensorboardX, a test dependency); read
    back with its protobuf definitions, it holds every flattened metric at its step."""
    from tensorboardX.proto.event_pb2 import Event

    logger = TrainLogger(tmp_path, LogConfig(tensorboard=True), 10, 0, is_main=True, config_dict={},
                         stream=io.StringIO())
    logger.log(3, _record(3))
    logger.log(6, _record(6))
    logger.close()
    (events_file,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    scalars = {}
    for payload in _tfrecords(events_file):
        event = Event.FromString(payload)
        for value in event.summary.value:
            scalars[(value.tag, event.step)] = value.simple_value
    assert scalars[("saes/a/fvu", 3)] == pytest.approx(0.25) and scalars[("saes/b/l0", 6)] == 4.0
    assert scalars[("tokens", 6)] == 600 and scalars[("lr/v", 3)] == pytest.approx(1e-3)
    assert {step for _, step in scalars} == {3, 6}


def test_wandb_gets_the_run_config_and_flat_metrics(tmp_path, monkeypatch):
    """log.wandb=true: wandb.init(project, config, dir, name, resume) once, wandb.log(flat metrics, step) per
    record, finish() at close (a recording stand-in module replaces wandb, which would contact its servers)."""
    import sys
    import types
    calls = []
    run = types.SimpleNamespace(log=lambda metrics, step: calls.append(("log", step, metrics)),
                                finish=lambda: calls.append(("finish",)))
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or run
    monkeypatch.setitem(sys.modules, "wandb", fake)
    (tmp_path / "run1").mkdir()
    logger = TrainLogger(tmp_path / "run1", LogConfig(wandb=True, wandb_project="p"), 10, 0, is_main=True,
                         config_dict={"a": 1}, stream=io.StringIO())
    logger.log(4, _record(4))
    logger.close()
    assert calls[0] == ("init", {"project": "p", "config": {"a": 1}, "dir": str(tmp_path / "run1"), "name": "run1",
                                 "resume": "allow"})
    assert calls[1][:2] == ("log", 4) and calls[1][2]["saes/a/dead_fraction"] == 0.5 and "step" not in calls[1][2]
    assert calls[-1] == ("finish",)
