"""Multi-host set-up: ``jax.distributed.initialize`` from the config, CLI flags or the environment.

Must run before anything touches a JAX backend. Each process then sees every device of the job in
``jax.devices()`` (its own in ``jax.local_devices()``), builds the same global mesh, reads only its rows
of each token batch, and only process 0 writes logs, SAE files and the summary; orbax coordinates the
checkpoint writes of all processes.
"""
from __future__ import annotations

import os

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train.config import DistributedConfig


def cluster_detected(environ=os.environ) -> bool:
    """True in an environment where ``jax.distributed.initialize()`` finds its arguments by itself:
    a multi-host TPU slice, SLURM or Open MPI with more than one task, or JAX_COORDINATOR_ADDRESS set."""
    if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        try:
            if int(environ.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return bool(environ.get("JAX_COORDINATOR_ADDRESS"))


def initialize_kwargs(cfg: DistributedConfig, environ=os.environ) -> dict | None:
    """The arguments for jax.distributed.initialize, or None when it should not be called."""
    given = {k: v for k, v in (("coordinator_address", cfg.coordinator), ("num_processes", cfg.num_processes),
                               ("process_id", cfg.process_id)) if v is not None}
    if cfg.initialize == "no":
        if given:
            raise UserError("distributed.initialize=no but distributed.coordinator/num_processes/process_id are set")
        return None
    if cfg.initialize == "auto" and not given and not cluster_detected(environ):
        return None
    if cfg.num_processes is not None and cfg.process_id is not None and not 0 <= cfg.process_id < cfg.num_processes:
        raise UserError(f"distributed.process_id={cfg.process_id} must be in [0, {cfg.num_processes})")
    return given


def initialize(cfg: DistributedConfig) -> bool:
    """Initialise jax.distributed if the config / environment asks for it; True if it did (or already was)."""
    import jax

    kwargs = initialize_kwargs(cfg)
    if kwargs is None:
        return False
    if jax.distributed.is_initialized():
        return True
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"jax.distributed.initialize({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
                        f"failed: {str(err).splitlines()[0]}") from None
    return True


def to_host(tree):
    """``tree``'s arrays as numpy values on every process, also those sharded over other processes' devices
    (e.g. an SAE's latents when the 'model' axis spans processes)."""
    import jax
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
