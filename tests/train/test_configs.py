"""Every shipped config loads and is valid for its model's shapes, checked without weights or data; every
full-size preset's arrays fit the slice / GPU host docs/launch.md plans it for (no compiles: fast)."""
import re
from pathlib import Path

import jax
import pytest
import yaml

from qwen_sae_jax.cli.options import byte_size
from qwen_sae_jax.config import load_config
from qwen_sae_jax.interop.releases import RELEASES
from qwen_sae_jax.lm import EMBEDDED_MODELS
from qwen_sae_jax.models.registry import read_config
from qwen_sae_jax.sae import init_sae
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.memory import plan_memory
from qwen_sae_jax.train.plan import make_plan

REPO = Path(__file__).resolve().parents[2]
# SAE training configs (other configs/ files lack a `train` or a `saes` section: the steering study's, fine-tuning's)
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml")
                 if {"train", "saes"} <= set(yaml.safe_load(p.read_text()) or {}))
FULL_SIZE = [p for p in CONFIGS if load_config(TrainConfig, p).model.name not in EMBEDDED_MODELS]
QWEN35_PRESETS = ["qwen-scope-3.5-2b", "qwen-scope-3.5-9b", "qwen-scope-3.5-27b", "qwen-scope-3.5-35b-a3b"]


def _model_json(name: str) -> Path:
    """configs/models/<model>.json of a hub id: a base checkpoint (``Qwen/Qwen3.5-2B-Base``) has its
    post-trained sibling's shapes."""
    return REPO / "configs" / "models" / f"{name.split('/')[-1].removesuffix('-Base')}.json"


def _model_config(name: str):
    if name in EMBEDDED_MODELS:       # tiny, tiny-qwen3.5
        return read_config(Path(EMBEDDED_MODELS[name]) / "config.json")
    return read_config(_model_json(name))


def test_the_presets_exist():
    names = {p.stem for p in CONFIGS}
    assert {"tiny", "qwen3-1.7b-all", "qwen3-4b-all", "qwen-scope-1.7b", "qwen-scope-8b",
            "qwen-scope-30b-a3b", *QWEN35_PRESETS} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid_for_its_model(path):
    cfg = load_config(TrainConfig, path)
    model = _model_config(cfg.model.name)
    plan = make_plan(cfg, model.mixers, model.hidden_size, model_axis=cfg.mesh.model)
    assert plan.num_saes >= 1 and plan.d_in == model.hidden_size
    for group in plan.groups:   # parameter shapes of each SAE, from abstract evaluation only
        shapes = jax.eval_shape(lambda g=group: init_sae(g.cfg, jax.random.key(0)))
        assert shapes.W_enc.shape == (model.hidden_size, group.cfg.d_sae)
        assert shapes.W_dec.shape == (group.cfg.d_sae, model.hidden_size)
    if cfg.model.name not in EMBEDDED_MODELS:   # full-size runs are meant for pod slices / 8-GPU hosts (docs/launch.md)
        assert cfg.data.batch_size % 8 == 0 and cfg.train.batch_size % 8 == 0
        assert cfg.model.dtype == "bfloat16"


def test_paper_suites_have_the_published_shapes():
    by_name = {p.stem: load_config(TrainConfig, p) for p in CONFIGS}
    widths = lambda c: sorted((v.d_sae, v.k) for v in c.saes)  # noqa: E731
    assert widths(by_name["qwen-scope-1.7b"]) == [(32768, 50), (32768, 100)]
    assert widths(by_name["qwen-scope-8b"]) == [(65536, 50)]
    assert widths(by_name["qwen-scope-30b-a3b"]) == [(32768, 50), (131072, 100)]
    assert widths(by_name["qwen-scope-3.5-2b"]) == [(32768, 50), (32768, 100)]
    assert widths(by_name["qwen-scope-3.5-9b"]) == [(65536, 50)]
    assert widths(by_name["qwen-scope-3.5-27b"]) == [(81920, 50)]
    assert widths(by_name["qwen-scope-3.5-35b-a3b"]) == [(32768, 50), (131072, 100)]
    tiny = by_name["tiny"]
    plan = make_plan(tiny, 4, 192)
    assert plan.num_saes == 12      # 4 layers x {residual, MLP out, attention out}
    hybrid = make_plan(by_name["tiny-qwen3.5"], _model_config("tiny-qwen3.5").mixers, 192)
    assert hybrid.num_saes == 12 and {"layers.0.linear_attn", "layers.1.self_attn", "layers.2.linear_attn",
                                      "layers.3.self_attn"} <= set(hybrid.hooks)   # each layer's own mixer
    for name in ("qwen3-1.7b-all", "qwen3-4b-all"):
        cfg = by_name[name]
        model = _model_config(cfg.model.name)
        assert make_plan(cfg, model.num_hidden_layers, model.hidden_size).num_saes == 3 * model.num_hidden_layers


@pytest.mark.parametrize("name", QWEN35_PRESETS)
def test_qwen35_presets_are_the_qwen_scope_releases(name):
    """Backbone (a real hub id: the -Base checkpoint, or the instruct 27B), site, width, k and layers of every
    variant are a release of interop/releases.py, and configs/models/ agrees with its d_model and depth."""
    cfg = load_config(TrainConfig, REPO / "configs" / f"{name}.yaml")
    model = _model_config(cfg.model.name)
    plan = make_plan(cfg, model.num_hidden_layers, model.hidden_size, model_axis=cfg.mesh.model)
    for group in plan.groups:
        release = next(r for r in RELEASES if r.model_id == cfg.model.name and (r.d_sae, r.k) == (group.cfg.d_sae,
                                                                                                  group.cfg.k))
        assert (release.d_model, release.n_layers) == (model.hidden_size, model.num_hidden_layers)
        assert list(group.hooks) == [f"layers.{n}" for n in release.layers]     # every layer's residual stream


# ------------------------------------------------------------------------------------------------ memory plans
PLAN_COMMAND = re.compile(
    r"qwen-sae train configs/(?P<preset>[\w.-]+)\.yaml(?P<overrides>(?: [\w.]+=\S+)*) --plan --platform "
    r"(?P<platform>tpu|gpu) --devices (?P<devices>\d+) --device-memory (?P<memory>\S+) "
    r"(?:--local-devices (?P<local>\d+) )?--model-config configs/models/(?P<model>[\w.-]+\.json)")


def _documented_plans() -> dict[str, re.Match]:
    found: dict[str, re.Match] = {}
    for match in PLAN_COMMAND.finditer((REPO / "docs" / "launch.md").read_text()):
        found.setdefault(match["preset"], match)      # the first command of a preset is its documented target
    return found


def test_every_full_size_preset_has_a_documented_plan():
    assert {p.stem for p in FULL_SIZE} <= set(_documented_plans())


@pytest.mark.parametrize("path", FULL_SIZE, ids=[p.stem for p in FULL_SIZE])
def test_preset_arrays_fit_its_documented_slice(path):
    """The dry run CI can afford: the config resolved against configs/models/, its arrays (model parameters,
    SAE parameters, optimizer state, mixing buffer) placed on the documented mesh without compiling anything,
    at most 70% of the documented per-device memory (the rest is for XLA's temporaries, which docs/launch.md
    shows from the full plan)."""
    doc = _documented_plans()[path.stem]
    overrides = doc["overrides"].split()
    cfg = load_config(TrainConfig, path, overrides)
    assert all(o.startswith("mesh.") for o in overrides), "a documented plan may only change the mesh"
    assert REPO / "configs" / "models" / doc["model"] == _model_json(cfg.model.name)
    model = _model_config(cfg.model.name)
    plan = plan_memory(cfg, model, int(doc["devices"]), temporaries=False, platform=doc["platform"],
                       local_devices=int(doc["local"]) if doc["local"] else None, process_bytes=0)
    memory = byte_size(doc["memory"])
    assert plan.n_data * plan.n_model == int(doc["devices"])      # every device used
    assert plan.training_peak <= 0.7 * memory, (
        f"{path.stem}: arrays {plan.training_peak / 1e9:.1f} GB per device on data={plan.n_data} x "
        f"model={plan.n_model}, more than 70% of {memory / 1e9:.1f} GB")
