"""The two README commands: `make demo` installs only the package's runtime dependencies, `make test` adds the
test extra (one venv for both); and the demo really runs with the runtime dependencies alone."""
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TEST_ONLY = ("torch", "pytest", "datasets", "sae_lens", "sparsify", "nbclient", "ipykernel", "tensorboardX")


def _make(target: str, venv: Path) -> list[str]:
    """The commands `make TARGET` would run for a fresh venv (dry run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # under `make test` this runs nested: without the parent's MAKEFLAGS / MAKELEVEL and with
    # --no-print-directory, the output is the same as from a shell
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    out = subprocess.run(["make", "--no-print-directory", "-n", target, f"VENV={venv}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_make_demo_installs_runtime_only_and_make_test_adds_the_extra(tmp_path):
    venv = tmp_path / "venv"
    demo = _make("demo", venv)
    installs = [line for line in demo if " pip install " in line and "--upgrade pip" not in line]
    assert installs == [f"{venv}/bin/python -m pip install -q -e ."] and demo[-1] == f"{venv}/bin/qwen-sae demo"
    test = _make("test", venv)
    assert installs[0] in test and f"{venv}/bin/python -m pip install -q -e '.[test]'" in test
    assert test[-1].startswith(f"{venv}/bin/python -m pytest")


def _runtime_closure() -> set[str]:
    """Distributions needed by qwen_sae_jax without extras (its requirements, recursively)."""
    todo, seen = ["qwen_sae_jax"], set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue            # an optional requirement this environment lacks
        seen.add(name)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.mark.slow   # a short demo in a second environment
def test_demo_runs_with_the_runtime_dependencies_alone(tmp_path):
    """A venv whose site-packages holds only the runtime closure (linked from this environment, no download):
    the test-only packages cannot be imported there, and a shortened `qwen-sae demo` still trains and reports."""
    closure = _runtime_closure()
    assert "jax" in closure and not {canonicalize_name(m) for m in ("torch", "pytest", "datasets")} & closure
    venv = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for name in closure:
        dist = md.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    code = ("import importlib.util, sys\n"
            f"assert not [m for m in {TEST_ONLY!r} if importlib.util.find_spec(m)], 'test-only package present'\n"
            "from qwen_sae_jax.cli import main\n"
            f"sys.exit(main(['demo', '--run-dir', {str(tmp_path / 'demo')!r}, 'train.total_tokens=2048',"
            " 'buffer.size=2048', 'buffer.init_sample=512', 'eval.tokens=1024']))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FVU" in out.stdout and len(list((tmp_path / "demo" / "saes").iterdir())) == 12
