"""benchmarks/sae_quality.py: the matched-L0 search on a known curve, and the whole script at --dry-run
budgets (every implementation trains, the table and the machine-readable last line come out)."""
import math

import pytest

from tests.benchmarks.loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("sae_quality")


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


def test_matched_l0_search_closes_in_on_a_steep_curve_from_either_start(bench):
    # ReLU's L0 at the tiny model's attention output falls 41 -> 2 between coefficients 10 and 20: far from a
    # power law. From either library's default (1, 5) or an over-sparse start the search must end with a run
    # within 6% of the target, and the FVU it reports must be the curve's (a log-log step across the whole
    # bracket was 27% off here)
    def curve(coef):   # L0 = 280 exp(-coef / 4.8): 227, 150, 35, 4.3 at 1, 3, 10, 20 (measured: 235, 125, 41, 2.4)
        l0 = 280.0 * math.exp(-coef / 4.8)
        return l0, 1.0 - 0.9 * (l0 / 280.0) ** 0.35

    for start in (1.0, 5.0, 20.0):
        def run(coef):
            l0, fvu = curve(coef)
            return bench.Result(fvu=fvu, l0=l0, dead=0.0, ms_per_step=1.0, coef=coef)

        final, tried = bench.at_target_l0(run, start, 32.0, runs=6)
        assert min(abs(math.log(t.l0 / 32.0)) for t in tried) < 0.06, [(t.coef, t.l0) for t in tried]
        assert final.fvu == pytest.approx(1.0 - 0.9 * (32.0 / 280.0) ** 0.35, rel=0.01)


def test_dry_run_trains_every_implementation(bench, capsys):
    out = bench.main(["--dry-run", "--archs", "topk", "jumprelu"])
    impls = {(r["arch"], r["impl"]) for r in out["runs"]}
    assert impls == {("topk", "ours"), ("topk", "sparsify"), ("topk", "saelens"), ("jumprelu", "ours"),
                     ("jumprelu", "saelens")}
    assert all(0 < r["fvu"] < math.inf and math.isfinite(r["ms_per_step"]) for r in out["runs"])
    assert [(r["arch"], r["hook"]) for r in out["summary"]] == [
        ("topk", "layers.2"), ("jumprelu", "layers.2"), ("topk", "layers.2+offset"), ("jumprelu", "layers.2+offset")]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"sae_quality: worst_ratio={out['worst_ratio']:.4f}"


def test_matched_l0_search_never_repeats_a_coefficient_when_l0_barely_responds(bench):
    def run(coef):   # a JumpReLU whose threshold cannot move in the budget: L0 nearly flat in the coefficient
        l0 = 450.0 * coef ** -0.01
        return bench.Result(fvu=0.01, l0=l0, dead=0.0, ms_per_step=1.0, coef=coef)

    _, tried = bench.at_target_l0(run, 1.0, 32.0, runs=4)
    coefs = [t.coef for t in tried]
    assert len(coefs) == 4 and len(set(coefs)) == 4
    assert coefs == sorted(coefs)   # always pushing towards more sparsity
    final = bench.interpolate(tried, 32.0)   # never within 10% of the target: no FVU is made up
    assert math.isnan(final.fvu) and final.l0 > 400


def test_offset_adds_one_constant_vector_with_massive_coordinates(bench):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    shifted = bench.with_offset(x, 3.0)
    offset = shifted - x
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-5)
    assert np.abs(offset[0, :3]).min() > np.abs(offset[0, 3:]).max()
