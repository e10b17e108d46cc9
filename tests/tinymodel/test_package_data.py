"""The embedded models ship in the wheel: every file under qwen_sae_jax/assets/ (tiny-qwen3, tiny-qwen3.5, their
held-out data) is packaged by pyproject's package-data."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qwen_sae_jax.lm import EMBEDDED_MODELS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_holds_every_embedded_model_file(tmp_path):
    src = tmp_path / "src"          # a copy, so the build leaves no build/ or egg-info in the shared checkout
    shutil.copytree(REPO / "qwen_sae_jax", src / "qwen_sae_jax", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("qwen_sae_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for model_dir in map(Path, EMBEDDED_MODELS.values()):
        files = [p for p in model_dir.rglob("*") if p.is_file()]
        assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in files}, model_dir
        missing = [str(p.relative_to(REPO)) for p in files if str(p.relative_to(REPO)) not in names]
        assert not missing, missing
