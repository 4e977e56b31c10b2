"""The report card's metrics on hand-computed cases, s_n on a synthetic dictionary whose true L0 is known,
and the report built end to end on a tiny model in seconds."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from saesteer.eval import metrics as M
from saesteer.eval.fms import fms, stump_accuracies, tree_accuracy


def test_fvu_r2_and_inliers():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert M.fvu(x, torch.zeros_like(x)) == 1.0
    assert M.fvu(x, x) == 0.0
    assert M.faithfulness_r2(x, 0.5 * x) == pytest.approx(0.75)
    big = torch.cat([torch.ones(99, 2), 100 * torch.ones(1, 2)])
    assert M.inliers(big).sum() == 99


def test_sparsity_counts():
    f = torch.tensor([[1.0, 0, 2], [0, 0, 3], [0, 0, 0], [4, 0, 0]])
    assert M.l0_per_row(f).tolist() == [2, 1, 0, 1]
    assert M.density(f).tolist() == [0.5, 0.0, 0.5]
    assert M.dead_fraction(f) == pytest.approx(1 / 3)


def test_nth_decoder_projection_is_the_value_at_n_times_b():
    x = torch.tensor([[3.0, 1.0], [2.0, 0.0]])
    W = torch.eye(2)
    # H = x, flattened and sorted: [3, 2, 1, 0]; B = 2
    assert M.nth_decoder_projection(x, W, None, 1) == 1.0
    assert M.nth_decoder_projection(x, W, None, 0) == 3.0
    assert M.nth_decoder_projection(x, W, torch.tensor([1.0, 1.0]), 1) == 0.0  # H = x - 1
    with pytest.raises(ValueError):
        M.nth_decoder_projection(x, W, None, 2)


def _toy(n_feat=50, d=100, k=11, N=2048, seed=0):
    """Codes with exactly ``k`` of ``n_feat`` orthogonal features active per sample (magnitudes 1 +- 0.15)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.linalg.qr(torch.randn(d, n_feat, generator=g))[0].T  # orthonormal rows
    idx = torch.rand(N, n_feat, generator=g).argsort(1)[:, :k]
    f = torch.zeros(N, n_feat).scatter_(1, idx, (1 + 0.15 * torch.randn(N, k, generator=g)).clamp_min(0.1))
    return f @ D, D


def mixed(D, eps, seed=1):
    """A decoder whose rows mix in other true features, as an SAE trained at the wrong L0 learns them."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.rand(D.shape[0], D.shape[0], generator=g) * eps
    W = D + mix @ D
    return W / W.norm(dim=-1, keepdim=True)


def test_s_n_is_smallest_for_the_true_dictionary_and_the_sweep_picks_the_true_l0():
    from saesteer.eval.card import l0_sweep
    from saesteer.sae.module import SAE, SAEConfig

    k = 11
    x, D = _toy(k=k)
    n = 15  # past the true L0: the true dictionary projects exactly 0 there
    assert M.nth_decoder_projection(x, D, None, n) == pytest.approx(0.0, abs=1e-6)
    vals = [M.nth_decoder_projection(x, mixed(D, e), None, n) for e in (0.0, 0.01, 0.03, 0.1)]
    assert vals == sorted(vals) and vals[-1] > 0.1
    # SAEs "trained" at L0 = k +- delta: the further from the true L0, the more mixed their decoder
    saes = []
    for l0 in (5, 8, 11, 16, 24):
        s = SAE(SAEConfig(d_in=100, d_sae=50, architecture="topk", k=l0, apply_b_dec_to_input=False))
        W = mixed(D, 0.02 * abs(l0 - k) / k)
        with torch.no_grad():
            s.W_dec.copy_(W)
            s.W_enc.copy_(W.T)
            s.b_dec.zero_()
        saes.append((f"k={l0}", s))
    res = l0_sweep(saes, x, n)
    assert res["picked"] == "k=11" and res["picked_l0"] == pytest.approx(11.0)


def test_decoder_cos_coherence_and_uniqueness():
    s = 2 ** -0.5
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s]])
    assert M.decoder_pairwise_cos(W) == pytest.approx((0 + s + s) / 3)
    assert M.mutual_coherence(W) == pytest.approx(s)
    f = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 2]])
    frac, mu = M.uniqueness_fraction(f, W)  # bound (1 + sqrt 2) / 2 = 1.207: rows with L0 <= 1
    assert mu == pytest.approx(s) and frac == 0.75


def test_correlation_and_entropy():
    f = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    r = M.label_correlation(f, labels)
    assert r[0].tolist() == pytest.approx([1.0, -1.0]) and r[1].tolist() == [0.0, 0.0]
    assert M.max_abs_correlation(f, labels).tolist() == pytest.approx([1.0, 0.0])
    h = M.label_entropy(torch.cat([f, torch.zeros(4, 1)], 1), labels)
    assert h[0] == 0.0 and h[1] == pytest.approx(1.0) and math.isnan(h[2])


def test_fms_on_hand_cases():
    y = torch.tensor([0, 0, 1, 1])
    acc, thr = stump_accuracies(torch.tensor([[0.0, 1], [1, 0], [2, 1], [3, 0]]), y)
    assert acc.tolist() == [1.0, 0.5] and float(thr[0]) == 1.5
    one = fms(torch.tensor([[0.0, 1], [1, 0], [2, 1], [3, 0]]), y)
    assert (one.fms, one.a0, one.local, one.global_, one.feature) == (1.0, 1.0, 1.0, 1.0, 0)
    twin = fms(torch.tensor([[0.0, 0], [1, 1], [2, 2], [3, 3]]), y)  # two copies: removing one loses nothing
    assert (twin.a0, twin.local, twin.fms) == (1.0, 0.0, 0.5)
    xor = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]])
    yx = torch.tensor([0, 1, 1, 0])
    assert tree_accuracy(xor, yx, 1) == 0.5 and tree_accuracy(xor, yx, 2) == 1.0 or tree_accuracy(xor, yx, 2) == 0.5
    spread = fms(torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1], [1, 1], [0, 0]]), torch.tensor([0, 0, 0, 1, 1, 0]))
    # best stump 4/6 right... a depth-2 tree gets all: global = 1 - mean(A_i - A0) over depths 1..3
    assert spread.a0 == pytest.approx(5 / 6)
    assert spread.global_ == pytest.approx(1 - ((5 / 6 - 5 / 6) + 2 * (1 - 5 / 6)) / 3)


def test_cone_containment_and_nnls():
    W = torch.eye(2)
    assert M.cone_containment(W, torch.tensor([1.0, 1.0])) == pytest.approx(1.0, abs=1e-6)
    assert M.cone_containment(W, torch.tensor([-1.0, 0.0])) == pytest.approx(0.0, abs=1e-9)
    assert M.cone_containment(W, torch.tensor([1.0, -1.0])) == pytest.approx(1 - 2 ** -0.5, abs=1e-6)
    a = M.nnls(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([3.0, -4.0]))
    assert a.tolist() == pytest.approx([3.0, 0.0], abs=1e-6)


def test_probe_finds_the_separating_axis():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    labels = (x[:, 2] > 0).long()
    p = M.probe_directions(x, labels, 2)
    assert float(p[1, 2]) > 0.9 and float(p[0, 2]) < -0.9


def test_the_report_builds_on_a_tiny_model_in_seconds(tmp_path):
    import time

    from saesteer.eval.card import report_card
    from saesteer.eval.collect import Labelled, collect
    from saesteer.eval.html import render
    from tiny import CharTokenizer, random_sae, tiny_lm

    t0 = time.perf_counter()
    m = tiny_lm("llama")
    texts = ["the quick brown fox jumps"] * 4 + ["0123456789 0123456789"] * 4 + ["ZZZZ YYYY XXXX WWWW"] * 4
    data = Labelled(texts, ["words", "digits", "caps"], [0] * 4 + [1] * 4 + [2] * 4)
    acts = collect(m, CharTokenizer(), "blocks.1.hook_resid_post", data, progress=False)
    assert acts.x.shape[0] == sum(len(t) - 1 for t in texts) and acts.labels.unique().tolist() == [0, 1, 2]
    sae = random_sae(32, 64, "relu")
    card = report_card(sae, acts, reconstruction={"ce_loss_recovered": 0.5}, progress=False)
    page = render(card)
    assert time.perf_counter() - t0 < 30
    mono = card["monosemanticity"]
    assert set(mono) == {"sae", "neurons"} and mono["neurons"]["faithfulness_r2"] == pytest.approx(1.0)
    assert 0 <= mono["sae"]["fms"] <= 1 and set(mono["sae"]["per_label"]) == {"words", "digits", "caps"}
    assert "saesteer's reading" in page and page.count("<svg") >= 2
    for chunk in page.split("<svg")[1:]:
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")  # every chart is well-formed XML
    json.dumps(card)


def test_labelled_files_are_checked(tmp_path):
    from saesteer.errors import SaesteerError
    from saesteer.eval.collect import load_labelled

    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    d = load_labelled(p)
    assert d.names == ["x", "y"] and d.labels == [0, 1]
    p.write_text('{"text": "a", "label": "x"}\nnot json\n')
    with pytest.raises(SaesteerError, match=":2:"):
        load_labelled(p)
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", "token_labels": ["y"]}\n')
    with pytest.raises(SaesteerError, match="mixes"):
        load_labelled(p)


@pytest.mark.real
def test_saesteer_eval_writes_a_report_for_the_bundled_default(tmp_path):
    """The CLI on SmolLM2 + the bundled SAE, with a small labelled file (the corpus may not be built)."""
    from saesteer.cli import main

    data = tmp_path / "labelled.jsonl"
    rows = [{"text": f"Thou art my lord, and thy servant {i} doth bow.", "label": "verse"} for i in range(6)]
    rows += [{"text": f"def f{i}(x):\n    return x + {i}\n", "label": "code"} for i in range(6)]
    rows += [{"text": f"The kernel driver {i} registers the device at boot.", "label": "linux"} for i in range(6)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "report"
    assert main(["eval", "--data", str(data), "--max-rows", "600", "--ce-docs", "4", "--depth", "2", "--quiet",
                 "--out", str(out)]) == 0
    card = json.loads((out / "report.json").read_text())
    assert card["sae"]["hook"] == "blocks.15.hook_resid_post" and card["sparsity"]["l0_mean"] == pytest.approx(32)
    assert 0.5 < card["reconstruction"]["ce_loss_recovered"] < 1.5 and card["reconstruction"]["kl_spliced"] > 0
    assert set(card["monosemanticity"]["sae"]["per_label"]) == {"verse", "code", "linux"}
    assert "<svg" in (out / "report.html").read_text()


def test_saesteer_eval_vision_reads_an_image_folder_one_class_per_subfolder(tmp_path, capsys):
    """--vision --images DIR: the tiny LLaVA's vision SAE on the user's images, labelled by subfolder;
    a folder with one class is refused before any model loads."""
    import shutil

    from saesteer.cli import main
    from saesteer.embedded.vlm import tiny_llava_gallery

    gallery = tiny_llava_gallery()
    kinds = sorted({g["kind"] for g in gallery})[:2]
    for k in kinds:
        (tmp_path / "imgs" / k).mkdir(parents=True)
        for g in [g for g in gallery if g["kind"] == k][:2]:
            shutil.copy(g["path"], tmp_path / "imgs" / k / Path(g["path"]).name)
    (tmp_path / "imgs" / kinds[0] / "notes.txt").write_text("not an image")
    out = tmp_path / "report"
    assert main(["eval", "--vision", "--images", str(tmp_path / "imgs"), "--depth", "2", "--quiet",
                 "--out", str(out)]) == 0
    card = json.loads((out / "report.json").read_text())
    assert card["data"]["labels"] == kinds and card["data"]["documents"] == 4
    assert set(card["monosemanticity"]["sae"]["per_label"]) == set(kinds)
    shutil.rmtree(tmp_path / "imgs" / kinds[1])
    assert main(["eval", "--vision", "--images", str(tmp_path / "imgs"), "--quiet", "--out", str(out)]) == 2
    assert "at least 2 classes" in capsys.readouterr().err
