"""benchmarks/sae_quality.py: the matched-L0 search on a known curve, and the whole script at --dry-run
budgets (every implementation trains, the table and the machine-readable last line come out)."""
import importlib.util
import math
import pathlib
import sys

import pytest

PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "sae_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sae_quality", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_matched_l0_search_finds_the_coefficient_and_interpolates_log_log(bench):
    # a power law L0 = 400 / coef^0.7 and FVU = 0.02 * L0^-0.5: the search must land near L0 = 32 and the
    # log-log interpolation must return the curve's FVU there
    calls = []

    def run(coef):
        calls.append(coef)
        l0 = 400.0 / coef ** 0.7
        return bench.Result(fvu=0.02 * l0 ** -0.5, l0=l0, dead=0.0, ms_per_step=1.0, coef=coef)

    final, tried = bench.at_target_l0(run, 1.0, 32.0, runs=4)
    assert len(tried) == len(calls) <= 4
    assert min(abs(math.log(t.l0 / 32.0)) for t in tried) < 0.05
    assert final.l0 == 32.0
    assert final.fvu == pytest.approx(0.02 * 32.0 ** -0.5, rel=1e-6)


def test_dry_run_trains_every_implementation(bench, capsys):
    out = bench.main(["--dry-run", "--archs", "topk", "jumprelu"])
    impls = {(r["arch"], r["impl"]) for r in out["runs"]}
    assert impls == {("topk", "ours"), ("topk", "sparsify"), ("topk", "saelens"), ("jumprelu", "ours"),
                     ("jumprelu", "saelens")}
    assert all(0 < r["fvu"] < 2 and math.isfinite(r["ms_per_step"]) for r in out["runs"])
    assert [r["arch"] for r in out["summary"]] == ["topk", "jumprelu"]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"sae_quality: worst_ratio={out['worst_ratio']:.4f}"
