"""The language features file of SASFT: which SAE latents mark which language, and their references tau.

Format (JSON)::

    {"languages": ["en", "zh"],
     "features": [{"hook": "layers.2", "feature": 17, "language": "zh", "tau": {"en": -1.3, "zh": 0.4}},
                  {"hook": "layers.2", "feature": 903, "language": "en"},
                  ...]}

``hook`` is a hook name of the model (canonical, alias or one name), ``feature`` a latent index of the SAE on
that hook, ``language`` the language the feature marks (one of ``languages``). ``tau`` (optional, all features
or none) holds tau(f, l), the mean pre-activation of f over tokens of language l, for every language; without
it `qwen-sae sft` computes it from ``sasft.tau_files`` (`qwen_sae_jax.posttrain.sasft.language_tau`).
Written by hand, or from `qwen-sae contrast --json` output with `from_contrast`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from qwen_sae_jax.errors import UserError


@dataclasses.dataclass
class LanguageFeature:
    hook: str
    feature: int
    language: str
    tau: dict[str, float] | None = None


@dataclasses.dataclass
class FeatureSet:
    languages: list[str]
    features: list[LanguageFeature]

    @property
    def hooks(self) -> list[str]:
        """The hooks named, in order of first appearance."""
        return list(dict.fromkeys(f.hook for f in self.features))

    @property
    def has_tau(self) -> bool:
        return all(f.tau is not None for f in self.features)


def _feature(row: Any, i: int, languages: list[str], where: str) -> LanguageFeature:
    if not isinstance(row, dict) or not {"hook", "feature", "language"} <= set(row):
        raise UserError(f"{where}: features[{i}] must be an object with hook, feature and language, got {row!r:.80}")
    extra = set(row) - {"hook", "feature", "language", "tau"}
    if extra:
        raise UserError(f"{where}: features[{i}] has unknown key(s) {sorted(extra)}; valid: hook, feature, "
                        "language, tau")
    if not isinstance(row["feature"], int) or isinstance(row["feature"], bool) or row["feature"] < 0:
        raise UserError(f"{where}: features[{i}].feature must be an integer >= 0, got {row['feature']!r}")
    if row["language"] not in languages:
        raise UserError(f"{where}: features[{i}].language {row['language']!r} is not one of languages {languages}")
    tau = row.get("tau")
    if tau is not None:
        if not isinstance(tau, dict) or set(tau) != set(languages) or \
                not all(isinstance(v, (int, float)) for v in tau.values()):
            raise UserError(f"{where}: features[{i}].tau must map every language {languages} to a number, got {tau!r}")
        tau = {k: float(v) for k, v in tau.items()}
    return LanguageFeature(str(row["hook"]), int(row["feature"]), row["language"], tau)


def parse_features(data: Any, where: str = "features file") -> FeatureSet:
    """A `FeatureSet` from the parsed JSON (one UserError per problem, naming the entry)."""
    if not isinstance(data, dict) or not isinstance(data.get("languages"), list) or \
            not isinstance(data.get("features"), list):
        raise UserError(f"{where}: expected an object with a 'languages' list and a 'features' list")
    languages = data["languages"]
    if len(languages) < 2 or len(set(languages)) != len(languages) or not all(isinstance(x, str) for x in languages):
        raise UserError(f"{where}: 'languages' must list at least two distinct names, got {languages!r}")
    if not data["features"]:
        raise UserError(f"{where}: 'features' is empty")
    features = [_feature(row, i, languages, where) for i, row in enumerate(data["features"])]
    seen = set()
    for f in features:
        if (f.hook, f.feature) in seen:
            raise UserError(f"{where}: feature {f.feature} of {f.hook} is listed twice")
        seen.add((f.hook, f.feature))
    if any(f.tau is not None for f in features) and not all(f.tau is not None for f in features):
        raise UserError(f"{where}: give tau for every feature or for none (then it is computed from sasft.tau_files)")
    return FeatureSet(list(languages), features)


def read_features(path: str | os.PathLike) -> FeatureSet:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"features file {os.fspath(path)!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise UserError(f"features file {os.fspath(path)!r} is not valid JSON ({err.msg}, line {err.lineno})") from None
    return parse_features(data, f"features file {os.fspath(path)!r}")


def write_features(path: str | os.PathLike, features: FeatureSet) -> None:
    rows = [{k: v for k, v in dataclasses.asdict(f).items() if v is not None} for f in features.features]
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"languages": features.languages, "features": rows}, out, indent=1)


def from_contrast(contrast_json: str | os.PathLike, language: str, top: int = 10, position: str = "mean",
                  by: str = "mean_diff") -> list[LanguageFeature]:
    """The ``top`` features of each hook of a `qwen-sae contrast --json` file (positive set = ``language``'s
    text) as features of ``language``."""
    with open(contrast_json, encoding="utf-8") as f:
        data = json.load(f)
    out = []
    for hook, by_position in data.get("top", {}).items():
        if position not in by_position or by not in by_position[position]:
            raise UserError(f"{contrast_json}: no {position!r} / {by!r} ranking for {hook}")
        out += [LanguageFeature(hook, int(row["feature"]), language) for row in by_position[position][by][:top]]
    if not out:
        raise UserError(f"{contrast_json}: no rankings in 'top' (is it a `qwen-sae contrast --json` file?)")
    return out
