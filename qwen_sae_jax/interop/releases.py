"""The Qwen-Scope SAE releases on the Hugging Face hub: 14 repositories over 7 backbones.

Every release is a folder of ``layer{N}.sae.pt`` TopK SAEs on the residual stream (our hook ``layers.N``:
the output of decoder layer N), one file per layer of the backbone, plus a README model card.

Sources (read through stored copies; no network here, so no release file was opened):

* the Qwen-Scope technical report, "Qwen-Scope: Turning Sparse Features into Development Tools for Large
  Language Models" (Qwen Team, arXiv:2605.11887), Table 1: the 14 repository names, backbone type (base, or
  instruct for Qwen3.5-27B only), number of layers ("trained layers 1-N (all)"), hidden size, SAE width and
  Top-k of every release;
* the hub model cards of ``Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_50``, ``...-Qwen3.5-9B-Base-W64K-L0_50``,
  ``...-Qwen3.5-27B-W80K-L0_100`` and ``...-Qwen3.5-35B-A3B-Base-W128K-L0_100``: "Layers covered 0 - N-1
  (N layers total)", files ``layer0.sae.pt`` ... ``layer{N-1}.sae.pt``, exact d_sae / d_model / Top-K;
  the card of ``...-Qwen3.5-35B-A3B-Base-W32K-L0_50``: ``base_model: Qwen/Qwen3.5-35B-A3B-Base``.

Layer numbering: ``layer{N}.sae.pt`` is numbered from 0 (the report's "1-N" counts layers, the files count
from 0). ``numbering`` says, per release, how that was established; for the Qwen3 releases no model card
was read and the 0-based numbering rests on third-party surveys of the collection and third-party loaders
only. The hub loader refuses a release whose file list contradicts the table (qwen_sae_jax/interop/hub.py).

Backbone ids: the base checkpoints are ``Qwen/<model>-Base``; the Qwen3.5 post-trained checkpoints carry no
suffix, so the instruct backbone of the 27B release is ``Qwen/Qwen3.5-27B`` (the card's "Base model" row).
"""
from __future__ import annotations

from dataclasses import dataclass

SITE_RESIDUAL = "residual"

NUMBERING_CARD = "0-based: this repo's model card (Layers covered 0 - N-1, layer0.sae.pt first)"
NUMBERING_SIBLING = "0-based: the model card of the same backbone's other release (this card not read)"
NUMBERING_THIRD_PARTY = "0-based: third-party surveys / loaders only (no Qwen3 model card read)"


@dataclass(frozen=True)
class Release:
    """One Qwen-Scope repository: ``layer{N}.sae.pt`` for N in ``range(n_layers)``."""

    repo_id: str
    model_id: str
    """The backbone the SAEs were trained on, as ``load_model`` takes it."""
    checkpoint: str
    """"base" or "instruct": which checkpoint of the backbone the activations came from."""
    d_model: int
    d_sae: int
    k: int
    n_layers: int
    numbering: str
    """How the 0-based ``layer{N}.sae.pt`` numbering of this release was established."""
    site: str = SITE_RESIDUAL
    """Hook site: the residual stream after each decoder layer (our ``layers.N``)."""

    @property
    def layers(self) -> range:
        return range(self.n_layers)


def _release(repo_id: str, model_id: str, checkpoint: str, d_model: int, d_sae: int, k: int, n_layers: int,
             numbering: str) -> Release:
    return Release(repo_id=repo_id, model_id=model_id, checkpoint=checkpoint, d_model=d_model, d_sae=d_sae, k=k,
                   n_layers=n_layers, numbering=numbering)


_CARD, _SIBLING, _THIRD = NUMBERING_CARD, NUMBERING_SIBLING, NUMBERING_THIRD_PARTY

RELEASES: tuple[Release, ...] = (
    # repo id, backbone (model_id), checkpoint, d_model, d_sae, k, layers, how the layer numbering is known
    _release("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", "Qwen/Qwen3-1.7B-Base", "base", 2048, 32768, 50, 28, _THIRD),
    _release("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_100", "Qwen/Qwen3-1.7B-Base", "base", 2048, 32768, 100, 28, _THIRD),
    _release("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50", "Qwen/Qwen3-8B-Base", "base", 4096, 65536, 50, 36, _THIRD),
    _release("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_100", "Qwen/Qwen3-8B-Base", "base", 4096, 65536, 100, 36, _THIRD),
    _release("Qwen/SAE-Res-Qwen3-30B-A3B-Base-W32K-L0_50", "Qwen/Qwen3-30B-A3B-Base", "base", 2048, 32768, 50, 48,
             _THIRD),
    _release("Qwen/SAE-Res-Qwen3-30B-A3B-Base-W128K-L0_100", "Qwen/Qwen3-30B-A3B-Base", "base", 2048, 131072, 100, 48,
             _THIRD),
    _release("Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_50", "Qwen/Qwen3.5-2B-Base", "base", 2048, 32768, 50, 24, _CARD),
    _release("Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_100", "Qwen/Qwen3.5-2B-Base", "base", 2048, 32768, 100, 24,
             _SIBLING),
    _release("Qwen/SAE-Res-Qwen3.5-9B-Base-W64K-L0_50", "Qwen/Qwen3.5-9B-Base", "base", 4096, 65536, 50, 32, _CARD),
    _release("Qwen/SAE-Res-Qwen3.5-9B-Base-W64K-L0_100", "Qwen/Qwen3.5-9B-Base", "base", 4096, 65536, 100, 32,
             _SIBLING),
    _release("Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_50", "Qwen/Qwen3.5-27B", "instruct", 5120, 81920, 50, 64, _SIBLING),
    _release("Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_100", "Qwen/Qwen3.5-27B", "instruct", 5120, 81920, 100, 64, _CARD),
    _release("Qwen/SAE-Res-Qwen3.5-35B-A3B-Base-W32K-L0_50", "Qwen/Qwen3.5-35B-A3B-Base", "base", 2048, 32768, 50, 40,
             _SIBLING),
    _release("Qwen/SAE-Res-Qwen3.5-35B-A3B-Base-W128K-L0_100", "Qwen/Qwen3.5-35B-A3B-Base", "base", 2048, 131072, 100,
             40, _CARD),
)


def find_release(repo_id: str) -> Release | None:
    """The Qwen-Scope release named ``repo_id`` (hub ids are case-insensitive), or None."""
    wanted = repo_id.strip().casefold()
    return next((r for r in RELEASES if r.repo_id.casefold() == wanted), None)
