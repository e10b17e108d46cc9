"""Steering with SAE features: interventions, contrastive ranking, the refusal study, language suppression.

    from qwen_sae_jax.steer import steer_feature, clamp_features, ablate_features, interventions
    texts = lm.generate(prompts, interventions=interventions([steer_feature(sae, 123, alpha=8.0)]))

Modules: ``interventions`` (AddDirection / ClampFeatures and their constructors), ``run`` (steered
logits / generation compiled once per steering structure, for sweeps), ``contrast`` (feature ranking
between two text sets), ``refusal`` + ``refusal_report`` (the case study), ``language`` (language
suppression), ``refusal_matcher`` (the refusal judge), ``sources`` (SAEs by hook, text files).
"""
from qwen_sae_jax.steer.contrast import Contrast, matched_random_features, rank_features, set_stats
from qwen_sae_jax.steer.interventions import (
    AddDirection,
    ClampFeatures,
    ablate_features,
    add_direction,
    clamp_features,
    feature_direction,
    interventions,
    steer_feature,
)

__all__ = [
    "AddDirection", "ClampFeatures", "ablate_features", "add_direction", "clamp_features", "feature_direction",
    "interventions", "steer_feature", "Contrast", "matched_random_features", "rank_features", "set_stats",
]
