"""saesteer's vLLM steering without vLLM: a toy model built the way vLLM builds decoders (layers called
as ``layer(positions, hidden, residual)`` returning ``(hidden, residual)``) and a fake model runner holding
what vLLM's does (``input_batch.req_ids``, ``query_start_loc``, ``requests``). The real engine is tested in
``tests_vllm/`` (``make test-vllm``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from saesteer.adapters import vllm_decoder
from saesteer.edit_schema import from_json
from saesteer.errors import EditError, HookError
from saesteer.integrations.vllm.steering import VllmSteering, route
from saesteer.runtime.apply import edit_activations
from tiny import random_sae

D = 32


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.Linear(D, D)
        self.mlp = nn.Linear(D, D)

    def forward(self, positions, hidden, residual):
        x = hidden if residual is None else hidden + residual
        a = self.self_attn(x)
        return self.mlp(x + a), x + a


class Toy(nn.Module):
    def __init__(self, n_layers: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Module()
        self.model.embed = nn.Embedding(50, D)
        self.model.layers = nn.ModuleList(Layer() for _ in range(n_layers))
        self.config = SimpleNamespace(hidden_size=D)
        self.seen: list[torch.Tensor] = []

    def forward(self, input_ids, positions):
        h, r = self.model.embed(input_ids), None
        for layer in self.model.layers:
            h, r = layer(positions, h, r)
        return h + r


def runner_for(model, reqs):
    """A fake runner: ``reqs`` is [(req_id, n_tokens_this_step, prompt_len, saesteer object)]."""
    starts = [0]
    for _, n, _, _ in reqs:
        starts.append(starts[-1] + n)
    return SimpleNamespace(
        model=model,
        input_batch=SimpleNamespace(num_reqs=len(reqs), req_ids=[r[0] for r in reqs]),
        query_start_loc=SimpleNamespace(cpu=torch.tensor(starts + [starts[-1]] * 3)),
        requests={r[0]: SimpleNamespace(num_prompt_tokens=r[2],
                                        sampling_params=SimpleNamespace(extra_args={"saesteer": r[3]} if r[3] else None))
                  for r in reqs})


A = {"clamp": {"3": 4.0}}
B = {"edits": [{"op": "clamp", "feature": 5, "value": 3.0}], "positions": "generated"}
# A: a prompt of 5 (prefill, positions 0-4); B: one decode step at position 9 of a 6-token prompt;
# C: unsteered, a prefill chunk at positions 3-6; A2: A's edits on a decode step (position 7, prompt 5)
STEP = [("A", 5, 5, A), ("B", 1, 6, B), ("C", 4, 9, None), ("A2", 1, 5, A)]
POS = torch.tensor([0, 1, 2, 3, 4, 9, 3, 4, 5, 6, 7])


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre",
                                  "blocks.2.hook_mlp_out", "blocks.-1.hook_attn_out"])
def test_each_request_gets_its_own_edits_and_unsteered_rows_are_bit_exact(hook):
    model = Toy()
    ids = torch.randint(0, 50, (POS.numel(),), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(ids, positions=POS)
    sae = random_sae(D, 64, "relu")
    st = VllmSteering(runner_for(model, STEP))
    name = st.attach(sae, hook)
    assert name == vllm_decoder.canonical(hook, 3)
    with torch.no_grad():
        steered = model(ids, positions=POS)
    rows = {"A": slice(0, 5), "B": slice(5, 6), "C": slice(6, 10), "A2": slice(10, 11)}
    # C's rows (unsteered) are bit-exact through the whole model; A, B are changed
    assert torch.equal(steered[rows["C"]], plain[rows["C"]])
    assert not torch.equal(steered[rows["A"]], plain[rows["A"]])
    assert not torch.equal(steered[rows["B"]], plain[rows["B"]])
    assert st.stats()["attachments"][name]["steered_rows"] == 7


def test_steered_rows_equal_the_edit_math_at_the_hook():
    """At blocks.1.hook_resid_post, what the next layer sees on steered rows is edit_activations' output."""
    model = Toy()
    ids = torch.randint(0, 50, (POS.numel(),), generator=torch.Generator().manual_seed(2))
    sae = random_sae(D, 64, "topk")
    st = VllmSteering(runner_for(model, STEP))
    st.attach(sae, "blocks.1.hook_resid_post")
    got: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        h0 = model.model.layers[1].register_forward_hook(lambda m, a, o: got.update(x=o[0] + o[1]), prepend=True)
        h1 = model.model.layers[2].register_forward_pre_hook(lambda m, a: got.update(y=a[1] + a[2]))
        model(ids, positions=POS)
        h0.remove(), h1.remove()
    x, y = got["x"], got["y"]
    for r, obj, plen in ((slice(0, 5), A, 5), (slice(5, 6), B, 6), (slice(10, 11), A, 5)):
        pos = POS[r].unsqueeze(1)
        want = edit_activations(sae, x[r].unsqueeze(1), from_json(obj),
                                lambda p: p.mask(pos, torch.ones_like(pos, dtype=torch.bool),
                                                 torch.full((pos.shape[0],), plen))).squeeze(1)
        torch.testing.assert_close(y[r], want, rtol=0, atol=1e-6)
    assert torch.equal(y[6:10], x[6:10])


def test_positions_follow_each_request():
    """'generated' on a prefill touches nothing; on a decode step past the prompt it does."""
    model = Toy()
    ids = torch.randint(0, 50, (6,))
    sae = random_sae(D, 64, "relu")
    gen = {"clamp": {"3": 9.0}, "positions": "generated"}
    st = VllmSteering(runner_for(model, [("P", 5, 5, gen), ("D", 1, 5, gen)]))
    st.attach(sae, "blocks.1.hook_resid_post")
    with torch.no_grad():
        out = model(ids, positions=torch.tensor([0, 1, 2, 3, 4, 5]))
        st.detach()
        plain = model(ids, positions=torch.tensor([0, 1, 2, 3, 4, 5]))
    assert torch.equal(out[:5], plain[:5]) and not torch.equal(out[5], plain[5])
    assert not st.attachments and not model._forward_pre_hooks and not model._forward_hooks


def test_a_hook_that_never_runs_is_an_error_not_a_silent_no_op():
    model = Toy()
    st = VllmSteering(runner_for(model, [("A", 2, 2, A)]))
    st.attach(random_sae(D, 64), "blocks.1.hook_resid_post")
    st._begin(model, (), {"positions": torch.tensor([0, 1])})
    with pytest.raises(HookError, match="never ran"):
        st._end(model, (), None)


def test_attach_and_route_refuse_what_they_cannot_do():
    model = Toy()
    st = VllmSteering(runner_for(model, []))
    with pytest.raises(HookError, match="past the last layer"):
        st.attach(random_sae(D, 64), "blocks.7.hook_resid_post")
    with pytest.raises(HookError, match="Valid names"):
        st.attach(random_sae(D, 64), "blocks.1.hook_z")
    with pytest.raises(HookError, match="width"):
        st.attach(random_sae(16, 64), "blocks.1.hook_resid_post")
    st.attach(random_sae(D, 64), "blocks.1.hook_resid_post")
    with pytest.raises(HookError, match="already attached"):
        st.attach(random_sae(D, 64), "blocks.-2.hook_resid_post")
    st.attach(random_sae(D, 64), "blocks.2.hook_mlp_out")
    names = list(st.attachments)
    with pytest.raises(EditError, match="say which"):
        route(from_json({"clamp": {"3": 1.0}}), names)
    with pytest.raises(EditError, match="no SAE attached"):
        route(from_json({"edits": [{"op": "erase", "feature": 3, "hook": "blocks.0.hook_mlp_out"}]}), names)
    parts = route(from_json({"edits": [{"op": "erase", "feature": 3, "hook": "blocks.2.hook_mlp_out"}]}), names)
    assert list(parts) == ["blocks.2.hook_mlp_out"]


def test_public_verbs_need_no_vllm_to_build_requests():
    import json

    import saesteer
    from saesteer import Clamp, EditSet
    from saesteer.integrations.vllm import serve

    sv = saesteer.vllm
    assert sv.engine_args("p")["additional_config"] == {"saesteer": {"attach": [{"sae": "p"}]}}
    assert sv.engine_args()["enforce_eager"] is True and "additional_config" not in sv.engine_args()
    short = sv.edits_json({"clamp": {"3": 2.0}})
    assert short == sv.edits_json(EditSet((Clamp(3, 2.0),))) == sv.edits_json({3: 2.0})
    assert short["edits"] == [{"op": "clamp", "feature": 3, "value": 2.0}]
    assert json.loads(sv.xargs({3: 2.0}, positions="generated")["saesteer"])["positions"] == "generated"
    with pytest.raises(EditError):
        sv.edits_json({"clamp": {"3": "big"}})
    got = serve.argv(["m", "--port", "1"])
    assert got[-3:] == ["--worker-extension-cls", sv.EXTENSION, "--enforce-eager"]
    assert serve.argv(["m", "--worker-extension-cls=x.Y", "--enforce-eager"]) == ["m", "--worker-extension-cls=x.Y",
                                                                                  "--enforce-eager"]
