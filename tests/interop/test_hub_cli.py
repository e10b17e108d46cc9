"""`qwen-sae eval REPO_ID` and `qwen-sae steer --sae REPO_ID`: SAEs by Hugging Face repo id, fetching only the files of
the --hook SAEs. Offline against an HF cache with the real on-disk layout (test_hub.write_to_hf_cache), with
huggingface_hub's own resolution running; every snapshot_download call is recorded on its way to the real one. The
last test runs the real snapshot_download "online", with only the network-backed calls (repo_info, list_repo_tree,
hf_hub_download) served from a local folder, and records which files hf_hub_download is asked for."""
import json
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import jax
import pytest
from huggingface_hub import constants

from qwen_sae_jax import cli
from qwen_sae_jax.interop import export_saes, load_sae
from tests.interop.test_hub import (
    COMMIT,
    REAL_SNAPSHOT_DOWNLOAD,
    RELEASE,
    offline_cache,
    qwen_scope_release,
    write_to_hf_cache,
)

REPO = "org/tiny-saes"
FOLDERS = ("blocks.1.hook_resid_post", "blocks.2.hook_mlp_out", "blocks.3.hook_resid_post")
SMALL = ("--tokens", "64", "--batch-size", "2", "--ctx-len", "16", "--no-plots")
BACKBONE_MISSING = ("model 'Qwen/Qwen3.5-2B-Base' is not in the Hugging Face cache and the hub cannot be reached "
                    "(HF_HUB_OFFLINE=1)")


def files_of(*folders: str) -> list[str]:
    return sorted(f"{folder}/{name}" for folder in folders for name in ("cfg.json", "sae_weights.safetensors"))


def tiny_saelens_repo(folder: Path) -> Path:
    """A SAELens export of three TopK SAEs that fit the embedded tiny model (d_in 192): layers.1, layers.2.mlp and
    layers.3, in folders named by their TransformerLens hooks (FOLDERS), plus a README."""
    from qwen_sae_jax.sae import SAEConfig, init_sae

    saes = {}
    for seed, hook in enumerate(("layers.1", "layers.2.mlp", "layers.3")):
        cfg = SAEConfig(architecture="topk", d_in=192, d_sae=256, k=8, hook_name=hook, model_name="tiny",
                        encoder_init_norm=1.0)
        saes[hook] = init_sae(cfg, jax.random.key(seed))
    export_saes(saes, folder, "saelens")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == list(FOLDERS)
    return folder


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    return offline_cache(tmp_path, monkeypatch)


@pytest.fixture
def tiny_repo(tmp_path, hf_cache):
    local = tiny_saelens_repo(tmp_path / "tiny-saes")
    write_to_hf_cache(hf_cache, REPO, local)
    return local


@pytest.fixture
def asked(monkeypatch):
    """Every snapshot_download call, as (repo_id, revision, sorted allow_patterns or None); the real one runs."""
    calls = []

    def recording(repo_id, *, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, None if allow_patterns is None else sorted(allow_patterns)))
        return REAL_SNAPSHOT_DOWNLOAD(repo_id, revision=revision, allow_patterns=allow_patterns, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    return calls


def fetched(asked, repo_id=REPO) -> list[list[str]]:
    """The file lists asked for of ``repo_id`` (the listing's own lookup of the snapshot asks for no files)."""
    return [files for repo, _, files in asked if repo == repo_id and files is not None]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------------------ end to end, offline

def test_eval_repo_id_fetches_only_the_hooks_asked_for(tiny_repo, asked, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["eval", REPO, "--hook", "layers.1", "--hook", "blocks.2.hook_mlp_out", "--model", "tiny",
                     "--out", str(out), *SMALL])
    stdout = capsys.readouterr().out
    assert code == 0
    assert fetched(asked) == [files_of(FOLDERS[0], FOLDERS[1])]
    assert (f"reading 4 files of hub repository {REPO} for {FOLDERS[0]}, {FOLDERS[1]} from the local Hugging Face "
            "cache (HF_HUB_OFFLINE=1 (offline mode))") in stdout
    rows = {r["name"]: r for r in json.loads((out / "eval.json").read_text())["saes"]}
    assert set(rows) == {FOLDERS[0], FOLDERS[1]}
    assert rows[FOLDERS[0]]["hook"] == "layers.1" and rows[FOLDERS[1]]["hook"] == "layers.2.mlp"
    assert all(0 < r["l0_mean"] <= 8 for r in rows.values())
    assert f"# SAE evaluation: {REPO}" in stdout


def test_steer_repo_id_fetches_only_the_hook_asked_for(tiny_repo, asked, capsys):
    code = cli.main(["steer", "--sae", REPO, "--hook", "blocks.3.hook_resid_post", "--feature", "5", "--alpha", "40",
                     "--model", "tiny", "--prompt", "How do I bake bread?", "--max-new-tokens", "3"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert fetched(asked) == [files_of(FOLDERS[2])]
    assert "model tiny; steering layers.3:5: add alpha=40, positions: all" in stdout
    assert "| steered (add alpha=40)" in stdout


def test_without_hook_every_sae_is_fetched_and_one_line_says_so(tiny_repo, asked, tmp_path, capsys):
    every = (f"reading 6 files of hub repository {REPO} for all its 3 SAEs from the local Hugging Face cache "
             "(HF_HUB_OFFLINE=1 (offline mode)); no --hook given")
    # steer: all three loaded, so a bare feature index is ambiguous (stops before the model is loaded)
    assert cli.main(["steer", "--sae", REPO, "--feature", "3", "--alpha", "1", "--prompt", "hi"]) == 2
    assert capsys.readouterr().out.strip() == every
    assert fetched(asked) == [files_of(*FOLDERS)]
    # eval: all three loaded; stopped right after the model loads by a context longer than it takes
    asked.clear()
    assert cli.main(["eval", REPO, "--model", "tiny", "--out", str(tmp_path / "o"), "--ctx-len", "100000"]) == 2
    assert capsys.readouterr().out.strip() == every
    assert fetched(asked) == [files_of(*FOLDERS)]


def test_globs_and_several_sources(tiny_repo, asked, tmp_path):
    """A glob selects members by name or hook before anything is fetched; with several sources a hook need only be in
    one of them (layers.0 is in the local folder, not in the repo)."""
    from qwen_sae_jax.sae import save_sae
    from qwen_sae_jax.steer.sources import load_hook_saes

    assert list(load_hook_saes([REPO], ["layers.[13]"])) == ["layers.1", "layers.3"]
    assert fetched(asked) == [files_of(FOLDERS[0], FOLDERS[2])]
    asked.clear()
    local, sae = tmp_path / "local", load_sae(tiny_repo, hook="layers.1")
    save_sae(sae.replace(cfg=sae.cfg.replace(hook_name="layers.0")), local)
    saes = load_hook_saes([REPO, str(local)], ["layers.0", "blocks.2.hook_mlp_out"])
    assert list(saes) == ["layers.0", "layers.2.mlp"]
    assert fetched(asked) == [files_of(FOLDERS[1])]


# ------------------------------------------------------------------------------------------ the release's backbone

@pytest.mark.parametrize("argv", [
    ["eval", RELEASE, "--hook", "blocks.2.hook_resid_post"],
    ["steer", "--sae", RELEASE, "--hook", "layers.2", "--feature", "1", "--alpha", "2", "--prompt", "hi"],
])
def test_a_qwen_scope_release_needs_no_model(argv, tmp_path, hf_cache, asked, capsys, monkeypatch):
    """Without --model the model is the release's backbone (Qwen/Qwen3.5-2B-Base), whatever the card says; it is
    not cached here, so the command stops at looking it up, after fetching layer 2's file (and the card) only."""
    write_to_hf_cache(hf_cache, RELEASE, qwen_scope_release(tmp_path / "release"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert error_line(capsys) == f"qwen-sae {argv[0]}: error: {BACKBONE_MISSING}"
    assert fetched(asked, RELEASE) == [["README.md", "layer2.sae.pt"]]
    assert [repo for repo, _, files in asked if files is not None] == [RELEASE, "Qwen/Qwen3.5-2B-Base"]


# ------------------------------------------------------------------------------------------ bad input, --revision

UNKNOWN = (f"no SAE for 'blocks.7.hook_mlp_out' in hub repository {REPO} (did you mean 'blocks.2.hook_mlp_out'?); "
           "HF_HUB_OFFLINE=1 (offline mode), so only the local Hugging Face cache was searched; it holds: "
           + ", ".join(FOLDERS))


@pytest.mark.parametrize("argv", [
    ["eval", REPO, "--hook", "layers.1", "--hook", "blocks.7.hook_mlp_out"],
    ["steer", "--sae", REPO, "--hook", "blocks.7.hook_mlp_out", "--feature", "1", "--alpha", "2", "--prompt", "hi"],
])
def test_an_unknown_hook_names_the_hooks_the_repo_has(argv, tiny_repo, asked, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert error_line(capsys) == f"qwen-sae {argv[0]}: error: {UNKNOWN}"
    assert fetched(asked) == []                                  # nothing is fetched for a bad request


def test_a_layer_the_release_lacks_and_revision_of_a_local_path(tmp_path, hf_cache, asked, capsys, monkeypatch):
    write_to_hf_cache(hf_cache, RELEASE, qwen_scope_release(tmp_path / "release"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", RELEASE, "--hook", "layers.30"]) == 2
    assert error_line(capsys) == (f"qwen-sae eval: error: hub repository {RELEASE} has layers 0-23 (every layer of "
                                  "Qwen/Qwen3.5-2B-Base); layer 30 is not one of them")
    assert cli.main(["steer", "--sae", RELEASE, "--hook", "layers.7", "--feature", "1", "--alpha", "2",
                     "--prompt", "hi"]) == 2
    assert error_line(capsys).endswith("cached layers: 0-3; the release has layers 0-23")
    assert fetched(asked, RELEASE) == []
    for argv in (["eval", "release", "--revision", "v1"],
                 ["steer", "--sae", "release", "--revision", "v1", "--feature", "1", "--alpha", "2", "--prompt", "hi"]):
        assert cli.main(argv) == 2
        assert error_line(capsys) == (f"qwen-sae {argv[0]}: error: revision='v1' (--revision) is for Hugging Face "
                                      "repo ids ('owner/name'); 'release' is a local path")


def test_revision_is_passed_through(tiny_repo, hf_cache, asked, tmp_path, capsys, monkeypatch):
    """Revision v1 (another commit) holds only the layers.1 SAE."""
    write_to_hf_cache(hf_cache, REPO, tiny_repo, commit="2" * 40, ref="v1", only=files_of(FOLDERS[0]))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", REPO, "--revision", "v1", "--hook", "layers.2.mlp"]) == 2
    assert error_line(capsys).endswith(f"in hub repository {REPO} (revision v1); HF_HUB_OFFLINE=1 (offline mode), "
                                       f"so only the local Hugging Face cache was searched; it holds: {FOLDERS[0]}")
    # steer loads v1's SAE and the model, then refuses a feature the SAE lacks
    assert cli.main(["steer", "--sae", REPO, "--revision", "v1", "--hook", "layers.1", "--feature", "256",
                     "--alpha", "2", "--model", "tiny", "--prompt", "hi"]) == 2
    assert "feature 256 is out of range" in error_line(capsys)
    assert [(revision, files) for repo, revision, files in asked if repo == REPO and files] == [
        ("v1", files_of(FOLDERS[0]))]


# ------------------------------------------------------------------------------------------ the real downloader

class RemoteRepo:
    """The hub's side of huggingface_hub's real snapshot_download, served from a local folder: repo_info (the
    commit), list_repo_tree (the files) and hf_hub_download (one file into the cache, recorded)."""

    def __init__(self, cache: Path, repo_id: str, folder: Path):
        self.cache, self.repo_id, self.folder, self.downloaded = cache, repo_id, folder, []
        self.files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def repo_info(self, repo_id, *, revision=None, **_):
        assert repo_id == self.repo_id
        return SimpleNamespace(sha=COMMIT, siblings=[SimpleNamespace(rfilename=f) for f in self.files])

    def list_repo_tree(self, repo_id, path_in_repo=None, *, revision=None, **_):
        from huggingface_hub.hf_api import RepoFile

        assert repo_id == self.repo_id
        for name in self.files:
            yield RepoFile(path=name, size=(self.folder / name).stat().st_size, oid=f"{len(name):040x}")

    def hf_hub_download(self, repo_id, filename, *, revision=None, **_):
        assert (repo_id, revision) == (self.repo_id, COMMIT)
        self.downloaded.append(filename)
        snapshot = write_to_hf_cache(self.cache, repo_id, self.folder, only=[filename])
        return str(snapshot / filename)


def test_real_snapshot_download_asks_only_for_the_hooks_files(hf_cache, tmp_path, monkeypatch, capsys):
    """Online: the file list and the download go through huggingface_hub's own list_repo_files / snapshot_download
    (allow_patterns filtering, tree cache, refs); hf_hub_download is asked for layer 1's two files only. Back
    offline, the partly downloaded snapshot (whose cached tree lists every file) serves that SAE again."""
    remote = RemoteRepo(hf_cache, REPO, tiny_saelens_repo(tmp_path / "remote"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", remote.repo_info)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", remote.list_repo_tree)
    monkeypatch.setattr("huggingface_hub._snapshot_download.hf_hub_download", remote.hf_hub_download)
    # eval stops right after the model loads (a context longer than tiny takes): the SAE was fetched by then
    assert cli.main(["eval", REPO, "--hook", "layers.1", "--model", "tiny", "--out", str(tmp_path / "o"),
                     "--ctx-len", "100000"]) == 2
    assert "ctx_len 100000 (--ctx-len) is longer than" in capsys.readouterr().err
    assert sorted(remote.downloaded) == files_of(FOLDERS[0])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", lambda *a, **k: pytest.fail("asked the hub"))
    assert load_sae(REPO, hook="layers.1").cfg.hook_name == "layers.1"
    assert cli.main(["eval", REPO, "--hook", "layers.3"]) == 2
    assert error_line(capsys).endswith(f"only the local Hugging Face cache was searched; it holds: {FOLDERS[0]}")
