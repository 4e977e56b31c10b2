"""``saesteer.check`` (and ``saesteer check``): the conformance suite, run on the user's own model, SAE and hardware.

Each check compares two ways of computing the same thing that must agree if steering is exact on
this stack (transformers version, dtype, attention implementation, cache type):

* zero edits: the wrapped model equals the bare one bit for bit (logits and greedy tokens), also
  with hooks on and an edit that changes nothing (``Scale(i, 1)``);
* KV cache: a steered ``generate`` equals a cache-free steered re-run (full forwards over the growing
  sequence), tokens equal and logits within the dtype's tolerance;
* per-row edits in a left-padded batch equal each row run alone;
* ``positions="prompt"`` / ``"generated"`` equal explicit position ranges, for one unpadded prompt
  (what transformers 5.24+ passes without an attention mask) and for a left-padded batch;
* other libraries' hooks stay registered and are called, and no saesteer hook is left after;
* a compiled copy of the model is refused, not silently left unsteered.

Cost: about a dozen greedy ``generate`` calls of ``max_new_tokens`` tokens on two short prompts and
as many cache-free re-runs (each ``max_new_tokens`` full forwards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from saesteer.edits import Clamp, Scale
from saesteer.errors import CompiledModelError, SaesteerError
from saesteer.positions import Positions
from saesteer.runtime.taps import saesteer_hooks

#: logits tolerance of "equal up to the dtype's rounding" between a cached and a cache-free run
TOLERANCE = {torch.float32: 2e-3, torch.float64: 1e-8, torch.float16: 0.1, torch.bfloat16: 0.5}
DEFAULT_PROMPTS = ("The sea is", "Once upon a time, in a small village by the river, there lived")


@dataclass
class CheckResult:
    """One line of the report: ``measured`` is the largest difference seen (or what was seen)."""

    name: str
    passed: bool
    measured: str
    detail: str = ""


@dataclass
class CheckReport:
    """The checks' results with what they ran on; ``passed`` is True when every check passed."""

    results: list[CheckResult] = field(default_factory=list)
    setup: str = ""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def table(self) -> str:
        """The PASS/FAIL table as printed by ``saesteer check``."""
        w = max((len(r.name) for r in self.results), default=10)
        lines = [self.setup, ""] if self.setup else []
        for r in self.results:
            lines.append(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<{w}}  {r.measured}"
                         + (f"  ({r.detail})" if r.detail else ""))
        n_fail = sum(not r.passed for r in self.results)
        lines.append("")
        lines.append(f"{len(self.results) - n_fail} passed, {n_fail} failed")
        return "\n".join(lines)

    __str__ = table


class _Runner:
    """The steered model, the inputs and the reference computations the checks share."""

    def __init__(self, sm: Any, prompts: list[list[int]], pad_id: int, feature: int, value: float, n_new: int):
        self.sm, self.model, self.n = sm, sm.model, n_new
        self.pad_id, self.feature, self.value = pad_id, feature, value
        dev = next((p.device for p in self.model.parameters() if p.device.type != "meta"), torch.device("cpu"))
        self.single = {"input_ids": torch.tensor([prompts[0]], device=dev)}  # no mask: the 5.24+ case
        T = max(map(len, prompts))
        ids = torch.full((len(prompts), T), pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, T - len(p):] = torch.tensor(p, device=dev)
            mask[r, T - len(p):] = 1
        self.padded = {"input_ids": ids, "attention_mask": mask}
        self.lengths = [len(p) for p in prompts]

    def clamp(self, positions: Positions | None = None) -> Clamp:
        return Clamp(self.feature, self.value, positions=positions)

    def generate(self, enc: dict, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy ``generate`` of the steered model: (new tokens [B, n], logits [B, n, V] float32)."""
        out = self.sm.generate(**enc, max_new_tokens=self.n, do_sample=False, output_logits=True,
                               return_dict_in_generate=True, pad_token_id=self.pad_id, **kw)
        T = enc["input_ids"].shape[1]
        return out.sequences[:, T:], torch.stack(out.logits, 1).float()

    @torch.no_grad()
    def rerun(self, enc: dict, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The same greedy decoding by full forwards without a cache over the growing sequence."""
        ids = enc["input_ids"]
        mask = enc.get("attention_mask", torch.ones_like(ids))
        toks, logits = [], []
        for _ in range(self.n):
            pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            out = self.sm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **kw).logits[:, -1]
            nxt = out.argmax(-1, keepdim=True)
            toks.append(nxt)
            logits.append(out.float())
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
        return torch.cat(toks, 1), torch.stack(logits, 1)

    def bare_generate(self, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.generate(**enc, max_new_tokens=self.n, do_sample=False, output_logits=True,
                                  return_dict_in_generate=True, pad_token_id=self.pad_id)
        return out.sequences[:, enc["input_ids"].shape[1]:], torch.stack(out.logits, 1).float()


def _same(name: str, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], tol: float,
          exact: bool = False) -> CheckResult:
    """Tokens equal and logits within ``tol`` (bit-exact with ``exact``), compared up to the first
    differing token (after it the two runs see different sequences)."""
    (ta, la), (tb, lb) = a, b
    same_tokens = torch.equal(ta, tb)
    diff = float((la - lb).abs().max()) if la.shape == lb.shape else float("inf")
    if exact:
        ok = same_tokens and torch.equal(la, lb)
        return CheckResult(name, ok, f"tokens {'equal' if same_tokens else 'DIFFER'}, max |dlogit| = {diff:.3g}",
                           "bit-exact required")
    return CheckResult(name, same_tokens and diff <= tol,
                       f"tokens {'equal' if same_tokens else 'DIFFER'}, max |dlogit| = {diff:.3g}", f"tol {tol:g}")


def _rows_alone(r: _Runner, edits_per_row: list) -> tuple[torch.Tensor, torch.Tensor]:
    toks, logits = [], []
    for row, es in enumerate(edits_per_row):
        m = r.padded["attention_mask"][row] != 0
        enc = {"input_ids": r.padded["input_ids"][row][m].unsqueeze(0)}
        t, lg = r.generate(enc, edits=es)
        toks.append(t)
        logits.append(lg)
    return torch.cat(toks), torch.cat(logits)


def _checks(r: _Runner, tol: float) -> list[tuple[str, Callable[[], CheckResult | list[CheckResult]]]]:
    P = r.lengths[0]
    single, padded = r.single, r.padded

    def zero_edits() -> list[CheckResult]:
        with torch.no_grad():
            bare = r.model(**padded).logits
            wrapped = r.sm(**padded).logits
            noop = r.sm(**padded, edits=Scale(r.feature, 1.0)).logits
        out = [CheckResult("zero edits: forward bit-exact", torch.equal(bare, wrapped),
                           f"max |dlogit| = {float((bare - wrapped).abs().max()):.3g}"),
               CheckResult("hooks on, no-op edit Scale(i, 1): forward bit-exact", torch.equal(bare, noop),
                           f"max |dlogit| = {float((bare - noop).abs().max()):.3g}")]
        ref = r.bare_generate(single)
        out.append(_same("zero edits: greedy generate bit-exact", r.generate(single), ref, 0, exact=True))
        out.append(_same("no-op edit: greedy generate bit-exact", r.generate(single, edits=Scale(r.feature, 1.0)),
                         ref, 0, exact=True))
        return out

    def edit_moves() -> CheckResult:
        with torch.no_grad():
            d = float((r.model(**single).logits - r.sm(**single, edits=r.clamp()).logits).abs().max())
        return CheckResult(f"the test edit Clamp({r.feature}, {r.value:g}) changes the logits", d > 10 * tol,
                           f"max |dlogit| = {d:.3g}", "else the checks below prove nothing: pass feature=/value=")

    def kv_single() -> CheckResult:
        return _same("KV cache: steered generate = cache-free re-run (1 unpadded prompt)",
                     r.generate(single, edits=r.clamp()), r.rerun(single, edits=r.clamp()), tol)

    def kv_padded() -> CheckResult:
        return _same("KV cache: steered generate = cache-free re-run (left-padded batch)",
                     r.generate(padded, edits=r.clamp()), r.rerun(padded, edits=r.clamp()), tol)

    def per_row() -> CheckResult:
        rows = [[r.clamp()], None]
        return _same("per-row edits in a left-padded batch = each row alone",
                     r.generate(padded, edits=rows), _rows_alone(r, rows), tol)

    def positions_single() -> list[CheckResult]:
        prompt = _same("positions='prompt' = range(0, P), 1 unpadded prompt",
                       r.generate(single, edits=r.clamp(), positions="prompt"),
                       r.rerun(single, edits=r.clamp(Positions.range((0, P)))), tol)
        gen = r.generate(single, edits=r.clamp(), positions="generated")
        generated = _same("positions='generated' = range(P, end), 1 unpadded prompt", gen,
                          r.rerun(single, edits=r.clamp(Positions.range((P, None)))), tol)
        return [prompt, generated]

    def positions_padded() -> list[CheckResult]:
        out = []
        for kind, span in (("prompt", lambda n: (0, n)), ("generated", lambda n: (n, None))):
            rows = [[r.clamp(Positions.range(span(n)))] for n in r.lengths]
            out.append(_same(f"positions='{kind}' = per-row ranges, left-padded batch",
                             r.generate(padded, edits=r.clamp(), positions=kind), r.rerun(padded, edits=rows), tol))
        return out

    return [("zero edits", zero_edits), ("edit has an effect", edit_moves), ("KV cache, unpadded", kv_single),
            ("KV cache, padded", kv_padded), ("per-row edits", per_row), ("positions, unpadded", positions_single),
            ("positions, padded", positions_padded)]


def _foreign_hooks(sm: Any) -> tuple[Callable[[], CheckResult], list]:
    """Register another library's hooks (a pre-hook on the model, a forward hook on each hooked
    module) and return the check that they are still there, were called, and no saesteer hook is left."""
    calls = {"pre": 0, "post": 0}
    model = sm.model
    handles = [model.register_forward_pre_hook(lambda m, a: calls.__setitem__("pre", calls["pre"] + 1))]
    for att in sm.attachments.values():
        handles.append(att.point.module.register_forward_hook(
            lambda m, a, o: calls.__setitem__("post", calls["post"] + 1)))

    def result() -> CheckResult:
        present = all(h.id in h.hooks_dict_ref() for h in handles if h.hooks_dict_ref() is not None)
        left = saesteer_hooks(model)
        ok = present and calls["pre"] > 0 and calls["post"] > 0 and left == 0
        return CheckResult("foreign hooks kept and called; no saesteer hook left", ok,
                           f"foreign hook calls: {calls['pre']} model, {calls['post']} layer; saesteer hooks left: {left}")

    return result, handles


def _compiled_copy(sm: Any) -> CheckResult:
    from saesteer.steered import wrap

    sae = next(iter(sm.attachments.values())).sae
    compiled = torch.compile(sm.model, backend="eager")  # a wrapper: the model itself is not changed
    try:
        wrap(compiled, sae, hook=next(iter(sm.attachments.values())).point.name)
    except CompiledModelError:
        return CheckResult("a compiled copy is refused, not silently unsteered", saesteer_hooks(sm.model) == 0,
                           "CompiledModelError raised before any hook was added")
    return CheckResult("a compiled copy is refused, not silently unsteered", False, "wrap accepted a compiled model")


def check(model: nn.Module | Any, sae: Any = None, *, hook: str | None = None, layer: int | None = None,
          tokenizer: Any = None, prompts: Sequence[str] | None = None, feature: int | None = None,
          value: float | None = None, max_new_tokens: int = 8, progress: bool = True) -> CheckReport:
    """Run the conformance suite on ``model`` with ``sae`` attached at ``hook`` (or ``layer``, or the
    SAE's own hook); ``model`` may also be a SteeredModel with one SAE attached (then ``sae`` is None).

    ``feature``/``value``: the clamp the checks use (default: the feature most active on the first
    prompt, clamped to 4x its largest activation there, at least 8). ``prompts`` needs ``tokenizer``;
    without either, two random token sequences of 6 and 11 tokens are used. Nothing of the model
    changes; hooks the check adds for itself are removed. Returns a CheckReport (``.passed``,
    ``.table()``). Cost: see the module docstring.
    """
    from tqdm.auto import tqdm

    from saesteer.steered import SteeredModel, wrap

    sm = model if isinstance(model, SteeredModel) and sae is None else wrap(model, sae, hook=hook, layer=layer,
                                                                           tokenizer=tokenizer)
    if len(sm.attachments) != 1:
        raise SaesteerError(f"check needs exactly one SAE attached, got {len(sm.attachments)}")
    tok = tokenizer if tokenizer is not None else sm.tokenizer
    if tok is not None:
        texts = list(prompts or DEFAULT_PROMPTS)
        ids = [tok(t, add_special_tokens=True)["input_ids"] for t in texts]
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    else:
        if prompts:
            raise SaesteerError("prompts need a tokenizer: pass tokenizer=")
        g = torch.Generator().manual_seed(0)
        vocab = int(getattr(sm.model.config, "vocab_size", 100))
        ids = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (6, 11)]
        pad = int(getattr(sm.model.config, "pad_token_id", None) or 0)
    if len(ids) < 2 or len({len(i) for i in ids[:2]}) < 2:
        raise SaesteerError("check needs two prompts of different token lengths (one gets left-padded)")
    att = next(iter(sm.attachments.values()))
    if feature is None or value is None:
        with torch.no_grad():
            acts = sm.features(input_ids=torch.tensor([ids[0]], device=att.sae.device), top_k=1)
        vals, inds = acts.values[0, :, 0], acts.indices[0, :, 0]
        j = int(vals[1:].argmax()) + 1 if vals.numel() > 1 else 0  # not the attention-sink token
        feature = int(inds[j]) if feature is None else feature
        value = max(8.0, 4.0 * float(vals[j])) if value is None else value
    dtype = att.sae.dtype
    tol = TOLERANCE.get(next(p.dtype for p in sm.model.parameters() if p.is_floating_point()), 0.5)
    import transformers

    report = CheckReport(setup=(f"saesteer check: {type(sm.model).__name__}, SAE at {att.name} "
                                f"(d_in={att.sae.d_in}, d_sae={att.sae.d_sae}), {str(dtype).replace('torch.', '')}, "
                                f"torch {torch.__version__}, transformers {transformers.__version__}, "
                                f"test edit Clamp({feature}, {value:g})"))
    runner = _Runner(sm, [list(i) for i in ids[:2]], pad, feature, float(value), max_new_tokens)
    foreign, handles = _foreign_hooks(sm)
    steps = _checks(runner, tol)
    try:
        for label, fn in tqdm(steps, desc="saesteer check", disable=not progress, leave=False):
            try:
                got = fn()
            except Exception as e:  # a check that crashes is a FAIL with its error, the others still run
                got = CheckResult(label, False, f"raised {type(e).__name__}: {e}")
            report.results.extend(got if isinstance(got, list) else [got])
        report.results.append(foreign())
    finally:
        for h in handles:
            h.remove()
    report.results.append(_compiled_copy(sm))
    return report
