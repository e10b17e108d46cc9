"""The generic typed-dataclass YAML loader: types, overrides, closest-key errors, help text."""
from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from qwen_sae_jax.config import (
    apply_overrides,
    describe_fields,
    dump_yaml,
    format_help,
    from_dict,
    load_config,
    to_dict,
)
from qwen_sae_jax.errors import UserError


@dataclasses.dataclass
class Optim:
    lr: float = 1e-3
    """Peak learning rate."""
    schedule: Literal["constant", "cosine"] = "constant"
    clip: float | None = 1.0


@dataclasses.dataclass
class Variant:
    architecture: Literal["topk", "relu"] = "topk"
    """Which SAE."""
    k: int = 32
    hooks: list[str] | None = None
    optim: Optim = dataclasses.field(default_factory=Optim)


@dataclasses.dataclass
class Root:
    name: str = "run"
    """Name of the run."""
    steps: int = dataclasses.field(default=10, metadata={"help": "How many steps."})
    flag: bool = False
    variants: list[Variant] = dataclasses.field(default_factory=lambda: [Variant()])
    sizes: tuple[int, ...] = (1, 2)
    extra: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.steps < 0:
            raise UserError("steps must be >= 0")


def test_yaml_types_and_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nsteps: 1e3\nvariants:\n  - {k: 8, hooks: [layers.1]}\n  - architecture: relu\n"
                    "    optim: {lr: 3e-4, clip: null}\nsizes: [4]\nextra: {a: 1}\n")
    cfg = load_config(Root, path)
    assert cfg.steps == 1000 and isinstance(cfg.steps, int)
    assert cfg.variants[0].k == 8 and cfg.variants[0].hooks == ["layers.1"]
    assert cfg.variants[1].architecture == "relu" and cfg.variants[1].optim.lr == 3e-4
    assert cfg.variants[1].optim.clip is None
    assert cfg.sizes == (4,) and cfg.extra == {"a": 1.0}
    again = tmp_path / "d.yaml"
    again.write_text(dump_yaml(cfg))
    assert load_config(Root, again) == cfg
    assert to_dict(cfg)["variants"][1]["optim"]["lr"] == 3e-4


def test_dotted_overrides_are_typed():
    cfg = load_config(Root, None, ["variants.0.k=64", "variants.0.optim.schedule=cosine", "flag=true",
                                   "name=123", "variants.0.hooks=[layers.0, layers.1]", "extra.b=2"])
    assert cfg.variants[0].k == 64 and cfg.variants[0].optim.schedule == "cosine"
    assert cfg.flag is True and cfg.name == "123"
    assert cfg.variants[0].hooks == ["layers.0", "layers.1"]
    assert cfg.extra == {"b": 2.0}
    # the original default object is untouched (overrides copy)
    assert Root().variants[0].k == 32


@pytest.mark.parametrize("data, overrides, message", [
    ({"stepz": 3}, [], "unknown config key 'stepz' (did you mean 'steps'?)"),
    ({"variants": [{"optim": {"lrr": 1}}]}, [], "'variants.0.optim.lrr' (did you mean 'variants.0.optim.lr'?)"),
    ({}, ["variants.0.kk=3"], "unknown config key 'variants.0.kk' (did you mean 'variants.0.k'?)"),
    ({}, ["variants.3.k=3"], "index out of range"),
    ({}, ["variants.x.k=3"], "address its items by index"),
    ({"steps": "ten"}, [], "config key 'steps': expected an integer, got 'ten'"),
    ({"steps": 2.5}, [], "expected an integer"),
    ({"flag": "yes please"}, [], "expected true or false"),
    ({}, ["variants.0.architecture=topkk"], "is not one of 'topk', 'relu' (did you mean 'topk'?)"),
    ({"variants": {"k": 1}}, [], "expected a list"),
    ({"steps": -1}, [], "steps must be >= 0"),
    ({}, ["variants.0.optim.lr=nan"], "config key 'variants.0.optim.lr': expected a finite number, got 'nan'"),
    ({"variants": [{"optim": {"clip": float("inf")}}]}, [], "expected a finite number, got inf"),
    ({"extra": {"a": "-inf"}}, [], "config key 'extra.a': expected a finite number"),
    ({}, ["steps"], "not of the form dotted.key=value"),
])
def test_bad_input_is_one_clear_error(data, overrides, message):
    with pytest.raises(UserError) as err:
        load_config(Root, data, overrides)
    assert message in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(Root, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(Root, bad)


def test_help_lists_every_leaf_with_docstring():
    keys = {d.key: d for d in describe_fields(Root)}
    assert {"name", "steps", "flag", "variants.N.architecture", "variants.N.k", "variants.N.optim.lr",
            "variants.N.optim.clip", "sizes", "extra"} <= set(keys)
    assert keys["name"].help == "Name of the run." and keys["name"].default == "run"
    assert keys["steps"].help == "How many steps."
    assert keys["variants.N.optim.lr"].help == "Peak learning rate."
    assert keys["variants.N.architecture"].type == "'topk'|'relu'"
    text = format_help(Root)
    assert "variants.N.optim.lr: float = 0.001" in text and "Peak learning rate." in text


def test_from_dict_requires_required_fields():
    @dataclasses.dataclass
    class Needs:
        x: int

    with pytest.raises(UserError, match="'x': is required"):
        from_dict(Needs, {})
    assert apply_overrides(Needs(1), ["x=2"]).x == 2
