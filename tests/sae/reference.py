"""Plain dense JAX references for the SAE architectures (dense latents, lax.top_k, autodiff), written
independently of the package: the tests compare the package's values and gradients against these."""
import jax.numpy as jnp
from jax import lax

sg = lax.stop_gradient


def _enc_in(p, x, cfg):
    x_in = x * sg(p["act_scale"])
    return x_in, (x_in - p["b_dec"] if cfg.apply_b_dec_to_input else x_in)


def _scatter_dense(vals, idx, width):
    rows = jnp.arange(idx.shape[0])[:, None]
    return jnp.zeros((idx.shape[0], width), vals.dtype).at[rows, idx].set(vals)


def _recon(x_in, x_hat):
    err = jnp.sum((x_hat - x_in) ** 2, -1)
    mse = jnp.mean(err)
    fvu = jnp.sum(err) / jnp.sum((x_in - x_in.mean(0)) ** 2)
    return mse, fvu


def _auxk(p, cfg, pre, x_in, x_hat, dead):
    if dead is None:
        return 0.0
    k_aux = min(cfg.k_aux or cfg.d_in // 2, cfg.d_sae)
    masked = jnp.where(dead[None], pre, -jnp.inf)
    vals, idx = lax.top_k(masked, k_aux)
    vals = jnp.where(dead[idx], jnp.maximum(vals, 0), 0.0)
    e_hat = _scatter_dense(vals, idx, cfg.d_sae) @ p["W_dec"]
    scale = jnp.minimum(dead.sum() / k_aux, 1.0)
    return cfg.aux_coefficient * scale * jnp.mean(jnp.sum((e_hat - sg(x_in - x_hat)) ** 2, -1))


def topk(p, x, cfg, dead=None):
    x_in, x_enc = _enc_in(p, x, cfg)
    pre = x_enc @ p["W_enc"] + p["b_enc"]
    vals, idx = lax.top_k(pre, cfg.k)
    z = _scatter_dense(jnp.maximum(vals, 0), idx, cfg.d_sae)
    x_hat = z @ p["W_dec"] + p["b_dec"]
    mse, fvu = _recon(x_in, x_hat)
    aux = _auxk(p, cfg, pre, x_in, x_hat, dead)
    return mse + aux, dict(mse=mse, fvu=fvu, aux=aux, z=z, x_hat=x_hat)


def batchtopk(p, x, cfg, dead=None):
    x_in, x_enc = _enc_in(p, x, cfg)
    pre = x_enc @ p["W_enc"] + p["b_enc"]
    flat = jnp.maximum(pre, 0).reshape(-1)
    vals, idx = lax.top_k(flat, cfg.k * x.shape[0])
    z = jnp.zeros_like(flat).at[idx].set(vals).reshape(pre.shape)
    x_hat = z @ p["W_dec"] + p["b_dec"]
    mse, fvu = _recon(x_in, x_hat)
    aux = _auxk(p, cfg, pre, x_in, x_hat, dead)
    return mse + aux, dict(mse=mse, fvu=fvu, aux=aux, z=z, x_hat=x_hat)


def jumprelu(p, x, cfg, dead=None):
    x_in, x_enc = _enc_in(p, x, cfg)
    pre = x_enc @ p["W_enc"] + p["b_enc"]
    thr, eps = p["threshold"], cfg.jumprelu_bandwidth
    on = sg((pre > thr).astype(pre.dtype))
    kernel = sg((jnp.abs((pre - thr) / eps) < 0.5).astype(pre.dtype))
    # straight-through forms: value of the exact step, derivative w.r.t. thr = the pseudo-derivative
    z = jnp.maximum(pre, 0) * on + (thr - sg(thr)) * sg(-(thr / eps) * kernel)
    l0 = jnp.mean(jnp.sum(on + (thr - sg(thr)) * sg(-(1.0 / eps) * kernel), -1))
    x_hat = z @ p["W_dec"] + p["b_dec"]
    mse, fvu = _recon(x_in, x_hat)
    sparsity = cfg.l0_coefficient * l0
    aux = 0.0
    if dead is not None and cfg.pre_act_loss_coefficient > 0:
        norms = jnp.linalg.norm(p["W_dec"], axis=-1)
        aux = cfg.pre_act_loss_coefficient * jnp.mean(jnp.sum(dead * jnp.maximum(thr - pre, 0) * norms, -1))
    return mse + sparsity + aux, dict(mse=mse, fvu=fvu, aux=aux, sparsity=sparsity, z=z, x_hat=x_hat)


def relu(p, x, cfg, dead=None):
    x_in, x_enc = _enc_in(p, x, cfg)
    z = jnp.maximum(x_enc @ p["W_enc"] + p["b_enc"], 0)
    x_hat = z @ p["W_dec"] + p["b_dec"]
    mse, fvu = _recon(x_in, x_hat)
    sparsity = cfg.l1_coefficient * jnp.mean(jnp.sum(z * jnp.linalg.norm(p["W_dec"], axis=-1), -1))
    return mse + sparsity, dict(mse=mse, fvu=fvu, aux=0.0, sparsity=sparsity, z=z, x_hat=x_hat)


LOSSES = {"topk": topk, "batchtopk": batchtopk, "jumprelu": jumprelu, "relu": relu}
