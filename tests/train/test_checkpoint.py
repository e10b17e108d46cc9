"""Checkpoints: an interrupted save (orbax's uncommitted temporary folder) never becomes the latest; a save that
fails in the background (asynchronous saves, the default) is reported under its own step."""
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.train.checkpoint import Checkpoints, CheckpointSaveError
from tests.train.helpers import fail_in_background


class _Iter:
    def __init__(self, position=0):
        self.position = position

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = state["position"]


def test_uncommitted_save_is_ignored(tmp_path):
    ckpt = Checkpoints(tmp_path / "ck", keep=3, async_save=False)
    for step in (1, 2):
        ckpt.save(step, {"w": jnp.full((4,), float(step))}, {"step": step}, _Iter(10 * step))
    ckpt.wait()
    ckpt.close()
    # what a crash in the middle of saving step 3 leaves behind: orbax's temporary folder, never renamed
    partial = tmp_path / "ck" / "3.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "half-written").write_bytes(b"\0" * 10)
    again = Checkpoints(tmp_path / "ck", keep=3, async_save=False)
    assert again.latest_step() == 2
    it = _Iter()
    state, meta = again.restore(2, {"w": jnp.zeros((4,))}, it)
    np.testing.assert_array_equal(np.asarray(state["w"]), 2.0)
    assert meta["step"] == 2 and it.position == 20


@pytest.mark.parametrize("failing, surfaces_at", [(2, "save 3"), (3, "wait")])
def test_background_failure_names_its_step(tmp_path, monkeypatch, failing, surfaces_at):
    fail_in_background(monkeypatch, failing)
    ckpt = Checkpoints(tmp_path / "ck", keep=5, async_save=True)
    with pytest.raises(CheckpointSaveError) as err:
        for step in (1, 2, 3):
            where = f"save {step}"
            ckpt.save(step, {"w": jnp.full((4,), float(step))}, {"step": step}, _Iter(step))
        where = "wait"
        ckpt.wait()
    assert where == surfaces_at
    assert str(err.value).startswith(f"checkpoint save at step {failing} failed (OSError: [Errno 28] No space left")
    assert f"the previous checkpoint (step {failing - 1}) is kept" in str(err.value)
    assert Checkpoints(tmp_path / "ck", keep=5, async_save=False).latest_step() == failing - 1
