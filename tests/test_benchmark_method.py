"""The overhead benchmark's method (not its figures): bracketed timing cancels a drifting machine,
the A/A control sets the noise, and a target inside the noise is UNDECIDED."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
so = pytest.importorskip("steering_overhead")


class DriftingClock:
    """A machine that slows down by 3 % more with every run: a run of ``cost`` seconds takes
    ``cost * (1 + 0.03 * n)`` on the n-th run (wall and CPU alike)."""

    def __init__(self) -> None:
        self.now, self.runs = 0.0, 0

    def __call__(self) -> float:
        return self.now

    def runner(self, cost: float):
        def run() -> None:
            self.now += cost * (1 + 0.03 * self.runs)
            self.runs += 1
        return run


def test_bracketed_timing_cancels_a_steady_drift(monkeypatch) -> None:
    clock = DriftingClock()
    monkeypatch.setattr(so.time, "perf_counter", clock)
    monkeypatch.setattr(so.time, "process_time", clock)
    rows = {"bare model": clock.runner(1.0), "half speed": clock.runner(2.0), "same": clock.runner(1.0)}
    times = so.time_rows(rows, reps=4, sync=lambda: None, seed=0)
    assert set(times) == {so.CONTROL, "half speed", "same"}
    for clk in ("wall", "cpu"):
        assert so.ratios(times["half speed"], clk) == pytest.approx([0.5] * 4, rel=1e-12)
        assert so.ratios(times[so.CONTROL], clk) == pytest.approx([1.0] * 4, rel=1e-12)
    # without brackets (the previous design: one bare run per repetition) the drift leaks in
    naive = [times[so.CONTROL]["wall"][i] / t for i, t in enumerate(times["half speed"]["wall"])]
    assert max(abs(r - 0.5) for r in naive) > 0.01
    # 3 rows x (row + bare after) + 1 leading bare run per repetition, after one warm-up call each
    assert clock.runs == 3 + 4 * (1 + 2 * 3)


def test_targets_inside_the_controls_noise_are_undecided() -> None:
    assert so.verdict(0.985, 0.99, noise=0.016) == "UNDECIDED"
    assert so.verdict(0.963, 0.93, noise=0.016) == "PASS"
    assert so.verdict(0.90, 0.93, noise=0.016) == "FAIL"
    r = {so.CONTROL: (1.0, 0.98, 1.02), "saesteer, attached, no edits": (0.995, 0.99, 1.0)}
    for n in so.COUNTS:
        r[f"saesteer, TopK, clamp {n}"] = (0.96, 0.95, 0.97)
        r[f"saesteer, JumpReLU, clamp {n}"] = (0.90, 0.89, 0.91)
        r[f"sae-lens hook, TopK, clamp {n}"] = (0.955, 0.94, 0.96)
    checks = dict(so.targets({1: r}))
    assert checks["b1: zero edits >= 0.99x (0.995 vs 0.990)"] == "UNDECIDED"
    assert checks["b1: TopK clamp 4 >= 0.93x (0.960 vs 0.930)"] == "PASS"
    assert checks["b1: JumpReLU clamp 16 >= 0.97x (0.900 vs 0.970)"] == "FAIL"
    peer = "b1: saesteer TopK clamp 1 >= sae-lens hook, TopK, clamp 1 (0.960 vs 0.955)"
    assert checks[peer] == "UNDECIDED"    # 0.005 apart, noise 0.02


def test_wider_sae_for_the_memory_rows_has_the_same_shape_rules(tmp_path) -> None:
    import saesteer

    cfg = saesteer.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=4)
    sae = saesteer.SAE(cfg, dtype=torch.float32)
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
    wide = saesteer.load_sae(so.wider_sae(sae, 3, tmp_path / "x3"))
    assert (wide.d_in, wide.d_sae, wide.cfg.architecture, wide.cfg.k) == (8, 48, "topk", 4)
    assert torch.equal(wide.b_dec, sae.b_dec)
    assert float(wide.W_enc.detach().std()) == pytest.approx(float(sae.W_enc.detach().std()), rel=0.5)
