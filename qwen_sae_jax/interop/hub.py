"""SAEs straight from the Hugging Face hub, by repo id: ``load_sae("Qwen/SAE-Res-...", layer=10)``.

`qwen_sae_jax.interop.load` calls this module when the path it is given is no local file or folder and
looks like a repo id (``owner/name``); a local path of the same name always wins.

What is downloaded: only the files of the SAE asked for, into the standard Hugging Face cache
(``HF_HUB_CACHE`` / ``HF_HOME``, read by huggingface_hub):

    Qwen-Scope repo (layer{N}.sae.pt at the top)   layer{N}.sae.pt + README.md (+ qwen_scope.json if present)
    SAELens / sparsify / native repo (folders)      the chosen folder's cfg.json + its weights
                                                    (sae_weights.safetensors and/or sae.safetensors)

``load_saes(repo_id)`` downloads every SAE of the repo; `load_saes_from_hub` with ``hooks=`` only the SAEs of
those hooks (what ``qwen-sae eval REPO_ID --hook H`` and ``qwen-sae steer --sae REPO_ID --hook H`` use).
Online, the repo's file list comes from the hub (``huggingface_hub.list_repo_files``) and the chosen files
from ``snapshot_download(allow_patterns=...)``.
With ``HF_HUB_OFFLINE=1`` (or when the hub cannot be reached) the file list is what the cache holds for
the revision (the snapshot ``snapshot_download(local_files_only=True)`` finds through the refs) and the
same ``snapshot_download`` resolves from the cache only. The downloaded snapshot folder then goes through
the local readers (format detection, ``read_qwen_scope``).

Qwen-Scope releases (`releases.RELEASES`) get the release's backbone as ``cfg.model_name`` and their
file list is checked against the table's 0-based ``layer0 .. layer{n-1}`` numbering: a repo that
contradicts it is refused, never shifted.
"""
from __future__ import annotations

import fnmatch
import glob
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from qwen_sae_jax.errors import UserError, did_you_mean
from qwen_sae_jax.interop import qwen_scope, saelens
from qwen_sae_jax.interop.hook_names import from_transformer_lens, to_transformer_lens
from qwen_sae_jax.interop.releases import Release, find_release

README = "README.md"
CFG_FILE = "cfg.json"
FOLDER_WEIGHTS = (saelens.WEIGHTS_FILE, "sae.safetensors")     # SAELens; sparsify / native
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LAYER_HOOK = re.compile(r"^layers\.(\d+)$")
RECOGNISED = ("layer{N}.sae.pt (Qwen-Scope), or a folder with cfg.json + sae_weights.safetensors (SAELens) "
              "or cfg.json + sae.safetensors (sparsify / native)")


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a hub repo id, ``owner/name`` (it is not checked online)."""
    return bool(_REPO_ID.match(text)) and ".." not in text


@dataclass(frozen=True)
class Member:
    """One SAE of a hub repo. Paths are repo-relative POSIX paths."""

    name: str
    """``layers.N`` for a Qwen-Scope file; the folder path for a folder SAE (the repo name for the root)."""
    location: str
    """The ``layer{N}.sae.pt`` file, or the SAE's folder ("" for the repo root)."""
    files: tuple[str, ...]
    """What to download for it."""
    layer: int | None = None
    """N of a Qwen-Scope ``layer{N}.sae.pt``; None for folder SAEs."""


@dataclass(frozen=True)
class Listing:
    """The files of one repo revision, and whether the list is the hub's (complete) or the cache's."""

    repo_id: str
    revision: str | None
    files: tuple[str, ...]
    complete: bool
    why_local: str = ""
    """Why only the cache was used (offline mode, or the error that made the hub unreachable)."""


@dataclass(frozen=True)
class Fetched:
    """SAEs downloaded (or found in the cache): member name -> local path of the file or folder."""

    repo_id: str
    release: Release | None
    locations: dict[str, Path]


# ---------------------------------------------------------------------------------------------- listing

def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_unreachable_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "the hub could not be asked": OSError covers huggingface_hub's HTTP and offline-mode
    errors and requests' errors; the httpx-based releases raise their transport errors for a failed
    connection."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _at(repo_id: str, revision: str | None) -> str:
    return repo_id if revision is None else f"{repo_id} (revision {revision})"


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (a branch / tag name or a commit hash;
    default ``main``), or None when the cache has none. Resolved through the repo's refs by huggingface_hub
    (no walk over the whole cache)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True,
                                      cache_dir=constants.HF_HUB_CACHE))
    except LocalEntryNotFoundError as err:
        # IncompleteSnapshotError (newer huggingface_hub versions keep the repo's tree listing beside the snapshot): the
        # snapshot holds only the files that were downloaded, which is what downloading one layer leaves behind
        partial = getattr(err, "snapshot_path", None)
        return Path(partial) if partial else None
    except OSError:
        return None


def _cached_listing(repo_id: str, revision: str | None, why: str) -> Listing:
    from huggingface_hub import constants

    snapshot = _cached_snapshot(repo_id, revision)
    if snapshot is None:
        raise UserError(f"hub repository {_at(repo_id, revision)} is not in the local Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}) and {why}; no local file or folder of that name exists "
                        "either: run once with network access (HF_HUB_OFFLINE unset) to download it")
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    return Listing(repo_id, revision, tuple(files), complete=False, why_local=why)


def list_files(repo_id: str, revision: str | None = None) -> Listing:
    """The files of ``repo_id`` at ``revision``: the hub's list online, else what the cache holds."""
    if _offline():
        return _cached_listing(repo_id, revision, "HF_HUB_OFFLINE=1 (offline mode)")
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = huggingface_hub.list_repo_files(repo_id, revision=revision)
    except RepositoryNotFoundError:
        raise UserError(f"hub repository {repo_id} does not exist (or is private / gated and needs a token: "
                        "`hf auth login`); no local file or folder of that name exists either") from None
    except RevisionNotFoundError:
        raise UserError(f"hub repository {repo_id} has no revision {revision!r}") from None
    except HFValidationError as err:
        raise UserError(f"{repo_id!r} is not a valid hub repo id: {err}") from None
    except _hub_unreachable_errors() as err:
        return _cached_listing(repo_id, revision, f"the hub cannot be reached ({type(err).__name__}: {err})")
    return Listing(repo_id, revision, tuple(sorted(files)), complete=True)


# ---------------------------------------------------------------------------------------------- members

def members_of(listing: Listing) -> dict[str, Member]:
    """Every SAE in the listing: top-level ``layer{N}.sae.pt`` files (by layer) and folders holding
    ``cfg.json`` plus a weights file (by path), in that order."""
    listed = set(listing.files)
    card = tuple(f for f in (README, qwen_scope.SIDECAR_FILE) if f in listed)
    layers: dict[int, Member] = {}
    for file in listing.files:
        if "/" not in file and qwen_scope.LAYER_FILE.match(file):
            n = qwen_scope.layer_of(Path(file))
            layers[n] = Member(f"layers.{n}", file, (file, *card), layer=n)
    members = {m.name: m for _, m in sorted(layers.items())}
    for file in listing.files:
        folder, _, base = file.rpartition("/")
        if base != CFG_FILE:
            continue
        weights = tuple(w for w in (f"{folder}/{name}" if folder else name for name in FOLDER_WEIGHTS)
                        if w in listed)
        if weights:
            name = folder or listing.repo_id.split("/")[1]
            members[name] = Member(name, folder, (file, *weights))
    return members


def _ranges(numbers) -> str:
    """``[0, 1, 2, 5] -> "0-2, 5"``."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def _describe(members: dict[str, Member]) -> str:
    layers = [m.layer for m in members.values() if m.layer is not None]
    folders = [name for name, m in members.items() if m.layer is None]
    parts = ([f"layers {_ranges(layers)} (layer=N)"] if layers else []) + folders
    return ", ".join(parts)


def _no_sae_error(listing: Listing) -> UserError:
    shown = ", ".join(listing.files[:8]) + (f" (+{len(listing.files) - 8} more)" if len(listing.files) > 8 else "")
    source = "it has" if listing.complete else f"the local cache holds ({listing.why_local})"
    return UserError(f"hub repository {_at(listing.repo_id, listing.revision)} holds no SAE files: {source} "
                     f"{shown or 'no files'}; recognised: {RECOGNISED}")


def _check_release_numbering(listing: Listing, release: Release | None, members: dict[str, Member]) -> None:
    """Refuse a release whose layer files are not the table's ``layer0 .. layer{n-1}``."""
    if release is None or not listing.complete:
        return
    layers = sorted(m.layer for m in members.values() if m.layer is not None)
    if layers and not set(layers) <= set(release.layers):
        raise UserError(f"hub repository {listing.repo_id} lists layer files {_ranges(layers)}, but the release "
                        f"table says layer0 .. layer{release.n_layers - 1} ({release.n_layers} layers of "
                        f"{release.model_id}): its numbering differs from the table; refusing to guess which "
                        "file is which layer (download the files and load a local path)")


def _missing_layer_error(listing: Listing, release: Release | None, members: dict[str, Member],
                         layer: int) -> UserError:
    have = _ranges(m.layer for m in members.values() if m.layer is not None) or "none"
    if release is not None and layer not in release.layers:
        return UserError(f"hub repository {listing.repo_id} has layers 0-{release.n_layers - 1} (every layer of "
                         f"{release.model_id}); layer {layer} is not one of them")
    if listing.complete:
        return UserError(f"hub repository {_at(listing.repo_id, listing.revision)} has no "
                         f"{qwen_scope.layer_file(layer)}; its layers: {have}")
    full = f"; the release has layers 0-{release.n_layers - 1}" if release is not None else ""
    return UserError(f"{qwen_scope.layer_file(layer)} of hub repository {_at(listing.repo_id, listing.revision)} "
                     f"is not in the local Hugging Face cache and {listing.why_local}; cached layers: {have}{full}")


def _is_glob(hook: str) -> bool:
    return any(ch in hook for ch in "*?[")


def _names_of(name: str) -> set[str]:
    """What a glob may match for member ``name``: its path, folder name, hook (canonical and TransformerLens)."""
    base = name.rpartition("/")[2]
    stem = base.split("__")[0]
    return {n for n in (name, base, stem, from_transformer_lens(stem), to_transformer_lens(stem)) if n}


def _layer_hook(members: dict[str, Member], hook: str, release: Release | None) -> int | None:
    """N when ``hook`` (``layers.N`` / ``blocks.N.hook_resid_post``) means a Qwen-Scope layer file: in a release,
    or a repo holding such files; else None."""
    match = _LAYER_HOOK.match(from_transformer_lens(hook) or "")
    if match and (release is not None or any(m.layer is not None for m in members.values())):
        return int(match.group(1))
    return None


def _matching(members: dict[str, Member], hook: str, release: Release | None) -> list[Member]:
    """The members meant by ``hook``: ``layers.N`` / ``blocks.N.hook_resid_post`` is layer N's file in a repo of
    Qwen-Scope layers; else a folder name or hook name as `load.matches_hook` takes it; a glob (``*?[``) over
    the members' names and hooks."""
    from qwen_sae_jax.interop.load import matches_hook

    if _is_glob(hook):
        return [m for name, m in members.items() if any(fnmatch.fnmatchcase(n, hook) for n in _names_of(name))]
    layer = _layer_hook(members, hook, release)
    if layer is not None:
        return [m for m in members.values() if m.layer == layer]
    return [m for name, m in members.items() if matches_hook(name.rpartition("/")[2], hook)]


def _no_match_error(listing: Listing, members: dict[str, Member], hook: str, release: Release | None) -> UserError:
    """One line for a ``hook`` that names no member: the layers / SAEs the repo has."""
    layer = _layer_hook(members, hook, release)
    if layer is not None:
        return _missing_layer_error(listing, release, members, layer)
    where = _at(listing.repo_id, listing.revision)
    have = ("available" if listing.complete
            else f"{listing.why_local}, so only the local Hugging Face cache was searched; it holds")
    return UserError(f"no SAE for {hook!r} in hub repository {where}{did_you_mean(hook, members)}; "
                     f"{have}: {_describe(members)}")


def choose(listing: Listing, members: dict[str, Member], hook: str | None, release: Release | None) -> Member:
    """The one member meant by ``hook`` (see `_matching`)."""
    where = _at(listing.repo_id, listing.revision)
    if hook is None:
        if len(members) > 1:
            raise UserError(f"hub repository {where} holds {len(members)} SAEs; choose one with hook= (--hook) "
                            f"or layer= (--layer): {_describe(members)}")
        return next(iter(members.values()))
    found = _matching(members, hook, release)
    if not found:
        raise _no_match_error(listing, members, hook, release)
    if len(found) > 1:
        raise UserError(f"several SAEs match {hook!r} in hub repository {where}: "
                        f"{', '.join(m.name for m in found)}; give the full name")
    return found[0]


def select(listing: Listing, members: dict[str, Member], hooks: Sequence[str], release: Release | None, *,
           strict: bool = True) -> dict[str, Member]:
    """Every member meant by one of ``hooks`` (see `_matching`; several per hook are kept), in the repo's order.
    ``strict``: each hook must name a member; else only one of them must (the others may be in other sources)."""
    chosen: set[str] = set()
    for hook in hooks:
        found = _matching(members, hook, release)
        if not found and strict:
            raise _no_match_error(listing, members, hook, release)
        chosen.update(m.name for m in found)
    if not chosen:
        raise _no_match_error(listing, members, hooks[0], release)
    return {name: m for name, m in members.items() if name in chosen}


# ---------------------------------------------------------------------------------------------- download

def download(listing: Listing, files: list[str]) -> Path:
    """Download exactly ``files`` (or find them in the cache offline); the local snapshot folder."""
    import huggingface_hub

    where = _at(listing.repo_id, listing.revision)
    try:
        snapshot = Path(huggingface_hub.snapshot_download(
            listing.repo_id, revision=listing.revision, allow_patterns=[glob.escape(f) for f in files],
            local_files_only=not listing.complete))
    except _hub_unreachable_errors() as err:
        raise UserError(f"could not download {', '.join(files)} of hub repository {where}: "
                        f"{type(err).__name__}: {err}") from None
    missing = [f for f in files if not (snapshot / f).is_file()]
    if missing:
        raise UserError(f"{', '.join(missing)} of hub repository {where} did not arrive in {snapshot}")
    return snapshot


def _survey(repo_id: str, revision: str | None) -> tuple[Release | None, Listing, dict[str, Member]]:
    """(the release entry or None, the repo's file listing, its SAEs), refusing a repo with no SAE files or
    one whose layer files contradict its release's numbering."""
    release = find_release(repo_id)
    listing = list_files(repo_id, revision)
    members = members_of(listing)
    _check_release_numbering(listing, release, members)
    if not members:
        raise _no_sae_error(listing)
    return release, listing, members


def fetch_sae(repo_id: str, *, hook: str | None = None, revision: str | None = None) -> Fetched:
    """Download the one SAE of ``repo_id`` chosen by ``hook`` (see `choose`)."""
    release, listing, members = _survey(repo_id, revision)
    member = choose(listing, members, hook, release)
    snapshot = download(listing, list(member.files))
    return Fetched(repo_id, release, {member.name: snapshot / member.location})


def _announce(announce: Callable[[str], None] | None, listing: Listing, files: list[str], members: dict[str, Member],
              every: bool) -> None:
    if announce is None:
        return
    where = _at(listing.repo_id, listing.revision)
    what = f"all its {len(members)} SAEs" if every else ", ".join(members)
    if listing.complete:
        announce(f"fetching {len(files)} files of hub repository {where} for {what}"
                 + (" (no --hook given)" if every else "") + "; files already in the Hugging Face cache are not "
                 "downloaded again")
    else:
        announce(f"reading {len(files)} files of hub repository {where} for {what} from the local Hugging Face cache "
                 f"({listing.why_local})" + ("; no --hook given" if every else ""))


def fetch_saes(repo_id: str, *, revision: str | None = None, layers_only: bool | None = None,
               hooks: Sequence[str] | None = None, strict: bool = True,
               announce: Callable[[str], None] | None = None) -> Fetched:
    """Download every SAE of ``repo_id``, or with ``hooks`` only those of these hooks (see `select`; ``strict``
    is its). ``layers_only`` True / False keeps only the Qwen-Scope layer files / only the folder SAEs.
    Offline, a Qwen-Scope release must be wholly cached for all its SAEs (no silent partial release).
    ``announce`` is given one line saying how many files are about to be fetched, and for which SAEs."""
    release, listing, members = _survey(repo_id, revision)
    if layers_only is not None:
        kept = {n: m for n, m in members.items() if (m.layer is not None) == layers_only}
        if not kept:
            wanted = "Qwen-Scope layer{N}.sae.pt" if layers_only else "SAELens / sparsify / native folder"
            raise UserError(f"no {wanted} SAE in hub repository {_at(repo_id, revision)}; it holds: "
                            f"{_describe(members)}")
        members = kept
    if hooks:
        members = select(listing, members, hooks, release, strict=strict)
    else:
        cached = {m.layer for m in members.values() if m.layer is not None}
        if release is not None and not listing.complete and cached != set(release.layers):
            raise UserError(f"only layers {_ranges(cached) or 'none'} of hub repository {_at(repo_id, revision)} are "
                            f"in the local Hugging Face cache and {listing.why_local}, but the release has layers "
                            f"0-{release.n_layers - 1}: download the rest with network access, or load one with "
                            "layer=N")
    files = list(dict.fromkeys(f for m in members.values() for f in m.files))
    _announce(announce, listing, files, members, every=not hooks)
    snapshot = download(listing, files)
    return Fetched(repo_id, release, {name: snapshot / m.location for name, m in members.items()})


# ---------------------------------------------------------------------------------------------- loading

def _k_fallback(location: Path, repo_id: str, release: Release | None) -> int | None:
    """TopK k for a Qwen-Scope file whose folder states none (no qwen_scope.json, no "Top-K" README row):
    the release table's, else the repo name's ``...-L0_50``. (The cache folder is named by commit, so the
    reader's own folder-name rule cannot see the repo name.)"""
    if not location.name.endswith(".pt"):
        return None
    stated, _, _ = qwen_scope.k_from_folder(location.parent, qwen_scope.layer_of(location))
    if stated is not None:
        return None
    if release is not None:
        return release.k
    m = re.search(r"L0[_-](\d+)", repo_id.rpartition("/")[2])
    return int(m.group(1)) if m else None


def with_backbone(sae, release: Release | None):
    """``sae`` with ``cfg.model_name`` set to the release's backbone (unchanged outside the release table)."""
    if release is None:
        return sae
    return sae.replace(cfg=sae.cfg.replace(model_name=release.model_id))


def load_sae_from_hub(repo_id: str, format: str | None = None, *, hook: str | None = None, k: int | None = None,
                      norm_scaling_factor: float | None = None, revision: str | None = None):
    """One SAE of a hub repo (see the module docstring); the arguments are `load.load_sae`'s."""
    from qwen_sae_jax.interop import load

    fetched = fetch_sae(repo_id, hook=hook, revision=revision)
    (location,) = fetched.locations.values()
    k = k if k is not None else _k_fallback(location, repo_id, fetched.release)
    sae = load.load_sae(location, format, k=k, norm_scaling_factor=norm_scaling_factor)
    return with_backbone(sae, fetched.release)


def load_saes_from_hub(repo_id: str, format: str | None = None, *, k: int | None = None,
                       norm_scaling_factor: float | None = None, revision: str | None = None,
                       hooks: Sequence[str] | None = None, strict: bool = True,
                       announce: Callable[[str], None] | None = None) -> dict:
    """Every SAE of a hub repo as ``{name: SAE}`` (``layers.N`` for Qwen-Scope files, folder paths else); with
    ``hooks`` (names, aliases, globs) only theirs are downloaded. ``strict`` / ``announce``: see `fetch_saes`."""
    from qwen_sae_jax.interop import load

    layers_only = None if format is None else format == "qwen-scope"
    fetched = fetch_saes(repo_id, revision=revision, layers_only=layers_only, hooks=hooks, strict=strict,
                         announce=announce)
    saes = {}
    for name, location in fetched.locations.items():
        if format is not None and load.detect_format(location) != format:
            continue
        member_k = k if k is not None else _k_fallback(location, repo_id, fetched.release)
        sae = load.load_sae(location, format, k=member_k, norm_scaling_factor=norm_scaling_factor)
        saes[name] = with_backbone(sae, fetched.release)
    if not saes:
        raise UserError(f"no {format} SAE in hub repository {_at(repo_id, revision)}; it holds: "
                        f"{', '.join(fetched.locations)}")
    return saes
