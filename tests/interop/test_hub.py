"""SAEs by Hugging Face repo id, offline: the tests build an HF hub cache in tmp_path with the real on-disk layout
(``models--owner--name/{blobs,refs,snapshots/<commit>}``), point huggingface_hub at it, set HF_HUB_OFFLINE, and let
huggingface_hub's own resolution (snapshot_download, from the cache) find the files. The "online" tests replace only
the two network calls (list_repo_files, snapshot_download) by fakes serving a local "remote" folder, and record what
was asked for."""
import fnmatch
import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name

from qwen_sae_jax import cli
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.interop import RELEASES, export_saes, find_release, load_sae, load_saes
from qwen_sae_jax.sae import load_native_sae as load_native
from tests.interop.conftest import make_inputs, make_sae

REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download
RELEASE = "Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_100"          # 24 layers of Qwen/Qwen3.5-2B-Base
COMMIT = "1" * 40
CARD = """---
license: other
base_model: Qwen/Qwen3.5-2B-Base-from-the-card
---
| Property | Value |
|---|---|
| Top-K | 6 |
| Hook point | Residual stream |
"""


# ------------------------------------------------------------------------------------------ the cache

def write_to_hf_cache(cache: Path, repo_id: str, source: Path, *, commit: str = COMMIT, ref: str | None = "main",
                      only: list[str] | None = None) -> Path:
    """Put the files under ``source`` (or only the repo-relative paths ``only``) into ``cache`` as huggingface_hub
    stores a download: content-addressed blobs, ``snapshots/<commit>/<path>`` symlinks to them, ``refs/<ref>``."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / commit
    names = only if only is not None else [p.relative_to(source).as_posix() for p in sorted(source.rglob("*"))
                                           if p.is_file()]
    for name in names:
        data = (source / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    snapshot.mkdir(parents=True, exist_ok=True)
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    return offline_cache(tmp_path, monkeypatch)


def offline_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty HF cache, offline. huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import, so its constants
    are patched too."""
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def qwen_scope_release(folder: Path, layers=(0, 1, 2, 3), card: str | None = CARD) -> Path:
    """A Qwen-Scope-like folder: layer{N}.sae.pt (tiny shapes) + a release-like README (no qwen_scope.json)."""
    export_saes({f"l{n}": make_sae(hook=f"layers.{n}", seed=10 + n, apply_b_dec=False) for n in layers},
                folder, "qwen-scope")
    (folder / "qwen_scope.json").unlink()
    (folder / "README.md").unlink()
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def saelens_repo(folder: Path) -> Path:
    """A multi-SAE SAELens export: blocks.1.hook_resid_post/, blocks.2.hook_mlp_out/ (+ README)."""
    export_saes({"a": make_sae(hook="layers.1", seed=3), "b": make_sae("jumprelu", hook="layers.2.mlp", seed=4)},
                folder, "saelens", log_densities={"a": np.full(48, -2.0, np.float32)})
    return folder


def same(a, b):
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "act_scale"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    x = make_inputs()
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))


@pytest.fixture
def release_cached(tmp_path, hf_cache):
    local = qwen_scope_release(tmp_path / "SAE-Res-Qwen3.5-2B-Base-W32K-L0_100")
    write_to_hf_cache(hf_cache, RELEASE, local)
    return local


# ------------------------------------------------------------------------------------------ offline

def test_repo_id_equals_local_folder_and_layer_picks_the_file(release_cached):
    for layer in (0, 2, 3):
        hub_sae = load_sae(RELEASE, layer=layer)
        local_sae = load_sae(release_cached, layer=layer)
        same(hub_sae, local_sae)
        assert hub_sae.cfg.hook_name == f"layers.{layer}" and hub_sae.cfg.k == 6      # k from the README row
    # layer=2 and layer=3 are different SAEs, so picking the file matters
    layer2, layer3 = load_sae(RELEASE, layer=2), load_sae(RELEASE, layer=3)
    assert not np.array_equal(np.asarray(layer2.W_enc), np.asarray(layer3.W_enc))
    same(load_sae(RELEASE, hook="blocks.2.hook_resid_post"), load_sae(release_cached, layer=2))


def test_release_sets_the_backbone_as_model_name(release_cached):
    """The card's base_model is what a local folder gives; a release id gives the release's backbone."""
    assert load_sae(release_cached, layer=1).cfg.model_name == "Qwen/Qwen3.5-2B-Base-from-the-card"
    assert load_sae(RELEASE, layer=1).cfg.model_name == "Qwen/Qwen3.5-2B-Base" == find_release(RELEASE).model_id


def test_load_saes_of_a_wholly_cached_repo(tmp_path, hf_cache):
    local = qwen_scope_release(tmp_path / "src")
    write_to_hf_cache(hf_cache, "someone/tiny-scope-L0_6", local)
    saes = load_saes("someone/tiny-scope-L0_6")
    assert list(saes) == ["layers.0", "layers.1", "layers.2", "layers.3"]
    for name, sae in saes.items():
        same(sae, load_sae(local, hook=name))
        assert sae.cfg.model_name == "Qwen/Qwen3.5-2B-Base-from-the-card"     # not a release: the card's


def test_k_from_the_repo_name_when_the_card_has_none(tmp_path, hf_cache):
    """The cache folder is named by commit, so the repo name is the only place left for ...-L0_6."""
    local = qwen_scope_release(tmp_path / "src", layers=(1,), card=None)
    write_to_hf_cache(hf_cache, "someone/tiny-scope-L0_5", local)
    assert load_sae("someone/tiny-scope-L0_5").cfg.k == 5
    write_to_hf_cache(hf_cache, "someone/tiny-scope", local)
    with pytest.raises(UserError, match=r"k is not stored .* pass k="):
        load_sae("someone/tiny-scope")
    assert load_sae("someone/tiny-scope", k=4).cfg.k == 4


def test_saelens_repo_by_hook(tmp_path, hf_cache):
    local = saelens_repo(tmp_path / "sl")
    write_to_hf_cache(hf_cache, "org/saelens-repo", local)
    for hook in ("blocks.1.hook_resid_post", "layers.1"):
        same(load_sae("org/saelens-repo", hook=hook), load_sae(local, hook="blocks.1.hook_resid_post"))
    same(load_sae("org/saelens-repo", hook="blocks.2.hook_mlp_out"), load_sae(local / "blocks.2.hook_mlp_out"))
    assert sorted(load_saes("org/saelens-repo")) == ["blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"]
    assert list(load_saes("org/saelens-repo", "saelens")) == ["blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"]
    with pytest.raises(UserError, match=r"^no Qwen-Scope layer\{N\}.sae.pt SAE in hub repository org/saelens-repo; "
                                        r"it holds: blocks.1.hook_resid_post, blocks.2.hook_mlp_out$"):
        load_saes("org/saelens-repo", "qwen-scope")


def test_revision_by_ref_and_by_commit(tmp_path, hf_cache):
    first = qwen_scope_release(tmp_path / "v0", layers=(0,))
    second = tmp_path / "v1"
    export_saes({"x": make_sae(hook="layers.0", seed=99, apply_b_dec=False)}, second, "qwen-scope")
    write_to_hf_cache(hf_cache, RELEASE, first)
    write_to_hf_cache(hf_cache, RELEASE, second, commit="2" * 40, ref="v1")
    same(load_sae(RELEASE, layer=0), load_sae(first, layer=0))
    same(load_sae(RELEASE, layer=0, revision="v1"), load_sae(second, layer=0))
    same(load_sae(RELEASE, layer=0, revision="2" * 40), load_sae(second, layer=0))
    with pytest.raises(UserError, match=r"revision nope\) is not in the local Hugging Face cache"):
        load_sae(RELEASE, layer=0, revision="nope")


def test_local_path_wins_over_a_repo_id(tmp_path, hf_cache, monkeypatch):
    write_to_hf_cache(hf_cache, "org/saelens-repo", saelens_repo(tmp_path / "sl"))
    monkeypatch.chdir(tmp_path)
    export_saes({"c": make_sae(hook="layers.1", seed=42)}, tmp_path / "org" / "saelens-repo", "saelens")
    same(load_sae("org/saelens-repo"), load_sae(tmp_path / "org" / "saelens-repo"))
    with pytest.raises(UserError, match="is for Hugging Face repo ids"):
        load_sae("org/saelens-repo", revision="main")


# ------------------------------------------------------------------------------------------ bad input

def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_repo_not_in_the_cache_while_offline(hf_cache):
    with pytest.raises(UserError) as excinfo:
        load_sae("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50", layer=3)
    message = one_line(excinfo)
    assert "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50 is not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and str(hf_cache) in message


def test_layer_the_repo_does_not_have(release_cached):
    with pytest.raises(UserError) as excinfo:
        load_sae(RELEASE, layer=24)
    assert one_line(excinfo) == (f"hub repository {RELEASE} has layers 0-23 (every layer of Qwen/Qwen3.5-2B-Base); "
                                 "layer 24 is not one of them")
    with pytest.raises(UserError) as excinfo:                  # a layer of the release, but not cached
        load_sae(RELEASE, layer=7)
    message = one_line(excinfo)
    assert message.startswith(f"layer7.sae.pt of hub repository {RELEASE} is not in the local Hugging Face cache")
    assert message.endswith("cached layers: 0-3; the release has layers 0-23")
    with pytest.raises(UserError) as excinfo:                  # which member: the layers it has
        load_sae(RELEASE)
    assert one_line(excinfo).endswith("holds 4 SAEs; choose one with hook= (--hook) or layer= (--layer): "
                                      "layers 0-3 (layer=N)")
    with pytest.raises(UserError) as excinfo:                  # no silent partial release offline
        load_saes(RELEASE)
    assert "only layers 0-3 of hub repository" in one_line(excinfo)


def test_repo_without_sae_files(tmp_path, hf_cache):
    src = tmp_path / "model"
    src.mkdir()
    (src / "README.md").write_text("a model\n")
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"\0" * 8)
    write_to_hf_cache(hf_cache, "org/a-model", src)
    with pytest.raises(UserError) as excinfo:
        load_sae("org/a-model")
    message = one_line(excinfo)
    assert message.startswith("hub repository org/a-model holds no SAE files: the local cache holds")
    assert "README.md, config.json, model.safetensors" in message
    assert "recognised: layer{N}.sae.pt (Qwen-Scope)" in message


def test_unknown_hook_in_a_repo(tmp_path, hf_cache):
    write_to_hf_cache(hf_cache, "org/saelens-repo", saelens_repo(tmp_path / "sl"))
    with pytest.raises(UserError) as excinfo:
        load_sae("org/saelens-repo", hook="blocks.7.hook_mlp_out")
    assert one_line(excinfo).startswith("no SAE for 'blocks.7.hook_mlp_out' in hub repository org/saelens-repo")


# ------------------------------------------------------------------------------------------ "online"

class FakeHub:
    """The two network calls, served from local "remote" folders; records what was asked for. Downloads are
    written into the cache with the real layout, so huggingface_hub's offline resolution can read them back."""

    def __init__(self, cache: Path, remotes: dict[str, Path]):
        self.cache, self.remotes, self.asked = cache, remotes, []

    def list_repo_files(self, repo_id, *, revision=None, **_):
        if repo_id not in self.remotes:
            from huggingface_hub.errors import RepositoryNotFoundError

            raise RepositoryNotFoundError(f"404: {repo_id}", response=SimpleNamespace(headers={}, request=None,
                                                                                     status_code=404))
        src = self.remotes[repo_id]
        return [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()]

    def snapshot_download(self, repo_id, *, revision=None, allow_patterns=None, local_files_only=False, **_):
        assert not local_files_only
        names = [n for n in self.list_repo_files(repo_id)
                 if any(fnmatch.fnmatch(n, pattern) for pattern in allow_patterns)]
        self.asked.append((repo_id, sorted(allow_patterns), sorted(names)))
        return str(write_to_hf_cache(self.cache, repo_id, self.remotes[repo_id], only=names))


@pytest.fixture
def online(hf_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    remotes = {RELEASE: qwen_scope_release(tmp_path / "remote-release"),
               "org/saelens-repo": saelens_repo(tmp_path / "remote-saelens")}
    fake = FakeHub(hf_cache, remotes)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake.list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def test_only_the_requested_layer_is_fetched(online, hf_cache, monkeypatch):
    sae = load_sae(RELEASE, layer=2)
    assert online.asked == [(RELEASE, ["README.md", "layer2.sae.pt"], ["README.md", "layer2.sae.pt"])]
    same(sae, load_sae(online.remotes[RELEASE], layer=2))
    assert sae.cfg.model_name == "Qwen/Qwen3.5-2B-Base"
    # the cache now holds just those two files, and the real offline resolution finds them
    snapshot = hf_cache / repo_folder_name(repo_id=RELEASE, repo_type="model") / "snapshots" / COMMIT
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "layer2.sae.pt"]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", REAL_SNAPSHOT_DOWNLOAD)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda *a, **k: pytest.fail("listed online"))
    same(load_sae(RELEASE, layer=2), sae)


def test_only_the_chosen_saelens_member_is_fetched(online):
    sae = load_sae("org/saelens-repo", hook="blocks.2.hook_mlp_out")
    (repo, _, fetched), = online.asked
    assert fetched == ["blocks.2.hook_mlp_out/cfg.json", "blocks.2.hook_mlp_out/sae_weights.safetensors"]
    same(sae, load_sae(online.remotes["org/saelens-repo"] / "blocks.2.hook_mlp_out"))


def test_online_errors_name_what_the_repo_has(online, tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_sae("org/saelens-repo", layer=3)
    assert "no SAE for 'layers.3' in hub repository org/saelens-repo" in one_line(excinfo)
    online.remotes["someone/scope"] = qwen_scope_release(tmp_path / "remote-scope", layers=(0, 1, 5))
    with pytest.raises(UserError) as excinfo:
        load_sae("someone/scope", layer=3)
    assert one_line(excinfo) == "hub repository someone/scope has no layer3.sae.pt; its layers: 0-1, 5"
    with pytest.raises(UserError) as excinfo:
        load_sae("nobody/nothing", layer=3)
    assert "hub repository nobody/nothing does not exist" in one_line(excinfo)
    assert online.asked == []                                   # nothing downloaded for a bad request


def test_release_whose_files_contradict_the_table_is_refused(online, tmp_path):
    """A 24-layer release listing layer24.sae.pt would be 1-based: refuse rather than shift silently."""
    shutil.copy(online.remotes[RELEASE] / "layer3.sae.pt", online.remotes[RELEASE] / "layer24.sae.pt")
    with pytest.raises(UserError) as excinfo:
        load_sae(RELEASE, layer=3)
    assert "numbering differs from the table; refusing to guess" in one_line(excinfo)
    assert online.asked == []


# ------------------------------------------------------------------------------------------ CLI and table

def test_cli_import_repo_id_from_the_cache(release_cached, tmp_path, capsys):
    dst = tmp_path / "imported"
    assert cli.main(["import", RELEASE, str(dst), "--layer", "3"]) == 0
    assert "model=Qwen/Qwen3.5-2B-Base" in capsys.readouterr().out
    imported = load_native(dst)
    same(imported, load_sae(release_cached, layer=3))
    assert imported.cfg.model_name == "Qwen/Qwen3.5-2B-Base" and imported.cfg.hook_name == "layers.3"
    assert cli.main(["import", RELEASE, str(tmp_path / "x"), "--layer", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"qwen-sae import: error: hub repository {RELEASE} has layers 0-23 (every layer of "
                   "Qwen/Qwen3.5-2B-Base); layer 30 is not one of them")
    assert not (tmp_path / "x").exists()


def test_cli_releases_prints_every_release(capsys):
    assert cli.main(["releases"]) == 0
    out = capsys.readouterr().out
    for r in RELEASES:
        line = next(line for line in out.splitlines() if line.startswith(r.repo_id + " "))
        assert r.model_id in line and f" {r.d_sae} " in line and f"{r.n_layers} (layer0-layer{r.n_layers - 1})" in line
    assert "14 releases over 7 backbones" in out
    assert cli.main(["releases", "--markdown", "--numbering"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| Qwen/")]
    assert len(rows) == 14 and all("0-based" in row for row in rows)


def test_release_table_is_consistent():
    """14 releases over 7 backbones; each name states its width and k; 16x hidden, or 64x for the MoE W128K;
    only the 27B backbone is an instruct checkpoint."""
    assert len({r.repo_id for r in RELEASES}) == 14 and len({r.model_id for r in RELEASES}) == 7
    for r in RELEASES:
        name = r.repo_id.split("/")[1]
        assert name.startswith("SAE-Res-" + r.model_id.split("/")[1].removesuffix("-Base")), r
        assert name.endswith(f"-W{r.d_sae // 1024}K-L0_{r.k}") and r.k in (50, 100), r
        assert ("-Base-" in name) == (r.checkpoint == "base"), r
        assert r.d_sae == r.d_model * (64 if r.d_sae == 131072 else 16), r
        assert r.site == "residual" and r.numbering.startswith("0-based")
    assert {r.model_id for r in RELEASES if r.checkpoint == "instruct"} == {"Qwen/Qwen3.5-27B"}
    assert find_release(RELEASE.lower()).repo_id == RELEASE and find_release("org/other") is None
