"""``load_model()`` -> ``LanguageModel``: the user-facing model object (forward, capture, intervene, generate),
the same for every family (Qwen3 dense / MoE, Qwen3.5 hybrid dense / MoE; dispatched on ``model_type``).

    lm = load_model("tiny")                       # the embedded model (qwen_sae_jax/assets/tiny-qwen3/)
    lm = load_model("/path/to/hf_dir")            # local HF directory (config.json + safetensors)
    lm = load_model("Qwen/Qwen3-0.6B")            # hub id via huggingface_hub (cache and HF_HUB_OFFLINE honoured)
    logits = lm.logits(tokens)                    # [B, T, V]
    acts = lm.capture(tokens, ["layers.1", "blocks.1.hook_mlp_out"])   # {canonical name: [B, T, D]}
    logits = lm.logits(tokens, interventions={"layers.1": lambda a: a * 0})

Padding convention: ``attention_mask [B, T]`` has 1 for tokens and 0 for padding (left or right). When
``position_ids`` is not given they are counted from each row's first real token
(``cumsum(mask) - 1``), so a padded row gives the same activations as the row alone. (HF's bare
forward numbers positions 0..T-1 whatever the padding; its ``generate`` counts them as here.)
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from qwen_sae_jax import hooks
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models import registry
from qwen_sae_jax.sharding import MESH_AXES, check_rules, logical_sharding

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
TINY_DIR = os.path.join(ASSETS_DIR, "tiny-qwen3")
# the models shipped in the package (built by launch/build_tiny_model.py): name -> HF directory
EMBEDDED_MODELS = {"tiny": TINY_DIR, "tiny-qwen3.5": os.path.join(ASSETS_DIR, "tiny-qwen3.5")}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


def _dtype(dtype) -> jnp.dtype:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UserError(f"dtype={dtype!r} is not supported; valid: {', '.join(_DTYPES)}")
        return _DTYPES[dtype]
    return jnp.dtype(dtype)


def resolve_model_dir(name_or_path: str) -> str:
    """Local directory of an embedded model (``EMBEDDED_MODELS``: "tiny", "tiny-qwen3.5"), a local HF directory,
    or a hub id (downloaded/cached)."""
    if name_or_path in EMBEDDED_MODELS:
        path = EMBEDDED_MODELS[name_or_path]
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(f"the embedded model {name_or_path!r} is missing: no config.json in {path} (it is "
                            f"produced by launch/build_tiny_model.py; pass a local HF directory instead)")
        return path
    if os.path.isdir(name_or_path):
        return name_or_path
    looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        embedded = ", ".join(map(repr, EMBEDDED_MODELS))
        raise UserError(f"model {name_or_path!r} is neither an embedded model ({embedded}), "
                        f"an existing directory, nor a hub id like 'Qwen/Qwen3-0.6B'")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as err:  # pragma: no cover - huggingface_hub is a dependency of transformers
        raise UserError(f"loading hub id {name_or_path!r} needs huggingface_hub: {err}") from None
    try:
        return snapshot_download(name_or_path, allow_patterns=_HUB_PATTERNS)
    except LocalEntryNotFoundError:
        raise UserError(f"model {name_or_path!r} is not in the Hugging Face cache and the hub cannot be reached "
                        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})") from None
    except RepositoryNotFoundError:
        raise UserError(f"hub repository {name_or_path!r} does not exist (or needs a token)") from None


def _load_tokenizer(path: str):
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def load_model(name_or_path: str = "tiny", dtype="float32", mesh: Mesh | None = None,
               param_dtype=None, rules: Mapping[str, str | None] | None = None) -> "LanguageModel":
    """Load a model of any supported ``model_type`` (``models.registry.MODEL_TYPES``).

    ``dtype`` is the compute dtype, ``param_dtype`` (default: ``dtype``) the storage dtype.
    ``mesh`` (axes ``'data'`` and ``'model'``): parameters are created directly with their shardings
    (each family's ``params.PARTITION_RULES`` names their logical axes); ``rules`` maps logical axes to mesh axes
    (``qwen_sae_jax.sharding``; None or names left out: ``DEFAULT_RULES``, FSDP over ``data``, tensor / expert
    parallel over ``model``). Token batches and logits are placed by the same table (``batch``, ``vocab``).
    """
    if mesh is not None and not set(mesh.axis_names) <= set(MESH_AXES):
        raise UserError(f"mesh axes {mesh.axis_names} are not supported; use axes among {MESH_AXES}")
    rules = check_rules(rules)
    compute = _dtype(dtype)
    store = compute if param_dtype is None else _dtype(param_dtype)
    path = resolve_model_dir(os.fspath(name_or_path))
    config, params = registry.load_hf(path, param_dtype=store, mesh=mesh, rules=rules)
    return LanguageModel(config, params, tokenizer=_load_tokenizer(path), dtype=compute, param_dtype=store,
                         mesh=mesh, name=os.fspath(name_or_path), rules=rules)


class LanguageModel:
    """A language model with its params and tokenizer; forward, capture, interventions and generation.

    Attributes: ``config`` (Qwen3Config or Qwen3_5Config), ``params`` (Flax tree ``model/layers_N/...``),
    ``tokenizer`` (transformers tokenizer or None), ``module`` (the family's linen causal LM), ``mesh`` (or None),
    ``rules`` (the full logical -> mesh axis table the params were placed by), ``name`` (what ``load_model`` was
    given).
    """

    def __init__(self, config, params, tokenizer=None, dtype=jnp.float32, param_dtype=None,
                 mesh: Mesh | None = None, name: str = "", rules: Mapping[str, str | None] | None = None):
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.dtype = jnp.dtype(dtype)
        self.mesh = mesh
        self.rules = check_rules(rules)
        self.name = name
        self.module = registry.causal_lm(config, self.dtype,
                                         self.dtype if param_dtype is None else jnp.dtype(param_dtype))
        self._compiled: OrderedDict = OrderedDict()

    def __repr__(self):
        c = self.config
        return (f"LanguageModel({self.name!r}, {c.model_type}, layers={c.num_hidden_layers}, d_model={c.hidden_size}, "
                f"vocab={c.vocab_size}, dtype={self.dtype.name})")

    # ------------------------------------------------------------------ hook names
    @property
    def hook_names(self) -> list[str]:
        """Every canonical hook name of this model, in forward order."""
        return hooks.hook_names(self.config.mixers)

    def resolve_hooks(self, patterns: str | Iterable[str]) -> list[str]:
        """Canonical names for names / aliases / globs (UserError listing the valid names otherwise)."""
        return hooks.resolve_hooks(patterns, self.config.mixers)

    def _resolve_interventions(self, interventions: Mapping[str, Callable] | None) -> dict[str, Callable]:
        resolved: dict[str, Callable] = {}
        for pattern, fn in (interventions or {}).items():
            if not callable(fn):
                raise UserError(f"intervention for {pattern!r} must be a function act -> act, got {type(fn).__name__}")
            for name in self.resolve_hooks([pattern]):
                if name in resolved:
                    raise UserError(f"two interventions target {name}")
                resolved[name] = fn
        return resolved

    # ------------------------------------------------------------------ pure form
    def apply(self, params, input_ids, attention_mask=None, position_ids=None, *, capture: Sequence[str] = (),
              interventions: Mapping[str, Callable] | None = None, stop_after_capture: bool = False,
              remat_layers: bool = False):
        """Pure, traceable forward: ``(logits [B, T, V] or None, {name: [B, T, D]})``.

        ``capture`` and ``interventions`` keys may be names, aliases or globs (resolved at trace time).
        With ``stop_after_capture`` only the layers up to the deepest captured hook run; the layers
        above, the final norm and the LM head are not computed and the logits are None. With a mesh the
        logits are laid out by ``rules`` as ``(batch, None, vocab)`` (by default rows over 'data', the
        vocabulary over 'model'). ``remat_layers``: each decoder layer is rematerialised when differentiated
        (gradient checkpointing; the same values, captures and interventions included).
        """
        names = self.resolve_hooks(list(capture)) if capture else []
        resolved = self._resolve_interventions(interventions)
        if stop_after_capture and not names:
            raise UserError("stop_after_capture=True needs at least one hook to capture")
        if attention_mask is not None and position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        num_layers = max(hooks.layers_needed(n) for n in names) if stop_after_capture else None
        interceptor = hooks.HookInterceptor(names, resolved)
        module = self.module.clone(remat_layers=True) if remat_layers else self.module
        out = interceptor.apply(module, {"params": params}, input_ids, attention_mask, position_ids,
                                num_layers=num_layers)
        acts = dict(interceptor.captured)
        if num_layers is not None:
            # "layers.N.input" of the first layer not run is the residual stream the truncated model returns
            boundary = f"layers.{num_layers}.input"
            if boundary in names and boundary not in acts:
                acts[boundary] = interceptor.at_hook(boundary, out)
            out = None
        if out is not None and self.mesh is not None:
            out = jax.lax.with_sharding_constraint(out, self.logits_sharding(out.shape))
        missing = [n for n in names if n not in acts]
        assert not missing, f"hooks not reached: {missing}"  # a bug, not user input
        return out, {n: acts[n] for n in names}

    def logits_sharding(self, shape: Sequence[int]):
        """The sharding of logits of ``shape`` [B, T, V] on this model's mesh (``rules``: batch, None, vocab)."""
        assert self.mesh is not None, "logits_sharding needs a model loaded with a mesh"
        return logical_sharding(("batch", None, "vocab"), shape, self.mesh, self.rules)

    # ------------------------------------------------------------------ compiled conveniences
    def _jitted(self, key, build: Callable):
        fn = self._compiled.get(key)
        if fn is None:
            fn = jax.jit(build())
            self._compiled[key] = fn
            while len(self._compiled) > 32:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(key)
        return fn

    def _inputs(self, tokens, attention_mask):
        ids = np.asarray(tokens)
        if ids.ndim != 2 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise UserError(f"tokens must be a non-empty [batch, seq] integer array, got shape {ids.shape} "
                            f"dtype {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise UserError(f"token ids must be in [0, {self.config.vocab_size}), got min {ids.min()} max {ids.max()}")
        if attention_mask is not None:
            mask = np.asarray(attention_mask)
            if mask.shape != ids.shape:
                raise UserError(f"attention_mask shape {mask.shape} differs from tokens shape {ids.shape}")
            attention_mask = jnp.asarray(mask.astype(np.int32))
        ids = jnp.asarray(ids.astype(np.int32))
        sharding = None if self.mesh is None else logical_sharding(("batch", None), ids.shape, self.mesh, self.rules)
        if sharding is not None and any(sharding.spec):   # rows split by the `batch` rule (when they divide)
            ids = jax.device_put(ids, sharding)
            attention_mask = None if attention_mask is None else jax.device_put(attention_mask, sharding)
        return ids, attention_mask

    def logits(self, tokens, attention_mask=None, interventions: Mapping[str, Callable] | None = None):
        """Logits ``[B, T, V]`` (compute dtype) for ``tokens [B, T]``, with optional interventions."""
        ids, mask = self._inputs(tokens, attention_mask)
        resolved = self._resolve_interventions(interventions)
        key = ("logits", mask is None, _fn_key(resolved))
        fn = self._jitted(key, lambda: lambda p, x, m: self.apply(p, x, m, interventions=resolved)[0])
        return fn(self.params, ids, mask)

    def capture(self, tokens, hook_names: str | Sequence[str], attention_mask=None,
                interventions: Mapping[str, Callable] | None = None) -> dict[str, jax.Array]:
        """``{canonical name: [B, T, D]}`` at the requested hooks; layers above the deepest are not run."""
        names = self.resolve_hooks(hook_names)
        ids, mask = self._inputs(tokens, attention_mask)
        resolved = self._resolve_interventions(interventions)
        key = ("capture", tuple(names), mask is None, _fn_key(resolved))
        fn = self._jitted(key, lambda: lambda p, x, m: self.apply(
            p, x, m, capture=names, interventions=resolved, stop_after_capture=True)[1])
        acts = fn(self.params, ids, mask)
        return {n: acts[n] for n in names}  # forward order (jit returns dicts with sorted keys)

    # ------------------------------------------------------------------ generation
    def stop_token_ids(self) -> tuple[int, ...]:
        """Token ids that end generation: the config's EOS ids, the tokenizer's EOS and ``<|im_end|>``."""
        ids = set(self.config.eos_token_ids)
        tok = self.tokenizer
        if tok is not None:
            if tok.eos_token_id is not None:
                ids.add(int(tok.eos_token_id))
            im_end = tok.convert_tokens_to_ids("<|im_end|>")
            if isinstance(im_end, int) and im_end != tok.unk_token_id and im_end >= 0:
                ids.add(im_end)
        return tuple(sorted(ids))

    def generate_tokens(self, tokens, attention_mask=None, *, max_new_tokens: int = 32, temperature: float = 0.0,
                        top_p: float = 1.0, seed: int = 0, interventions: Mapping[str, Callable] | None = None,
                        stop_ids: Sequence[int] | None = None):
        """New tokens for left-padded prompts ``tokens [B, P]``: ``(tokens [B, N] int32, lengths [B])`` numpy.

        Positions after ``lengths[b]`` hold the pad id. ``stop_ids`` defaults to ``stop_token_ids()``.
        """
        from qwen_sae_jax.models.generate import generate

        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if not temperature >= 0.0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1], got {top_p}")
        ids, mask = self._inputs(tokens, attention_mask)
        if mask is None:
            mask = jnp.ones_like(ids)
        elif bool(jnp.any(mask[:, -1] == 0)):
            raise UserError("generation needs left-padded prompts: the last column of attention_mask must be 1")
        total = ids.shape[1] + max_new_tokens
        if total > self.config.max_position_embeddings:
            raise UserError(f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
                            f"max_position_embeddings={self.config.max_position_embeddings}")
        # pad the prompt on the left to a multiple of 16 tokens so that nearby lengths share one program
        extra = -ids.shape[1] % 16
        if extra:
            ids = jnp.pad(ids, ((0, 0), (extra, 0)), constant_values=self.pad_token_id)
            mask = jnp.pad(mask, ((0, 0), (extra, 0)))
        resolved = self._resolve_interventions(interventions)
        stops = tuple(self.stop_token_ids() if stop_ids is None else stop_ids)
        greedy, use_top_p = temperature == 0.0, top_p < 1.0
        key = ("generate", max_new_tokens, stops, greedy, use_top_p, _fn_key(resolved))

        def build():
            def run(params, ids, mask, temperature, top_p, rng):
                interceptor = hooks.HookInterceptor((), resolved)
                return generate(self.module, params, ids, mask, max_new_tokens=max_new_tokens, stop_ids=stops,
                                pad_id=self.pad_token_id, greedy=greedy, use_top_p=use_top_p,
                                temperature=temperature, top_p=top_p, key=rng, wrap=interceptor.run)
            return run

        out, lengths = self._jitted(key, build)(self.params, ids, mask, jnp.float32(max(temperature, 1e-6)),
                                                jnp.float32(top_p), jax.random.key(seed))
        return np.asarray(out), np.asarray(lengths)

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 32, chat: bool = True,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 interventions: Mapping[str, Callable] | None = None) -> str | list[str]:
        """Continue each prompt; with ``chat`` the prompt is one user turn rendered by the tokenizer's chat
        template. Returns the decoded new text (special tokens dropped): a str for a str, else a list."""
        single = isinstance(prompts, str)
        ids, mask = self.tokenize([prompts] if isinstance(prompts, str) else prompts, padding_side="left", chat=chat)
        out, lengths = self.generate_tokens(ids, mask, max_new_tokens=max_new_tokens, temperature=temperature,
                                            top_p=top_p, seed=seed, interventions=interventions)
        texts = [self.tokenizer.decode(row[:n].tolist(), skip_special_tokens=True) for row, n in zip(out, lengths)]
        return texts[0] if single else texts

    # ------------------------------------------------------------------ text helpers
    def tokenize(self, texts: str | Sequence[str], padding_side: str = "right", chat: bool = False):
        """``(input_ids [B, T] int32, attention_mask [B, T] int32)`` numpy arrays for texts."""
        tok = self._require_tokenizer()
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise UserError("texts must be a non-empty list of strings")
        if chat:
            texts = [apply_chat_template(tok, t) for t in texts]
        encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        if any(len(e) == 0 for e in encoded):
            raise UserError("a text encodes to zero tokens")
        return pad_batch(encoded, pad_id=self.pad_token_id, side=padding_side)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for cand in (getattr(tok, "pad_token_id", None), self.config.pad_token_id,
                     *(self.config.eos_token_ids or ()), 0):
            if cand is not None:
                return int(cand)
        return 0

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise UserError(f"model {self.name!r} has no tokenizer files (tokenizer.json / tokenizer_config.json)")
        return self.tokenizer


def _fn_key(interventions: Mapping[str, Callable]) -> tuple:
    # the functions themselves (hashed by identity, kept alive by the cache) so a compiled program is only
    # reused for the very same function objects; pass the same function again to avoid recompiling
    return tuple(sorted(interventions.items(), key=lambda kv: kv[0]))


def check_saes_fit(lm, saes: Mapping[str, "SAE"]) -> None:
    """UserError unless ``saes`` ({name: SAE}) is not empty and every SAE reads a hook of ``lm`` with the
    model's width (evaluation, analysis and steering check their inputs with this)."""
    if not saes:
        raise UserError("no SAEs given")
    valid = set(lm.hook_names)
    for name, sae in saes.items():
        hook = sae.cfg.hook_name
        if hook not in valid:
            raise UserError(f"SAE {name!r} reads hook {hook!r}, which model {lm.name!r} "
                            f"({lm.config.num_hidden_layers} layers) does not have; "
                            + hooks.valid_listing(lm.config.mixers))
        if sae.cfg.d_in != lm.config.hidden_size:
            raise UserError(f"SAE {name!r} has d_in={sae.cfg.d_in} but model {lm.name!r} has width "
                            f"{lm.config.hidden_size}: it belongs to another model")


def positions_from_mask(attention_mask):
    """Position ids ``[B, T]`` counted from each row's first real token (0 on left padding)."""
    mask = jnp.asarray(attention_mask).astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"):
    """Pad token lists to ``(ids [B, T], mask [B, T])`` numpy int32, padding on ``side`` ('left'/'right')."""
    if side not in ("left", "right"):
        raise UserError(f"padding side {side!r} is not valid; valid: 'left', 'right'")
    length = max(len(s) for s in sequences)
    ids = np.full((len(sequences), length), pad_id, np.int32)
    mask = np.zeros((len(sequences), length), np.int32)
    for b, seq in enumerate(sequences):
        sl = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
        ids[b, sl] = seq
        mask[b, sl] = 1
    return ids, mask


def apply_chat_template(tokenizer, text: str) -> str:
    """One user turn rendered with the tokenizer's chat template, generation prompt appended."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("chat=True but the tokenizer has no chat_template")
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
