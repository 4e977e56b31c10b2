"""The Gated, p-annealing, Matryoshka BatchTopK and Ordered trainers and k-annealing: each loss on a
tiny case computed here independently (loops over tokens, latents and prefixes), the reference
schedules step by step, exact resume and loadable SAELens output per architecture, and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

import saesteer
from saesteer.train import CachedActivations, SAETrainer, TrainConfig, ops, train_sae, write_cache
from saesteer.train import losses

NEW = ["gated", "p_anneal", "matryoshka", "ordered"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(d=3, F=4, seed=0, gated=False):
    g = torch.Generator().manual_seed(seed)
    p = {"W_enc": torch.randn(d, F, generator=g), "W_dec": torch.randn(F, d, generator=g),
         "b_dec": torch.randn(d, generator=g) * 0.1}
    if gated:
        p.update(b_gate=torch.randn(F, generator=g) * 0.3, b_mag=torch.randn(F, generator=g) * 0.3,
                 r_mag=torch.randn(F, generator=g) * 0.2)
    else:
        p["b_enc"] = torch.randn(F, generator=g) * 0.3
    return {k: v.clone().requires_grad_() for k, v in p.items()}


# ------------------------------------------------------------------------------ gated
def test_gated_loss_by_hand():
    x = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]])
    p = _params(gated=True)
    lam = 0.7
    loss, f, parts = losses.gated_loss(p, x, lam)
    P = {k: v.detach().tolist() for k, v in p.items()}
    d, F = 3, 4
    want_recon = want_l1 = want_aux = 0.0
    for n in range(2):
        xc = [x[n, j].item() - P["b_dec"][j] for j in range(d)]
        enc = [sum(xc[j] * P["W_enc"][j][i] for j in range(d)) for i in range(F)]
        gate = [enc[i] + P["b_gate"][i] for i in range(F)]
        mag = [math.exp(P["r_mag"][i]) * enc[i] + P["b_mag"][i] for i in range(F)]
        fi = [(1.0 if gate[i] > 0 else 0.0) * max(mag[i], 0.0) for i in range(F)]
        rg = [max(g, 0.0) for g in gate]
        assert f[n].tolist() == pytest.approx(fi, abs=1e-6)
        xh = [sum(fi[i] * P["W_dec"][i][j] for i in range(F)) + P["b_dec"][j] for j in range(d)]
        xg = [sum(rg[i] * P["W_dec"][i][j] for i in range(F)) + P["b_dec"][j] for j in range(d)]
        want_recon += sum((x[n, j].item() - xh[j]) ** 2 for j in range(d)) / 2
        want_aux += sum((x[n, j].item() - xg[j]) ** 2 for j in range(d)) / 2
        want_l1 += sum(rg) / 2
    assert parts["recon"].item() == pytest.approx(want_recon, rel=1e-5)
    assert parts["sparsity"].item() == pytest.approx(want_l1, rel=1e-5)
    assert parts["aux"].item() == pytest.approx(want_aux, rel=1e-5)
    assert loss.item() == pytest.approx(want_recon + lam * want_l1 + want_aux, rel=1e-5)
    assert f.shape == (2, 4) and (f > 0).any()


def test_gated_gradients_frozen_decoder_and_tying():
    """The auxiliary term reaches the gate only (the decoder copy is frozen); the gate has no
    straight-through estimator, so W_gate learns through the tied magnitude path as well."""
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    p = _params(gated=True, seed=2)
    loss, _, parts = losses.gated_loss(p, x, 0.5)
    loss.backward()
    q = {k: v.detach().clone().requires_grad_() for k, v in p.items()}
    _, _, parts_q = losses.gated_loss(q, x, 0.5)
    parts_q["recon"].backward()  # only the reconstruction reaches the decoder
    torch.testing.assert_close(p["W_dec"].grad, q["W_dec"].grad)
    assert p["r_mag"].grad.abs().sum() > 0 and p["b_gate"].grad.abs().sum() > 0
    # d recon / d b_gate is zero (Heaviside, no estimator): b_gate's gradient is the L1 and aux terms'
    assert q["b_gate"].grad is None


# ------------------------------------------------------------------------------ p-annealing
def test_lp_penalties_by_hand():
    f = torch.tensor([[0.0, 4.0, 1.0], [9.0, 0.0, 0.0]])
    assert losses.lp_penalty(f, 0.5, "Lp^p").item() == pytest.approx(((2 + 1) + 3) / 2)
    assert losses.lp_penalty(f, 0.5, "Lp").item() == pytest.approx((3 ** 2 + 3 ** 2) / 2)
    assert losses.lp_penalty(f, 1.0, "Lp^p").item() == pytest.approx(7.0)


def test_p_anneal_schedule_is_the_reference():
    cfg = TrainConfig(architecture="p_anneal", batch_tokens=1, total_tokens=20, anneal_start=3,
                      n_sparsity_updates=4, p_start=1.0, p_end=0.4, sparsity_coefficient=0.5,
                      sparsity_queue_length=3, sparsity_function="Lp^p")
    sch = losses.PAnneal(cfg)
    assert sch.update_steps == [3, 8, 14, 20]  # linspace(3, 20, 4) truncated
    fs = [torch.full((2, 3), 1.0 + 0.5 * t) for t in range(20)]
    seen, queue, alpha, p, nxt = [], [], 0.5, 1.0, None
    for t, f in enumerate(fs):
        lp, a, pu = sch.penalty(f, t)
        seen.append((pu, a))
        # the expected reference bookkeeping, by hand
        assert (pu, a) == (p, pytest.approx(alpha))
        assert lp.item() == pytest.approx(3 * (1.0 + 0.5 * t) ** p, rel=1e-6)
        if nxt is not None:
            queue = (queue + [(3 * (1.0 + 0.5 * t) ** p, 3 * (1.0 + 0.5 * t) ** nxt)])[-3:]
        if t in (3, 8, 14):
            if nxt is not None:
                alpha *= (sum(q[0] for q in queue) / len(queue)) / (sum(q[1] for q in queue) / len(queue))
            i = (3, 8, 14).index(t)
            p, nxt = [1.0, 0.8, 0.6, 0.4][i], [0.8, 0.6, 0.4, 0.4][i]
            p, nxt = float(torch.tensor(p)), float(torch.tensor(nxt))  # float32 values
    assert [s[0] for s in seen][:4] == [1.0] * 4 and seen[9][0] == pytest.approx(0.8)
    assert sch.p == pytest.approx(0.6)  # the last switch (step 20) never runs
    assert sch.coefficient == pytest.approx(alpha, rel=1e-6) and sch.coefficient != pytest.approx(0.5)
    state = json.loads(json.dumps(sch.state()))
    again = losses.PAnneal(cfg)
    again.load(state)
    assert again.state() == sch.state()


# ------------------------------------------------------------------------------ matryoshka / ordered
def _topk_selection(x, p, k, batch=False):
    with torch.no_grad():
        x_c = x - p["b_dec"]
        pre = x_c @ p["W_enc"] + p["b_enc"]
    sel = ops.batch_topk_select(pre, k) if batch else ops.topk_select(pre, k)
    return sel, ops.selected_values(sel, x_c, p["W_enc"], p["b_enc"], p["b_dec"]), pre


def test_matryoshka_prefix_losses_by_hand():
    x = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]])
    p = _params(F=5, seed=3)
    sel, vals, pre = _topk_selection(x, p, 2, batch=True)
    group_of = torch.tensor([0, 0, 1, 2, 2])
    weights = [0.2, 0.3, 0.5]
    loss, x_hat = losses.matryoshka_recon(sel, vals, x, p["W_dec"], p["b_dec"], group_of, weights)
    f = torch.zeros(2, 5)
    f[sel.rows, sel.cols] = vals.detach()
    assert int((f > 0).sum()) <= 4
    Wd, bd = p["W_dec"].detach(), p["b_dec"].detach()
    terms = []
    for m, upto in enumerate((2, 3, 5)):  # the prefixes end after groups 0, 1, 2
        xh = f[:, :upto] @ Wd[:upto] + bd
        terms.append(weights[m] * ((x - xh) ** 2).sum(-1).mean())
    assert loss.item() == pytest.approx(float(sum(terms) / 3), rel=1e-5)
    torch.testing.assert_close(x_hat.detach(), f @ Wd + bd)


def _ordered_brute(x, W_enc, b_enc, b_dec, W_dec, k):
    """Every prefix l = 1..F decoded on its own, uniform weights 1/F (saesteer's reading)."""
    pre = torch.relu((x - b_dec) @ W_enc + b_enc)
    keep = torch.zeros_like(pre, dtype=torch.bool).scatter(1, pre.topk(k).indices, True)
    f = pre * keep
    F = W_enc.shape[1]
    return sum(((x - (f[:, :l] @ W_dec[:l] + b_dec)) ** 2).sum() for l in range(1, F + 1)) / F


def test_ordered_closed_form_equals_every_prefix():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, generator=g)
    p = _params(F=7, seed=5)
    sel, vals, _ = _topk_selection(x, p, 3)
    loss, x_hat = losses.ordered_recon(sel, vals, x, p["W_dec"], p["b_dec"], 3)
    loss.backward()
    q = {k: v.detach().clone().requires_grad_() for k, v in p.items()}
    want = _ordered_brute(x, q["W_enc"], q["b_enc"], q["b_dec"], q["W_dec"], 3)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(p[name].grad, q[name].grad, rtol=1e-4, atol=1e-5, msg=name)
    # a 2x3 case by hand: d_sae 3, k 1, W_dec = I, b = 0: prefix l decodes latent 0 only if l >= 1 ...
    x2 = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    eye = {"W_enc": torch.eye(3), "b_enc": torch.zeros(3), "b_dec": torch.zeros(3), "W_dec": torch.eye(3)}
    s2, v2, _ = _topk_selection(x2, eye, 1)
    l2, _ = losses.ordered_recon(s2, v2, x2, eye["W_dec"], eye["b_dec"], 1)
    # row 0 (latent 1 = 2): prefixes 1 miss it (4), 2 and 3 have it (0); row 1 (latent 0 = 3): all have it
    assert l2.item() == pytest.approx((4.0 + 0 + 0) / 3 + 0.0)


def test_k_annealing_schedule():
    cfg = TrainConfig(architecture="topk", k=4, batch_tokens=1, total_tokens=100, k_anneal_steps=10, k_start=24)
    assert [cfg.k_at(t, 16) for t in (0, 1, 5, 9, 10, 50)] == [24, 22, 14, 6, 4, 4]
    assert TrainConfig(k=4, batch_tokens=1, total_tokens=100, k_anneal_steps=10).k_at(0, 16) == 16  # d_in
    assert TrainConfig(k=4, batch_tokens=1, total_tokens=100).k_at(0, 16) == 4
    tr = SAETrainer(TrainConfig(architecture="batchtopk", d_sae=32, k=2, k_anneal_steps=4, k_start=10,
                                batch_tokens=64, total_tokens=64 * 6, lr=1e-3), 8)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    ls = [tr.step(x)["l0"] for _ in range(6)]
    assert ls[0] == pytest.approx(10.0) and ls[-1] == pytest.approx(2.0)


def test_matryoshka_group_sizes():
    cfg = TrainConfig(architecture="matryoshka", group_fractions=(0.25, 0.25, 0.5))
    assert cfg.group_sizes(10) == [2, 2, 6]
    assert TrainConfig(architecture="matryoshka").group_sizes(64) == [4, 4, 8, 16, 32]
    with pytest.raises(ValueError):
        TrainConfig(group_fractions=(0.5, 0.4))


# ------------------------------------------------------------------------------ loop, resume, output
def _state(folder):
    from safetensors.torch import load_file

    t = load_file(str(folder / "checkpoint" / "state.safetensors"))
    t.pop("rng.torch")
    return t


@pytest.fixture(scope="module")
def toy_acts():
    from saesteer.toy import toy_activations

    return toy_activations(1200, d_model=16, n_features=12)[0]


@pytest.mark.parametrize("arch", NEW + ["topk_anneal", "topk_reweighted"])
def test_resume_is_exact_and_output_loads(tmp_path, toy_acts, arch):
    write_cache(list(toy_acts.split(300)), tmp_path / "cache", shard_tokens=400)
    src = CachedActivations(tmp_path / "cache", buffer_tokens=500, seed=1)
    steps = 2 * (toy_acts.shape[0] // 128) + 3  # crosses an epoch boundary
    kw = {"topk_anneal": dict(k_anneal_steps=8, k_start=12), "topk_reweighted": dict(recon_weighting="inverse_variance")
          }.get(arch, {})
    cfg = TrainConfig(architecture="topk" if arch.startswith("topk") else arch, d_sae=24, k=3, lr=3e-3,
                      batch_tokens=128, total_tokens=128 * steps, checkpoint_every=5, dead_tokens=256,
                      threshold_start_step=2, anneal_start=4, n_sparsity_updates=4, sparsity_coefficient=0.05,
                      sparsity_warmup_steps=3, group_fractions=(0.25, 0.25, 0.5), **kw)
    straight = train_sae(src, cfg, tmp_path / "a", progress=False)
    train_sae(src, cfg, tmp_path / "b", progress=False, max_steps=steps // 2 + 1)
    resumed = train_sae(src, cfg, tmp_path / "b", progress=False)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    sb = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert sa["extra_state"] == sb["extra_state"] and sa["batch_threshold"] == sb["batch_threshold"]
    if arch == "p_anneal":
        assert sa["extra_state"]["p_anneal"]["count"] >= 2
    loaded = saesteer.load_sae(tmp_path / "a")
    want = {"gated": "gated", "p_anneal": "relu", "matryoshka": "jumprelu", "ordered": "topk",
            "topk_anneal": "topk", "topk_reweighted": "topk"}[arch]
    if arch == "topk_reweighted":
        assert "recon_weights" in a
    assert loaded.cfg.architecture == want
    x = toy_acts[:200]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), straight(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(resumed.encode(x), straight.encode(x), atol=0, rtol=0)
        fvu = float(((x - loaded(x)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert fvu < 0.9
    card = json.loads((tmp_path / "a" / "training_card.json").read_text())
    assert card["architecture"] == cfg.architecture and card["saved_architecture"] == want


def test_gated_export_reads_raw_units(toy_acts):
    """The normalisation scale is folded out of the gated biases: sae(x) == training reconstruction / s."""
    cfg = TrainConfig(architecture="gated", d_sae=24, batch_tokens=128, total_tokens=128 * 3, lr=1e-2)
    tr = SAETrainer(cfg, 16)
    for xb in toy_acts[:384].split(128):
        tr.step(xb)
    s = tr.scale
    assert s is not None and s != pytest.approx(1.0)
    with torch.no_grad():
        _, _, xh = losses.gated_forward(tr.params, toy_acts[:50] * s)
        torch.testing.assert_close(tr.to_sae()(toy_acts[:50]), xh / s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,extra,saved", [
    ("ordered", ["--k-anneal-steps", "2", "--k-start", "8"], "topk"),
    ("gated", ["--sparsity-coefficient", "0.3"], "gated"),
    ("p_anneal", ["--n-sparsity-updates", "3"], "relu"),
    ("matryoshka", ["--group-fractions", "0.25", "0.75"], "jumprelu"),
    ("batchtopk", ["--recon-weighting", "inverse_variance"], "jumprelu"),
])
def test_cli_trains_each_new_architecture(tmp_path, arch, extra, saved):
    from saesteer.train.cli import train_main
    from tiny import save_word_level_model, tiny_lm

    words = save_word_level_model(tmp_path / "model", tiny_lm("llama"))
    g = torch.Generator().manual_seed(0)
    (tmp_path / "text").mkdir()
    paras = [" ".join(words[i] for i in torch.randint(0, len(words), (60,), generator=g).tolist()) for _ in range(16)]
    (tmp_path / "text" / "doc.txt").write_text("\n\n".join(paras))
    out = tmp_path / "run"
    argv = ["--model", str(tmp_path / "model"), "--hook", "blocks.1.hook_resid_post", "--text", str(tmp_path / "text"),
            "--out", str(out), "--architecture", arch, "--k", "4", "--d-sae", "64", "--batch-tokens", "128",
            "--total-tokens", "512", "--context-length", "32", "--eval-seqs", "2", "--lr", "3e-3", "--no-progress",
            *extra]
    assert train_main(argv) == 0
    card = json.loads((out / "training_card.json").read_text())
    assert card["architecture"] == arch and card["tokens_seen"] == 512
    sae = saesteer.load_sae(out)
    assert sae.cfg.architecture == saved
    if arch == "ordered":
        assert sae.cfg.k == 4
    if "--recon-weighting" in extra:  # the flag reached the trainer: the weights are in the checkpoint
        from safetensors.torch import load_file

        ck = {k: v for f in (out / "checkpoint").glob("*.safetensors") for k, v in load_file(f).items()}
        assert ck["recon_weights"].shape == (sae.d_in,) and not torch.allclose(ck["recon_weights"], torch.ones(sae.d_in))


# ------------------------------------------------------------------------------ G-SAE (saesteer's reading)
def test_concept_loss_and_steering_by_hand():
    from saesteer.sae.module import SAE, SAEConfig
    from saesteer.train import guided

    z = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = -(math.log(sig(0.0)) + math.log(1 - sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(sig(0.5))) / 4
    assert guided.concept_loss(z, y).item() == pytest.approx(want, rel=1e-6)
    sae = SAE(SAEConfig(d_in=3, d_sae=2, architecture="relu"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]))
    x = torch.tensor([[0.5, 2.0, 1.0]])
    # f_1(x) = 2.0; x' = x + 0.5 (5 - 2) d_1
    torch.testing.assert_close(guided.guided_steer(sae, x, 1, 5.0, alpha=0.5),
                               torch.tensor([[0.5, 2.0 + 1.5 * 0.6, 1.0 + 1.5 * 0.8]]))
    zc = guided.concept_pre_activations(x, sae.W_enc, sae.b_enc, sae.b_dec, 1)
    assert zc.tolist() == [[0.5]]


def test_guided_latent_learns_its_concept(tmp_path):
    from saesteer.toy import toy_features
    from saesteer.train.guided import with_labels

    f, D = toy_features(256 * 120)
    rows = with_labels(f @ D, (f[:, 10] > 0).float())
    cfg = TrainConfig(architecture="topk", d_sae=64, k=11, lr=3e-3, batch_tokens=256, total_tokens=256 * 120,
                      n_concepts=1, normalize_activations=False, checkpoint_every=0)
    tr = SAETrainer(cfg, 100)
    stats = [tr.step(b) for b in rows.split(256)]
    assert stats[-1]["concept_bce"] < 0.5 * stats[0]["concept_bce"]
    dec = torch.nn.functional.normalize(tr.params["W_dec"].detach()[0], dim=0)
    assert float(dec @ D[10]) > 0.5  # the reserved latent's decoder row points at its concept's direction
    with pytest.raises(ValueError, match="concept labels"):
        tr.step(rows[:256, :100])
    # labels travel with the rows through train_sae: exact resume as any other run
    small = rows[:1280]
    write_cache(list(small.split(300)), tmp_path / "cache", shard_tokens=400)
    src = CachedActivations(tmp_path / "cache", buffer_tokens=500, seed=1)
    cfg = TrainConfig(architecture="batchtopk", d_sae=32, k=5, lr=3e-3, batch_tokens=128, total_tokens=128 * 13,
                      n_concepts=1, checkpoint_every=4, threshold_start_step=2)
    train_sae(src, cfg, tmp_path / "a", progress=False)
    train_sae(src, cfg, tmp_path / "b", progress=False, max_steps=6)
    train_sae(src, cfg, tmp_path / "b", progress=False)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded = saesteer.load_sae(tmp_path / "a")
    assert loaded.d_in == 100 and loaded.cfg.metadata["guided_concepts"]["latents"] == [0]


# ------------------------------------------------------------------------------ identifiable reweighting
def test_reweighted_reconstruction_by_hand():
    x = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]])
    cfg = TrainConfig(architecture="topk", d_sae=4, k=1, lr=1e-3, batch_tokens=2, total_tokens=20,
                      recon_weighting="inverse_variance", normalize_activations=False, b_dec_init="zeros")
    tr = SAETrainer(cfg, 3)
    tr.initialize(x)
    var = [((x[0, j] - x[1, j]) ** 2 / 2).item() for j in range(3)]  # unbiased variance of 2 rows
    inv = [1 / v for v in var]
    w = [v / (sum(inv) / 3) for v in inv]
    assert tr.recon_weights.tolist() == pytest.approx(w, rel=1e-5)
    P = {k: v.detach().clone() for k, v in tr.params.items()}
    stats = tr.step(x)
    num = den = 0.0
    for n in range(2):
        pre = [sum(x[n, j].item() * P["W_enc"][j, i].item() for j in range(3)) for i in range(4)]
        i = max(range(4), key=lambda c: pre[c])
        for j in range(3):
            xh = max(pre[i], 0.0) * P["W_dec"][i, j].item()
            num += w[j] * (x[n, j].item() - xh) ** 2
            den += w[j] * (x[n, j].item() - x[:, j].mean().item()) ** 2
    assert stats["loss"] == pytest.approx(num / den, rel=1e-5)


def test_diverged_training_stops_loudly_and_saves_nothing(tmp_path):
    """A loss that is not finite (here: a NaN row in the activations) stops the run with an error that
    says so; no SAE folder is written from the broken state."""
    x = torch.randn(256, 8)
    bad = x.clone()
    bad[100, 3] = float("nan")  # in the second batch: step 1 is checkpointed first
    cfg = TrainConfig(architecture="topk", d_sae=16, k=2, batch_tokens=64, total_tokens=256, b_dec_init="zeros",
                      checkpoint_every=1, normalize_activations=False)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 2 .*checkpoint .* is intact"):
        train_sae([bad], cfg, tmp_path / "run", resume=False, progress=False)
    assert not (tmp_path / "run" / "sae_weights.safetensors").exists()
    sae = train_sae([x], cfg, tmp_path / "ok", resume=False, progress=False)  # the same config trains on clean rows
    assert torch.isfinite(sae.W_dec).all()
