"""Feature analysis: max-activating examples, densities and histograms (streamed on device), logit lens,
per-text footprints, Qwen-Scope's feature classifier and redundancy metric, and the static dashboard.

    from qwen_sae_jax.analysis import corpus_windows, collect_features, sae_logit_lens, format_feature
    windows = corpus_windows(lm.tokenizer, docs, ctx_len=128, max_tokens=65536, pad_id=lm.pad_token_id)
    data = collect_features(lm, {"layers.1": sae}, windows)["layers.1"]      # FeatureData
    print(format_feature(data, 12, lm.tokenizer, lens=sae_logit_lens(lm, sae)))
"""
from qwen_sae_jax.analysis.classifier import ClassifierResult, fit_feature_classifier
from qwen_sae_jax.analysis.collect import collect_features
from qwen_sae_jax.analysis.corpus import TokenWindows, corpus_windows, read_texts, text_windows
from qwen_sae_jax.analysis.examples import FeatureData
from qwen_sae_jax.analysis.footprint import Footprints, text_footprints
from qwen_sae_jax.analysis.logit_lens import LogitLens, logit_lens, sae_logit_lens
from qwen_sae_jax.analysis.redundancy import Redundancy, coverage_curve, footprint_overlap, redundancy
from qwen_sae_jax.analysis.render import format_feature, top_features

__all__ = [
    "ClassifierResult", "fit_feature_classifier", "collect_features", "TokenWindows", "corpus_windows",
    "read_texts", "text_windows", "FeatureData", "Footprints", "text_footprints", "LogitLens", "logit_lens",
    "sae_logit_lens", "Redundancy", "coverage_curve", "footprint_overlap", "redundancy", "format_feature",
    "top_features",
]
