"""Helpers shared by the training tests: deliver a signal at a given training step, make an asynchronous
checkpoint save fail in orbax's background thread."""
import contextlib
import os
import signal


@contextlib.contextmanager
def signal_at(step: int, signum: int = signal.SIGTERM):
    """While active, the training loop sends this process ``signum`` once it has run ``step`` steps (as a
    scheduler or a Ctrl-C would, between two steps)."""
    from qwen_sae_jax.train import logs
    original, fired = logs.TrainLogger.advance, []

    def advance(self, at):
        if at == step and not fired:
            fired.append(at)
            os.kill(os.getpid(), signum)
        return original(self, at)

    logs.TrainLogger.advance = advance
    try:
        yield
    finally:
        logs.TrainLogger.advance = original


def fail_in_background(monkeypatch, step: int) -> None:
    """Make the asynchronous save of ``step`` fail in orbax's background thread, before its temporary folder is
    renamed (what a disk filling up during the write does)."""
    from orbax.checkpoint._src.checkpointers import async_checkpointer

    original = async_checkpointer._on_commit_callback

    def commit(tmpdir, *args, **kwargs):
        if tmpdir.get_final().name == str(step):
            raise OSError(28, "No space left on device")
        return original(tmpdir, *args, **kwargs)

    monkeypatch.setattr(async_checkpointer, "_on_commit_callback", commit)
