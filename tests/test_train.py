"""saesteer.train: activation capture (stopped at the hook), packing, shuffle and disk buffers, the
TopK / BatchTopK / JumpReLU trainers (loss falls, unit-norm decoder, AuxK, sparse gradients equal
dense ones), exact checkpoint resume, the SAELens output and card, metrics, and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

import saesteer
from saesteer.sae.module import SAE, SAEConfig
from saesteer.train import (
    ActivationSource,
    CachedActivations,
    SAETrainer,
    TrainConfig,
    activation_metrics,
    capture_activations,
    evaluate_sae,
    fvu,
    l0,
    ops,
    pack_tokens,
    rebatch,
    shuffle_blocks,
    train_sae,
    write_cache,
)
from saesteer.train.metrics import ActivationStats
from tiny import D, VOCAB, tiny_lm

HOOK = "blocks.1.hook_resid_post"


def _docs(n: int = 40, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (int(torch.randint(10, 120, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation (on a busy 2-core machine a
    32-wide linear takes 16 ms with two threads, 10 us with one)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def acts(lm):
    """About 2.5k activation rows of the tiny model at HOOK, unshuffled, as one tensor."""
    src = ActivationSource(lm, HOOK, _docs(), context_length=32, model_batch=16, buffer_tokens=0)
    return torch.cat(list(src.raw_blocks()))


# ------------------------------------------------------------------------------ activations
@pytest.mark.parametrize("hook,same_as", [
    ("blocks.1.hook_resid_post", None), ("blocks.1.hook_mlp_out", None),
    ("blocks.2.hook_resid_pre", "blocks.1.hook_resid_post"),
])
def test_early_stop_capture_equals_full_forward(lm, hook, same_as):
    ids = torch.randint(3, VOCAB, (3, 11), generator=torch.Generator().manual_seed(1))
    calls = []
    h = lm.model.layers[-1].register_forward_hook(lambda *a: calls.append(1))
    try:
        early = capture_activations(lm, hook, ids)
    finally:
        h.remove()
    assert calls == []  # the last layer never ran
    full = capture_activations(lm, same_as or hook, ids, stop_early=False)
    assert early.shape == (3, 11, D)
    assert torch.equal(early, full)
    assert not lm._forward_hooks and not lm.model.layers[1]._forward_hooks  # hooks are gone


def test_pack_tokens_joins_docs_and_adds_bos():
    chunks = list(pack_tokens([[5, 6, 7], [8, 9], [10, 11, 12, 13]], 4, bos_token_id=1, eos_token_id=2))
    assert [c.tolist() for c in chunks] == [[1, 5, 6, 7], [1, 2, 8, 9], [1, 2, 10, 11], [1, 12, 13, 2]]


def test_source_drops_first_position_and_skips_chunks(lm):
    docs = _docs(10)
    src = ActivationSource(lm, HOOK, docs, context_length=16, model_batch=4, buffer_tokens=0, skip_chunks=2)
    chunks = list(src.chunks())
    x = next(src.raw_blocks())
    ids = torch.stack(chunks[2:6])
    want = capture_activations(lm, HOOK, ids)[:, 1:].reshape(-1, D)
    assert torch.equal(x, want)


def test_shuffle_buffer_is_a_bounded_permutation():
    blocks = [torch.arange(i * 10, i * 10 + 10, dtype=torch.float32)[:, None] for i in range(10)]
    out = list(shuffle_blocks(blocks, 30, torch.Generator().manual_seed(0)))
    rows = torch.cat(out).squeeze(1)
    assert sorted(rows.tolist()) == list(range(100))
    assert not torch.equal(rows, torch.arange(100.0))
    assert max(o.shape[0] for o in out) <= 40  # the buffer plus one block
    again = torch.cat(list(shuffle_blocks(blocks, 30, torch.Generator().manual_seed(0)))).squeeze(1)
    assert torch.equal(rows, again)


def test_disk_buffer_round_trips(tmp_path, acts):
    blocks = list(acts.split(300))
    write_cache(blocks, tmp_path / "c", shard_tokens=512, meta={"hook_name": HOOK})
    plain = CachedActivations(tmp_path / "c", shuffle=False)
    assert plain.n_tokens == acts.shape[0] and plain.d_in == D and plain.hook == HOOK
    assert torch.equal(torch.cat(list(plain)), acts)
    shuffled = torch.cat(list(CachedActivations(tmp_path / "c", buffer_tokens=700, seed=3).iter_epoch(1)))
    assert shuffled.shape == acts.shape and not torch.equal(shuffled, acts)
    assert torch.equal(shuffled[shuffled[:, 0].argsort()], acts[acts[:, 0].argsort()])
    batches = list(CachedActivations(tmp_path / "c", batch_tokens=256, seed=3).iter_epoch(1))
    assert {b.shape for b in batches} == {(256, D)} and len(batches) == acts.shape[0] // 256
    write_cache(blocks, tmp_path / "h", shard_tokens=512, dtype=torch.bfloat16)
    half = torch.cat(list(CachedActivations(tmp_path / "h", shuffle=False)))
    assert half.dtype == torch.float32 and torch.equal(half, acts.bfloat16().float())


def test_source_cache_equals_raw_blocks(tmp_path, lm):
    src = ActivationSource(lm, HOOK, _docs(12), context_length=16, model_batch=4, buffer_tokens=0)
    cached = src.cache(tmp_path / "c", shard_tokens=100)
    assert torch.equal(torch.cat(list(CachedActivations(tmp_path / "c", shuffle=False))),
                       torch.cat(list(src.raw_blocks())))
    assert cached.hook == HOOK


# ------------------------------------------------------------------------------ training math
def _dense_reference_loss(x, W_enc, b_enc, b_dec, W_dec, k, batch, dead):
    pre = torch.relu((x - b_dec) @ W_enc + b_enc)
    if batch:
        keep = pre >= pre.flatten().topk(k * x.shape[0]).values.min()
    else:
        keep = torch.zeros_like(pre, dtype=torch.bool).scatter(1, pre.topk(k).indices, True)
    e = x - ((pre * keep) @ W_dec + b_dec)
    masked = torch.where(dead, pre, torch.full_like(pre, -1e9))
    aux = torch.zeros_like(pre, dtype=torch.bool).scatter(1, masked.topk(5).indices, True)
    return e.pow(2).sum() + ((pre * aux) @ W_dec - e.detach()).pow(2).sum()


@pytest.mark.parametrize("batch", [False, True])
def test_sparse_gradients_equal_dense_autograd(batch):
    torch.manual_seed(0)
    N, d, F, k = 64, 16, 48, 4
    x = torch.randn(N, d)
    params = [torch.randn(d, F) / 4, torch.randn(F) * 0.1, torch.randn(d) * 0.1, torch.randn(F, d) / 4]
    dead = torch.arange(F) % 3 == 0

    def sparse(W_enc, b_enc, b_dec, W_dec):
        with torch.no_grad():
            x_c = x - b_dec
            pre = x_c @ W_enc + b_enc
        sel = ops.batch_topk_select(pre, k) if batch else ops.topk_select(pre, k)
        xh = ops.sparse_decode(sel, ops.selected_values(sel, x_c, W_enc, b_enc, b_dec), W_dec) + b_dec
        aux = ops.sub_select(pre, dead.nonzero().squeeze(1), 5)
        eh = ops.sparse_decode(aux, ops.selected_values(aux, x_c, W_enc, b_enc, b_dec), W_dec)
        return (x - xh).pow(2).sum() + (eh - (x - xh).detach()).pow(2).sum()

    grads = []
    for fn in (sparse, lambda *p: _dense_reference_loss(x, *p, k, batch, dead)):
        ps = [p.clone().requires_grad_() for p in params]
        loss = fn(*ps)
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in ps]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-4)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_batch_topk_candidates_equal_full_topk():
    pre = torch.randn(50, 40)
    pre[3] += 5.0  # one row holds far more than its share: forces the exact fallback
    for p in (torch.randn(50, 40), pre):
        sel = ops.batch_topk_select(p, 3, candidates=2)
        dense = torch.zeros_like(p, dtype=torch.bool)
        dense.view(-1)[p.reshape(-1).topk(150).indices] = True
        got = torch.zeros_like(dense)
        got[sel.rows, sel.cols] = True
        assert torch.equal(got, dense)
        assert torch.equal(sel.values, p[sel.rows, sel.cols].clamp_min(0))


def test_jumprelu_straight_through_gradients():
    z = torch.tensor([[0.10, 0.52, -1.0], [0.49, 0.90, 0.31]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.3], requires_grad=True)
    eps = 0.1
    f, l0_ = ops.JumpReLUL0.apply(z, theta, eps)
    assert torch.equal(f.detach(), torch.tensor([[0.0, 0.52, 0.0], [0.0, 0.90, 0.31]]))
    assert l0_.item() == pytest.approx(1.5)
    gf = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (f * gf).sum().add(l0_ * 7.0).backward()
    assert torch.equal(z.grad, torch.tensor([[0.0, 2.0, 0.0], [0.0, 5.0, 6.0]]))
    K = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])  # |z - theta| < eps / 2
    want = -(theta.detach() / eps) * (K * gf).sum(0) - 7.0 / (eps * 2) * K.sum(0)
    torch.testing.assert_close(theta.grad, want)


def _train(acts, arch, steps=60, **kw):
    cfg = TrainConfig(architecture=arch, d_sae=128, k=6, lr=kw.pop("lr", 4e-3), batch_tokens=256,
                      total_tokens=256 * steps, checkpoint_every=0, **kw)
    tr = SAETrainer(cfg, D)
    stats = []
    while tr.step_count < cfg.steps:
        for x in rebatch([acts[torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(tr.step_count))]],
                         256):
            stats.append(tr.step(x))
            if tr.step_count >= cfg.steps:
                break
    return tr, stats


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu"])
def test_loss_falls_and_decoder_stays_unit_norm(acts, arch):
    tr, stats = _train(acts, arch, l0_coefficient=5e-3)
    first = sum(s["loss"] for s in stats[:5]) / 5
    last = sum(s["loss"] for s in stats[-5:]) / 5
    assert last < 0.6 * first
    assert all(math.isfinite(s["loss"]) for s in stats)
    norms = tr.params["W_dec"].detach().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
    sae = tr.to_sae()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones_like(norms), atol=1e-5, rtol=0)
    m = activation_metrics(sae, [acts])
    assert m["fvu"] < 0.5
    if arch == "topk":
        assert m["l0"] == pytest.approx(6.0)
    if arch == "batchtopk":  # saved as jumprelu with the estimated threshold: L0 near k at inference
        assert sae.cfg.architecture == "jumprelu" and 3.0 < m["l0"] < 12.0
    if arch == "jumprelu":
        assert stats[-1]["l0"] < stats[0]["l0"]


def test_saved_sae_reads_raw_units(acts):
    """The input scale is folded out: sae(x) equals the training-space reconstruction / scale."""
    tr, _ = _train(acts, "topk", steps=10)
    p, s = tr.params, tr.scale
    assert s is not None and s != pytest.approx(1.0)
    x = acts[:100]
    with torch.no_grad():
        xs = x * s
        pre = torch.relu((xs - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
        vals, idx = pre.topk(6, dim=-1)
        want = (torch.zeros_like(pre).scatter(1, idx, vals) @ p["W_dec"] + p["b_dec"]) / s
        torch.testing.assert_close(tr.to_sae()(x), want, rtol=1e-5, atol=1e-5)


def test_auxk_trains_dead_latents(acts):
    x = acts[:256]
    for alpha in (0.0, 1 / 32):
        cfg = TrainConfig(d_sae=128, k=6, lr=1e-3, batch_tokens=256, total_tokens=256 * 10, auxk_alpha=alpha,
                          dead_tokens=1000, checkpoint_every=0)
        tr = SAETrainer(cfg, D)
        tr.initialize(x)
        dead = torch.arange(128) < 64
        with torch.no_grad():
            tr.params["b_enc"][~dead] = 100.0  # the live half always wins the top-k
        tr.tokens_since_fired[dead] = 10_000
        before = tr.params["W_enc"].detach().clone()
        stats = tr.step(x)
        moved = (tr.params["W_enc"].detach() - before)[:, dead].abs().sum()
        if alpha == 0:
            assert stats["auxk"] == 0.0 and moved == 0
        else:
            assert math.isfinite(stats["auxk"]) and stats["auxk"] > 0 and moved > 0
        assert stats["dead"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------ loop, resume, output
def _state(folder):
    from safetensors.torch import load_file

    t = load_file(str(folder / "checkpoint" / "state.safetensors"))
    t.pop("rng.torch")
    return t


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_resume_continues_exactly(tmp_path, acts, arch):
    write_cache(list(acts.split(400)), tmp_path / "cache", shard_tokens=600)
    src = CachedActivations(tmp_path / "cache", buffer_tokens=800, seed=1)
    steps = 2 * (acts.shape[0] // 256) + 4  # crosses two epoch boundaries
    cfg = TrainConfig(architecture=arch, d_sae=96, k=5, lr=3e-3, batch_tokens=256, total_tokens=256 * steps,
                      checkpoint_every=7, dead_tokens=512, threshold_start_step=3)
    straight = train_sae(src, cfg, tmp_path / "a", progress=False)
    half = steps // 2 + 1
    train_sae(src, cfg, tmp_path / "b", progress=False, max_steps=half)
    card = json.loads((tmp_path / "b" / "training_card.json").read_text())
    assert card["steps"] == half and not card["finished"]
    resumed = train_sae(src, cfg, tmp_path / "b", progress=False)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    sa = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    sb = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert (sa["step"], sa["epoch"], sa["batch_in_epoch"]) == (sb["step"], sb["epoch"], sb["batch_in_epoch"])
    assert sa["batch_threshold"] == pytest.approx(sb["batch_threshold"], abs=1e-6)
    torch.testing.assert_close(straight.W_enc, resumed.W_enc, atol=1e-6, rtol=0)


def test_output_loads_with_load_sae_and_has_a_card(tmp_path, lm):
    src = ActivationSource(lm, HOOK, _docs(30), context_length=32, model_batch=8, buffer_tokens=1024, skip_chunks=4)
    held_out = torch.stack(list(src.chunks(stop=4)))
    cfg = TrainConfig(architecture="batchtopk", d_sae=64, k=4, lr=3e-3, batch_tokens=256, total_tokens=256 * 8,
                      checkpoint_every=0)
    sae = train_sae(src, cfg, tmp_path / "out", progress=False, command="pytest",
                    evaluate=lambda s: evaluate_sae(s, lm, HOOK, held_out))
    loaded = saesteer.load_sae(tmp_path / "out")
    assert loaded.cfg.architecture == "jumprelu" and loaded.cfg.hook_name == HOOK
    x = capture_activations(lm, HOOK, held_out).reshape(-1, D)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    card = json.loads((tmp_path / "out" / "training_card.json").read_text())
    for key in ("hook_name", "model_name", "tokens_seen", "architecture", "k", "d_sae", "l0", "fvu",
                "dead_fraction", "ce_loss_recovered", "ce_clean", "ce_spliced", "ce_zero_ablated",
                "wall_time_s", "tokens_per_s", "config", "command"):
        assert key in card and card[key] is not None, key
    assert card["tokens_seen"] == 256 * 8 and card["hook_name"] == HOOK
    readme = (tmp_path / "out" / "README.md").read_text()
    assert readme.startswith("# SAE for")
    # the held-out dead fraction says over how many tokens it was counted, and what that resolves
    assert card["dead_fraction_resolution"] == pytest.approx(1 / card["eval_tokens"])
    assert f"fired on none of {card['eval_tokens']:,} tokens" in readme


def test_progress_says_the_shuffle_buffer_fills_before_the_first_step(tmp_path, lm, capsys):
    """`saesteer train` showed 0.00/999k for minutes while the shuffle buffer filled."""
    src = ActivationSource(lm, HOOK, _docs(30), context_length=32, model_batch=8, buffer_tokens=1024)
    cfg = TrainConfig(architecture="topk", d_sae=64, k=4, batch_tokens=256, total_tokens=256 * 2, checkpoint_every=0)
    train_sae(src, cfg, tmp_path / "out", progress=True)
    err = capsys.readouterr().err
    assert "reading activations into the 1,024-token shuffle buffer before the first step" in err


# ------------------------------------------------------------------------------ metrics
def _identity_sae(d: int) -> SAE:
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="relu"))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    return sae.eval()


def test_metrics_by_hand():
    x = torch.randn(50, 8)
    assert fvu(x, x) == 0.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    assert l0(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])) == 1.5
    sae = _identity_sae(8)
    m = activation_metrics(sae, [x[:20], x[20:]])
    assert m["fvu"] == pytest.approx(0.0, abs=1e-12) and m["eval_tokens"] == 50
    one_sided = x.abs() + 0.1  # only the first d features ever fire
    assert activation_metrics(sae, [one_sided])["dead_fraction"] == 0.5
    stats = ActivationStats(16)
    stats.add(sae, x)
    assert stats.result()["l0"] == pytest.approx(float((x != 0).sum(-1).float().mean()))


def test_ce_loss_recovered(lm):
    ids = torch.randint(3, VOCAB, (4, 12), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding: never counted
    res = evaluate_sae(_identity_sae(D), lm, HOOK, ids, mask, batch_size=3)
    assert res["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert res["ce_spliced"] == pytest.approx(res["ce_clean"], abs=1e-6)
    assert res["ce_zero_ablated"] != pytest.approx(res["ce_clean"], abs=1e-3)
    assert res["fvu"] == pytest.approx(0.0, abs=1e-10) and res["eval_tokens"] == 4 * 11 - 3
    logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="none")
    valid = (mask[:, 1:] * mask[:, :-1]).reshape(-1).bool()
    assert res["ce_clean"] == pytest.approx(nll[valid].mean().item(), rel=1e-5)
    zero_hook = lm.model.layers[1]._forward_hooks
    assert not zero_hook and not lm._forward_pre_hooks  # nothing left behind


# ------------------------------------------------------------------------------ CLI
def test_cli_trains_from_text_folder(tmp_path, lm):
    from saesteer.train.cli import train_main
    from tiny import save_word_level_model

    words = save_word_level_model(tmp_path / "model", lm)
    g = torch.Generator().manual_seed(0)
    (tmp_path / "text").mkdir()
    for f in range(3):
        paras = [" ".join(words[i] for i in torch.randint(0, len(words), (60,), generator=g).tolist())
                 for _ in range(8)]
        (tmp_path / "text" / f"doc{f}.txt").write_text("\n\n".join(paras))
    out = tmp_path / "run"
    argv = ["--model", str(tmp_path / "model"), "--hook", HOOK, "--text", str(tmp_path / "text"), "--out", str(out),
            "--k", "4", "--d-sae", "64", "--batch-tokens", "128", "--total-tokens", "1024", "--context-length", "32",
            "--eval-seqs", "4", "--cache", str(tmp_path / "cache"), "--lr", "3e-3", "--no-progress"]
    assert train_main(argv) == 0
    card = json.loads((out / "training_card.json").read_text())
    assert card["tokens_seen"] == 1024 and card["ce_loss_recovered"] is not None
    assert card["command"].startswith("saesteer train --model")
    assert saesteer.load_sae(out).cfg.k == 4
    assert (tmp_path / "cache" / "meta.json").is_file()


def test_fvu_inliers_leaves_out_sink_tokens():
    """A few huge-norm tokens dominate the variance; fvu_inliers is the FVU of the other tokens."""
    from saesteer.train.metrics import ActivationStats
    from tiny import random_sae

    sae = random_sae()
    torch.manual_seed(0)
    x = torch.randn(400, 32)
    x[::100] *= 500.0  # 4 attention-sink-like tokens
    stats = ActivationStats(sae.d_sae)
    stats.add(sae, x)
    r = stats.result()
    keep = torch.ones(400, dtype=torch.bool)
    keep[::100] = False
    with torch.no_grad():
        xi = x[keep].double()
        want = float((xi - sae(x[keep]).double()).pow(2).sum() / (xi - xi.mean(0)).pow(2).sum())
    assert abs(r["fvu_inliers"] - want) < 1e-9
    assert abs(r["outlier_fraction"] - 0.01) < 1e-12
    assert r["fvu"] < r["fvu_inliers"]
