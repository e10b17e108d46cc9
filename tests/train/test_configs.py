"""Every shipped config loads and is valid for its model's shapes, checked without weights or data."""
from pathlib import Path

import jax
import pytest
import yaml

from qwen_sae_jax.config import load_config
from qwen_sae_jax.models.qwen3.config import Qwen3Config
from qwen_sae_jax.sae import init_sae
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.plan import make_plan

REPO = Path(__file__).resolve().parents[2]
# training configs (other configs/ files, e.g. the steering study's, have no `train` section)
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if "train" in (yaml.safe_load(p.read_text()) or {}))


def _model_config(name: str) -> Qwen3Config:
    if name == "tiny":
        return Qwen3Config.from_hf(REPO / "qwen_sae_jax" / "assets" / "tiny-qwen3" / "config.json")
    return Qwen3Config.from_hf(REPO / "configs" / "models" / f"{name.split('/')[-1]}.json")


def test_the_presets_exist():
    names = {p.stem for p in CONFIGS}
    assert {"tiny", "qwen3-1.7b-all", "qwen3-4b-all", "qwen-scope-1.7b", "qwen-scope-8b",
            "qwen-scope-30b-a3b"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid_for_its_model(path):
    cfg = load_config(TrainConfig, path)
    model = _model_config(cfg.model.name)
    plan = make_plan(cfg, model.num_hidden_layers, model.hidden_size, model_axis=cfg.mesh.model)
    assert plan.num_saes >= 1 and plan.d_in == model.hidden_size
    for group in plan.groups:   # parameter shapes of each SAE, from abstract evaluation only
        shapes = jax.eval_shape(lambda g=group: init_sae(g.cfg, jax.random.key(0)))
        assert shapes.W_enc.shape == (model.hidden_size, group.cfg.d_sae)
        assert shapes.W_dec.shape == (group.cfg.d_sae, model.hidden_size)
    if cfg.model.name != "tiny":   # full-size runs are meant for pod slices / 8-GPU hosts (docs/launch.md)
        assert cfg.data.batch_size % 8 == 0 and cfg.train.batch_size % 8 == 0
        assert cfg.model.dtype == "bfloat16"


def test_paper_suites_have_the_published_shapes():
    by_name = {p.stem: load_config(TrainConfig, p) for p in CONFIGS}
    widths = lambda c: sorted((v.d_sae, v.k) for v in c.saes)  # noqa: E731
    assert widths(by_name["qwen-scope-1.7b"]) == [(32768, 50), (32768, 100)]
    assert widths(by_name["qwen-scope-8b"]) == [(65536, 50)]
    assert widths(by_name["qwen-scope-30b-a3b"]) == [(32768, 50), (131072, 100)]
    tiny = by_name["tiny"]
    plan = make_plan(tiny, 4, 192)
    assert plan.num_saes == 12      # 4 layers x {residual, MLP out, attention out}
    for name in ("qwen3-1.7b-all", "qwen3-4b-all"):
        cfg = by_name[name]
        model = _model_config(cfg.model.name)
        assert make_plan(cfg, model.num_hidden_layers, model.hidden_size).num_saes == 3 * model.num_hidden_layers
