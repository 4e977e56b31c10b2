"""Coverage and board reconstruction on a tiny case worked by hand (see the comments)."""

import numpy as np
import pytest

from saesteer.testbeds.othello.coverage import alive_features, board_reconstruction, coverage

# one square, classes (a, b); positions 0,1 hold a, positions 2,3 hold b
LABELS = np.array([[[1, 0]], [[1, 0]], [[0, 1]], [[0, 1]]], dtype=bool)
# features: f0 fires on the a positions, f1 is dead, f2 mostly on the b positions
ACTS = np.array([[2.0, 0, 0], [1.0, 0, 1.0], [0, 0, 1.0], [0, 0, 2.0]])
T = (0.0, 0.5)


def test_coverage_by_hand():
    # t=0 (on: > 0):  f0 on {0,1}: a P=1 R=1 F1=1.  f2 on {1,2,3}: a P=1/3 R=1/2 F1=0.4;
    #                 b P=2/3 R=1 F1=0.8.  best per class (1, 0.8) -> mean 0.9
    # t=0.5 (on: > 1): f0 on {0}: a F1=2/3.  f2 on {3}: b F1=2/3 -> mean 2/3
    out = coverage(ACTS, LABELS, thresholds=T)
    assert out["n_alive"] == 2 and list(alive_features(ACTS)) == [0, 2]
    assert out["per_threshold"] == pytest.approx([0.9, 2 / 3], abs=1e-6)
    assert out["coverage"] == pytest.approx(0.9, abs=1e-6) and out["best_threshold"] == 0.0
    # class b masked out (as blank is): only a counts, best at t=0 with F1 1
    masked = coverage(ACTS, LABELS, scored=(0,), thresholds=T)
    assert masked["per_threshold"] == pytest.approx([1.0, 2 / 3], abs=1e-6)


def test_board_reconstruction_by_hand():
    # train labels (min_count 1): t=0: f0 -> a (P(a|on)=1); f2 no label (2/3 < 0.95).
    #                             t=0.5: f0 -> a, f2 -> b.  thresholds: f0 and f2 max 2.
    test_acts = np.array([[1.5, 0, 0], [0, 0, 1.5], [0.5, 0, 1.2], [1.8, 0, 1.9]])
    test_labels = np.array([[[1, 0]], [[0, 1]], [[0, 1]], [[1, 0]]], dtype=bool)
    out = board_reconstruction(ACTS, LABELS, test_acts, test_labels, thresholds=T, min_count=1)
    # t=0: predicted a at p0, p2, p3; nothing at p1. TP 2, FP 1, FN 2: P 2/3, R 1/2, F1 4/7
    assert out["f1_per_class"][0] == pytest.approx(4 / 7, abs=1e-6)
    assert out["f1_per_square"][0] == pytest.approx(4 / 7, abs=1e-6)
    # t=0.5: p0 a, p1 b, p2 b (f0 off at 0.5), p3 both a and b. TP 4, FP 1, FN 0: F1 8/9.
    # per square p3 is a false positive only: TP 3, FP 1: P 3/4, R 1, F1 6/7
    assert out["f1_per_class"][1] == pytest.approx(8 / 9, abs=1e-6)
    assert out["f1_per_square"][1] == pytest.approx(6 / 7, abs=1e-6)
    assert out["precision_per_square"][1] == pytest.approx(0.75, abs=1e-6)
    assert out["f1"] == pytest.approx(6 / 7, abs=1e-6) and out["best_threshold"] == 0.5
    assert out["n_labelled"] == 2
    # with the paper's count floor of 10 no feature is labelled here: nothing is predicted
    none = board_reconstruction(ACTS, LABELS, test_acts, test_labels, thresholds=T)
    assert none["f1"] == pytest.approx(0.0, abs=1e-6) and none["n_labelled"] == 0


def test_shapes_are_checked():
    with pytest.raises(ValueError):
        coverage(ACTS[:3], LABELS)
