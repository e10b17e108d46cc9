"""The mixing buffer: fill keeps kept rows in order, shuffle emits exactly half, results do not depend on
how many devices hold the arrays."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.data import buffer as mixing


def _rows(start, n, H=2, D=4):
    """Rows whose first feature is a unique id; hook h carries id + 1000 h (so rows stay aligned)."""
    ids = np.arange(start, start + n, dtype=np.float32)
    x = np.zeros((H, n, D), np.float32)
    x[:, :, 0] = ids[None] + 1000 * np.arange(H)[:, None]
    x[:, :, 1:] = np.random.default_rng(start).normal(size=(H, n, D - 1))
    return jnp.asarray(x)


def _run(shard):
    size, M, Bt = 16, 6, 4
    buf = mixing.init_buffer(2, 4, size, M, Bt, jnp.float32)
    if shard:
        mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))
        buf = jax.device_put(buf, mixing.MixingBuffer(NamedSharding(mesh, P(None, "data", None)),
                                                      NamedSharding(mesh, P()),
                                                      NamedSharding(mesh, P(None, None, "data", None))))
    fill, shuffle = jax.jit(mixing.fill), jax.jit(mixing.shuffle, static_argnums=(2,))
    start = 0
    while int(buf.count) < size:
        keep = jnp.asarray(np.random.default_rng(start).random(M) < 0.7)
        buf = fill(buf, _rows(start, M), keep)
        start += M
    before = np.asarray(buf.pool)[:, :int(buf.count)]
    out = shuffle(buf, jax.random.key(3), size)
    return before, out


def test_fill_and_shuffle():
    before, out = _run(shard=False)
    count = before.shape[1]
    ids = before[0, :, 0]
    assert count >= 16 and np.all(np.diff(ids) > 0)                   # kept rows, in order, compacted
    np.testing.assert_array_equal(before[1, :, 0], ids + 1000)        # hooks aligned
    ready = np.asarray(out.ready)                                      # [H, S=2, Bt=4, D]
    assert ready.shape == (2, 2, 4, 4) and int(out.count) == count - 8
    emitted = ready[0, :, :, 0].reshape(-1)
    rest = np.asarray(out.pool)[0, :int(out.count), 0]
    assert set(emitted) <= set(ids[:16])                               # drawn from the first `size` rows
    np.testing.assert_array_equal(np.sort(np.concatenate([emitted, rest])), ids)   # nothing lost or doubled
    np.testing.assert_array_equal(ready[1, :, :, 0].reshape(-1), emitted + 1000)
    assert not np.all(np.diff(emitted) > 0)                            # shuffled


def test_sharded_buffer_gives_the_same_result():
    _, plain = _run(shard=False)
    _, sharded = _run(shard=True)
    assert len(sharded.pool.sharding.device_set) == 2
    np.testing.assert_array_equal(np.asarray(sharded.ready), np.asarray(plain.ready))
    np.testing.assert_array_equal(np.asarray(sharded.pool), np.asarray(plain.pool))
