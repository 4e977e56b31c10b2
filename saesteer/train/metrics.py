"""How good an SAE is: L0, FVU, dead fraction on activations, and CE-loss recovered on held-out text.

- ``L0``: mean number of non-zero features per token.
- ``FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over the evaluation tokens (0: perfect; 1:
  no better than the mean activation).
- dead fraction: features that never fired on the evaluation set.
- CE-loss recovered ``= (CE_zero_ablated - CE_spliced) / (CE_zero_ablated - CE_clean)``: the next-token
  loss with ``decode(encode(x))`` spliced in at the hook (through :func:`saesteer.wrap`, edit mode
  ``"reconstruct"``), against the clean model and against the hooked tensor replaced by zeros.
  Pad tokens are never counted (nor spliced, nor ablated).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from saesteer.runtime.taps import require, tap
from saesteer.sae.module import SAE


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained of ``x_hat`` for ``x [n, d]``."""
    x, x_hat = x.double(), x_hat.double()
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-30))


def l0(f: torch.Tensor) -> float:
    """Mean number of non-zero features per row of ``f [n, d_sae]``."""
    return float((f != 0).sum(-1).double().mean())


class ActivationStats:
    """Accumulates L0, FVU (about the global mean) and the fired features over many batches.

    FVU is reported twice: over every token (``fvu``) and over the tokens whose norm is within
    ``outlier_factor`` times their block's median norm (``fvu_inliers``). A residual stream may hold
    a few attention-sink tokens with norms ~100x the rest (SmolLM2: 0.01% of tokens, 77% of the
    variance); they are easy to reconstruct and would make the all-token FVU look far better than
    the SAE is on ordinary tokens, so ``fvu_inliers`` is the figure to hold an SAE to.
    """

    def __init__(self, d_sae: int, outlier_factor: float = 10.0) -> None:
        self.outlier_factor = outlier_factor
        self.n = 0
        self.active = 0
        self.fired = torch.zeros(d_sae, dtype=torch.bool)
        # [all tokens, inliers]: squared error, sum of x, sum of |x|^2, count
        self.err = [0.0, 0.0]
        self.sum: list[torch.Tensor | None] = [None, None]
        self.sumsq = [0.0, 0.0]
        self.count = [0, 0]

    @torch.no_grad()
    def add(self, sae: SAE, x: torch.Tensor) -> None:
        """Encode and decode ``x [n, d_in]`` and add its figures. Cost: one encode and decode."""
        if x.shape[0] == 0:
            return
        xs = x.to(sae.device, sae.dtype)
        f = sae.encode(xs)
        x_hat = sae.decode(f, *sae.normalize(xs)[1:])
        xd = xs.double()
        norms = xd.norm(dim=-1)
        inlier = norms <= self.outlier_factor * norms.median()
        sq = (xd - x_hat.double()).pow(2).sum(-1)
        for i, keep in enumerate((None, inlier)):
            xi, si = (xd, sq) if keep is None else (xd[keep], sq[keep])
            self.err[i] += float(si.sum())
            s = xi.sum(0).cpu()
            self.sum[i] = s if self.sum[i] is None else self.sum[i] + s
            self.sumsq[i] += float(xi.pow(2).sum())
            self.count[i] += xi.shape[0]
        self.n += x.shape[0]
        nz = f != 0
        self.active += int(nz.sum())
        self.fired |= nz.any(0).cpu()

    def _fvu(self, i: int) -> float:
        n = max(self.count[i], 1)
        var = self.sumsq[i] - float(self.sum[i].pow(2).sum()) / n  # type: ignore[union-attr]
        return self.err[i] / max(var, 1e-30)

    def result(self) -> dict[str, float]:
        if self.n == 0 or self.sum[0] is None:
            raise ValueError("no activations were evaluated")
        return {"l0": self.active / self.n, "fvu": self._fvu(0), "fvu_inliers": self._fvu(1),
                "outlier_fraction": 1 - self.count[1] / self.n,
                "dead_fraction": float((~self.fired).double().mean()), "eval_tokens": self.n}


def activation_metrics(sae: SAE, blocks: Iterable[torch.Tensor]) -> dict[str, float]:
    """L0, FVU and dead fraction of ``sae`` over activation blocks ``[n, d_in]`` (e.g. a
    :class:`~saesteer.train.cache.CachedActivations`). Cost: one encode/decode per block."""
    stats = ActivationStats(sae.d_sae)
    for x in blocks:
        stats.add(sae, x)
    return stats.result()


def _positions(mask: torch.Tensor, first: int) -> torch.Tensor:
    """Tokens at absolute (non-pad) position >= ``first`` that are not pads: ``[B, T]`` bool."""
    pos = mask.long().cumsum(-1) - 1
    return (pos >= first) & mask.bool()


def _zero_at(where: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A tap function replacing the hooked tensor by zeros at the ``[B, T]`` positions ``where``."""

    def zero(x: torch.Tensor) -> torch.Tensor:
        return torch.where(where.to(x.device).unsqueeze(-1), torch.zeros_like(x), x)

    return zero


def _ce_sum(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token CE over predictions whose input and target are both non-pad."""
    valid = (mask[:, 1:] & mask[:, :-1]).bool()
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -lp.gather(-1, ids[:, 1:, None].to(lp.device)).squeeze(-1)
    return float(nll[valid.to(nll.device)].double().sum()), int(valid.sum())


def _kl_sum(clean: torch.Tensor, spliced: torch.Tensor, where: torch.Tensor) -> tuple[float, int]:
    """Sum over the spliced positions of KL(clean || spliced) of the next-token distributions, and their count."""
    lp = torch.log_softmax(clean.float(), -1)
    lq = torch.log_softmax(spliced.float(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    w = where.to(kl.device)
    return float(kl[w].double().sum()), int(w.sum())


@torch.no_grad()
def evaluate_sae(
    sae: SAE,
    model: nn.Module,
    hook: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 8,
    drop_first: bool = True,
) -> dict[str, float]:
    """All held-out metrics of ``sae`` at ``hook`` on ``input_ids [n, T]``: L0, FVU, dead fraction
    (on the hooked activations), CE clean / spliced / zero-ablated / recovered, and ``kl_spliced``: the mean
    KL(clean || spliced) of the next-token distributions over the spliced positions.

    ``drop_first``: leave position 0 of every row out of everything but the CE (not measured, not
    spliced, not ablated), as the SAE was trained without it. Cost: three forwards of the model and
    one SAE encode/decode per batch of ``batch_size`` rows. The model is left as it was.
    """
    import saesteer
    from saesteer import adapters
    from saesteer.edits import EditSet
    from saesteer.positions import Positions

    point = adapters.resolve(model, hook)
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    first = 1 if drop_first else 0
    edits = EditSet(mode="reconstruct", positions=Positions.range((first, None)) if first else Positions.all())
    stats = ActivationStats(sae.d_sae)
    ce = {"clean": [0.0, 0], "spliced": [0.0, 0], "zero": [0.0, 0]}
    kl = [0.0, 0]
    steered = saesteer.wrap(model, sae, hook=point.name)
    try:
        for i in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[i:i + batch_size].to(device)
            mask = attention_mask[i:i + batch_size].to(device)
            where = _positions(mask, first)
            with tap(point, prepend=False) as caught:
                logits = model(input_ids=ids, attention_mask=mask).logits
            stats.add(sae, require(caught, point.name)[where].float())
            s, n = _ce_sum(logits, ids, mask)
            ce["clean"][0] += s
            ce["clean"][1] += n
            clean = logits
            logits = steered(input_ids=ids, attention_mask=mask, edits=edits).logits
            s, _ = _ce_sum(logits, ids, mask)
            ce["spliced"][0] += s
            k, m = _kl_sum(clean, logits, where)
            kl[0] += k
            kl[1] += m
            with tap(point, _zero_at(where), prepend=False):
                logits = model(input_ids=ids, attention_mask=mask).logits
            s, _ = _ce_sum(logits, ids, mask)
            ce["zero"][0] += s
    finally:
        steered.unwrap()
    out = stats.result()
    n = max(ce["clean"][1], 1)
    clean, spliced, zero = ce["clean"][0] / n, ce["spliced"][0] / n, ce["zero"][0] / n
    out.update(ce_clean=clean, ce_spliced=spliced, ce_zero_ablated=zero,
               ce_loss_recovered=(zero - spliced) / (zero - clean) if zero != clean else float("nan"),
               kl_spliced=kl[0] / max(kl[1], 1))
    return out
