"""Orbax checkpoints of a training run: exact resume, atomic saves, per-process data state.

A checkpoint (``RUN_DIR/checkpoints/<step>/``) holds three items:

    state   the device state: every group's stacked SAE params, optimizer states and dead-latent counters,
            the mixing buffer (pool, count, ready batches) and the filter's running medians (StandardSave:
            sharded arrays, every process writes its shards)
    meta    JSON: step, buffer cursor, shuffles so far, tokens seen, the resolved config, cache rows
    stream  one JSON file per process (grain's orbax handler): that process's token iterator state (or
            cache position) and drop counts

Orbax writes into a temporary folder and renames it when every item is complete, so a crash (or a full
disk) during a save leaves the previous checkpoint as the latest usable one; `save` re-raises the failure
as one clear error naming the step whose save failed (with asynchronous saves, a failure in the background
surfaces at the next `save` or `wait`, still under its own step). RNG state needs no saving: every key is
``fold_in(seed key, counter)`` of a counter in ``meta``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grain
import orbax.checkpoint as ocp

from qwen_sae_jax.errors import UserError


class _JsonState:
    """Adapter so grain's per-process orbax handler saves any object with get_state()/set_state() as JSON."""

    def __init__(self, obj: Any):
        self.obj = obj

    def get_state(self) -> bytes:
        return json.dumps(self.obj.get_state()).encode()

    def set_state(self, state: bytes) -> None:
        self.obj.set_state(json.loads(state))

    def start_prefetch(self) -> None:   # called by grain's handler after restore; nothing runs ahead here
        pass


class CheckpointSaveError(UserError):
    pass


class Checkpoints:
    def __init__(self, directory: str | os.PathLike, keep: int, async_save: bool):
        self.dir = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.dir, options=options)
        self._pending: int | None = None     # the step whose (asynchronous) save may still be running

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def _failed(self, step: int, err: BaseException) -> CheckpointSaveError:
        previous = [s for s in self.manager.all_steps() if s != step]
        kept = f"the previous checkpoint (step {max(previous)}) is kept" if previous else "no earlier checkpoint exists"
        return CheckpointSaveError(f"checkpoint save at step {step} failed ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0] if str(err) else ''}); {kept} in {self.dir}")

    def save(self, step: int, state: Any, meta: dict, stream: Any) -> None:
        """Start saving (asynchronously if enabled); failures of an earlier async save surface here."""
        self.wait()   # orbax waits for the previous save anyway; a failure there is reported under its step
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
                stream=grain.checkpoint.CheckpointSave(_JsonState(stream))), force=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise self._failed(step, err) from None
        self._pending = step

    def wait(self) -> None:
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except (OSError, ValueError, RuntimeError) as err:
            raise self._failed(step if step is not None else -1, err) from None

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore(self, step: int, abstract_state: Any, stream: Any) -> tuple[Any, dict]:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore(),
            stream=grain.checkpoint.CheckpointRestore(_JsonState(stream))))
        return restored["state"], dict(restored["meta"])

    def close(self) -> None:
        self.manager.close()
