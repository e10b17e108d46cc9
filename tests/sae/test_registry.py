"""The architecture registry: every architecture registers itself, lookups fail with one clear line, and the
SAE package's run-time imports point one way (base code -> registry <- architectures, no loop)."""
import ast
import importlib
import re
from pathlib import Path

import jax.numpy as jnp
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae import ARCHITECTURES, SAE, SAEConfig
from qwen_sae_jax.sae.registry import Architecture, architecture_names, get_architecture, register

SAE_DIR = Path(__file__).resolve().parents[2] / "qwen_sae_jax" / "sae"
PACKAGE = "qwen_sae_jax.sae"
ARCH = f"{PACKAGE}.architectures"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SAE_DIR).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((PACKAGE,) + parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SAE_DIR.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (module level or inside functions), skipping `if TYPE_CHECKING:`."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _targets(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The modules of this package an import statement loads (``from pkg import mod`` names ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        names = {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {name for name in names if name in modules}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of qwen_sae_jax.sae it imports at run time."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        graph[name] = set().union(*(_targets(node, modules) for node in _runtime_imports(tree))) - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as a list of modules, or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_every_architecture_registers_itself_under_a_name_sae_config_accepts():
    assert set(architecture_names()) == set(ARCHITECTURES)
    for name in ARCHITECTURES:
        arch = get_architecture(name)
        assert arch.name == name and arch.__class__ is Architecture
        assert arch.encode.__module__ == f"{ARCH}.{name}" and arch.loss.__module__ == f"{ARCH}.{name}"
    assert [n for n in ARCHITECTURES if get_architecture(n).encode_sparse is not None] == ["topk"]


def test_unknown_architecture_says_what_is_valid():
    with pytest.raises(UserError, match=r"unknown SAE architecture 'topK' \(did you mean 'topk'\?\); "
                                        r"valid: batchtopk, jumprelu, relu, topk"):
        get_architecture("topK")


def test_a_second_registration_under_one_name_is_refused_and_changes_nothing():
    before = get_architecture("relu")
    with pytest.raises(ValueError, match="'relu' is registered twice"):
        register(Architecture("relu", encode=before.encode, loss=before.loss))
    assert get_architecture("relu") is before


def test_encode_topk_needs_an_architecture_with_a_sparse_encoding():
    cfg = SAEConfig(architecture="relu", d_in=4, d_sae=8)
    sae = SAE(W_enc=jnp.zeros((4, 8)), b_enc=jnp.zeros(8), W_dec=jnp.zeros((8, 4)), b_dec=jnp.zeros(4),
              threshold=jnp.zeros(8), act_scale=jnp.ones(()), cfg=cfg)
    with pytest.raises(UserError, match=r"encode_topk is for topk SAEs; this one is 'relu' \(use encode\)"):
        sae.encode_topk(jnp.ones((2, 4)))


def test_the_import_graph_sees_the_edges_it_must():
    """The checks below are only as good as this parser: it must see both styles and skip TYPE_CHECKING."""
    graph = import_graph()
    assert f"{PACKAGE}.registry" in graph[f"{PACKAGE}.losses"]            # from ... import name
    assert f"{ARCH}.topk" in graph[ARCH]                                   # from package import module
    assert f"{PACKAGE}.kernels.topk" in graph[f"{PACKAGE}.select"]         # import inside a function
    assert f"{PACKAGE}.core" not in graph[f"{ARCH}.topk"]                  # only under TYPE_CHECKING


def test_losses_and_core_never_import_an_architecture_and_no_architecture_imports_them():
    graph = import_graph()
    base = {f"{PACKAGE}.losses", f"{PACKAGE}.core", f"{PACKAGE}.registry", f"{PACKAGE}.loss_terms"}
    for module in sorted(base):
        assert not {m for m in graph[module] if m.startswith(ARCH)}, f"{module} imports an architecture"
    for module in sorted(m for m in graph if m.startswith(ARCH)):
        back = graph[module] & {f"{PACKAGE}.losses", f"{PACKAGE}.core", PACKAGE}
        assert not back, f"{module} imports {sorted(back)} at run time (import them under TYPE_CHECKING only)"


def test_the_sae_package_has_no_import_loop():
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import loop: " + " -> ".join(cycle or [])


def _docstring_references() -> list[tuple[str, str]]:
    """(module, `reference`) for every backticked name in the SAE package's docstrings."""
    refs = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for node in nodes:
            for ref in re.findall(r"(?<!`)`([A-Za-z_][\w./]*)`(?!`)", ast.get_docstring(node) or ""):
                refs.append((name, ref))
    return refs


def _import_path(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or a module followed by attributes (``qwen_sae_jax.sae.core.SAE.encode``)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def _resolves(ref: str) -> bool:
    """Whether a docstring reference names something that exists: a file of the package, a module or attribute
    (written in full, from ``qwen_sae_jax``, from the SAE package or from `architectures`), or a name defined
    in one of the SAE modules."""
    if ref.endswith(".py"):
        return any((base / ref).is_file() for base in (SAE_DIR, SAE_DIR / "architectures", SAE_DIR.parents[1]))
    for prefix in ("", "qwen_sae_jax.", f"{PACKAGE}.", f"{ARCH}."):
        if (prefix or ref.startswith("qwen_sae_jax")) and _import_path(prefix + ref):
            return True
    return any(_import_path(f"{module}.{ref}") for module in _modules())


def test_docstrings_name_what_exists():
    """A backticked code name in an SAE docstring (a class, a function, ``module.name``, a file) must exist:
    no stale names such as a removed class."""
    external = {"jax.custom_vjp", "lax.top_k", "lax.approx_max_k", "lax.scan", "optax.masked", "jax.shard_map",
                "jax.set_mesh", "jax_debug_nans", "flax.struct.dataclass", "pallas.triton.CompilerParams", "fori_loop"}
    stale = [(m, ref) for m, ref in _docstring_references()
             if ref not in external and (ref.endswith(".py") or "." in ref or re.search(r"[a-z][A-Z]|_", ref))
             and not _resolves(ref)]
    assert not stale, f"docstrings name what does not exist: {stale}"
