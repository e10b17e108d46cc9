"""launch/colab_demo.ipynb runs top to bottom on CPU (nbclient, a fresh ipykernel) in under 10 minutes."""
import os
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "launch" / "colab_demo.ipynb"


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "")


@pytest.mark.slow
def test_colab_demo_executes_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat",
                                   reason="needs the notebook test dependencies: nbformat, nbclient, ipykernel")
    nbclient = pytest.importorskip("nbclient", reason="needs nbclient")
    pytest.importorskip("ipykernel", reason="needs ipykernel")
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    # a kernel like a Colab runtime's: this Python, one CPU device (not the 8 forced by tests/conftest.py)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=str(NOTEBOOK.parents[1]))
    client = nbclient.NotebookClient(nb, timeout=540, kernel_name=NATIVE_KERNEL_NAME, allow_errors=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.time()
    client.execute(env=env)
    elapsed = time.time() - start
    assert elapsed < 600, f"the notebook took {elapsed:.0f} s"

    text = {i: "".join(_text(o) for o in cell.get("outputs", [])) for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code"}
    everything = "\n".join(text.values())
    assert "LanguageModel('tiny'" in everything
    assert "layers.2__topk-k16" in everything and "FVU" in everything          # the training table
    assert "ce_loss_recovered" in everything                                  # evaluation
    assert "promotes:" in everything and "[[" in everything                   # examples + logit lens
    assert (tmp_path / "runs" / "colab-demo-dashboard" / "index.html").is_file()
    assert "held-out:" in everything and "Chinese share" in everything        # classifier and steering
    assert "R=" in everything                                                 # redundancy
    assert "section 10 skipped" in everything                                 # the accelerator cell is guarded
    assert "Traceback" not in everything
