"""``SAETrainer``: the parameters, optimizer and bookkeeping of one SAE being trained, and one step.

Parameters live in saesteer's SAE layout (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
``b_dec``, ``threshold`` for JumpReLU) in the normalised units of training; :meth:`to_sae` folds
the normalisation back out. Decoder rows stay unit-norm: the gradient along each row is removed
before the Adam step and rows are renormalised after it (as sparsify and dictionary_learning do).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from saesteer.sae.module import SAE, SAEConfig
from saesteer.train import ops
from saesteer.train.config import TrainConfig


class SAETrainer:
    """One SAE under training. ``step(x)`` costs one dense encoder matmul (``N x d_in x d_sae``) plus
    ``O(N k d_in)`` sparse work for TopK/BatchTopK (JumpReLU: three dense matmuls)."""

    def __init__(self, cfg: TrainConfig, d_in: int) -> None:
        self.cfg = cfg
        self.d_in = int(d_in)
        self.d_sae = cfg.width(self.d_in)
        if cfg.architecture != "jumprelu" and cfg.k > self.d_sae:
            raise ValueError(f"k={cfg.k} is larger than d_sae={self.d_sae}")
        dev = torch.device(cfg.device)
        g = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.randn(self.d_sae, self.d_in, generator=g)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        self.params = nn.ParameterDict({
            "W_enc": nn.Parameter(W_dec.t().contiguous()),
            "b_enc": nn.Parameter(torch.zeros(self.d_sae)),
            "W_dec": nn.Parameter(W_dec),
            "b_dec": nn.Parameter(torch.zeros(self.d_in)),
        })
        if cfg.architecture == "jumprelu":
            self.params["threshold"] = nn.Parameter(torch.full((self.d_sae,), cfg.jumprelu_init_threshold))
        self.params.to(dev)
        self.device = dev
        # Adam moments, by parameter name (a few lines of our own: torch.optim costs a 2 s import of
        # torch._dynamo on first use, and plain tensors make the checkpoint simple)
        self.adam_m = {n: torch.zeros_like(t) for n, t in self.params.items()}
        self.adam_v = {n: torch.zeros_like(t) for n, t in self.params.items()}
        self.step_count = 0
        self.tokens_seen = 0
        self.tokens_since_fired = torch.zeros(self.d_sae, dtype=torch.long, device=dev)
        self.scale: float | None = None  # x_train = x * scale
        self.batch_threshold = -1.0  # BatchTopK inference threshold (normalised units), -1 = unset
        self.threshold_count = 0  # batches averaged into it

    # ------------------------------------------------------------------ set-up from the first batch
    def initialize(self, x: torch.Tensor) -> None:
        """Estimate the input scale and initialise ``b_dec`` from the first batch (raw units)."""
        x = x.to(self.device, torch.float32)
        norm = x.norm(dim=-1).mean().item()
        self.scale = math.sqrt(self.d_in) / norm if self.cfg.normalize_activations and norm > 0 else 1.0
        xs = x * self.scale
        with torch.no_grad():
            if self.cfg.b_dec_init == "geometric_median":
                self.params["b_dec"].copy_(ops.geometric_median(xs))
            elif self.cfg.b_dec_init == "mean":
                self.params["b_dec"].copy_(xs.mean(0))

    # ------------------------------------------------------------------ one step
    def step(self, x: torch.Tensor) -> dict[str, float]:
        """One optimizer step on raw activations ``x [N, d_in]``; returns the step's statistics
        (``loss``, ``fvu``, ``auxk`` , ``l0``, ``dead`` fraction, ``lr``)."""
        if self.scale is None:
            self.initialize(x)
        cfg, p = self.cfg, self.params
        x = x.to(self.device, torch.float32) * self.scale
        n = x.shape[0]
        lr = cfg.lr_at(self.step_count, self.d_sae)
        total_var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=self.device)
        stats: dict[str, float] = {"lr": lr, "auxk": 0.0}
        if cfg.architecture == "jumprelu":
            # (x - b_dec) @ W_enc + b_enc, written so that b_dec's gradient is a matrix-vector product
            z = torch.addmm(p["b_enc"] - p["b_dec"] @ p["W_enc"], x, p["W_enc"])
            f, l0 = ops.JumpReLUL0.apply(z, p["threshold"], cfg.jumprelu_bandwidth)
            x_hat = f @ p["W_dec"] + p["b_dec"]
            fvu = (x - x_hat).pow(2).sum() / total_var
            loss = fvu + cfg.l0_coefficient * l0
            fired |= (f > 0).any(0)
            stats["l0"] = float(l0.detach())
        else:
            loss, fvu = self._sparse_loss(x, total_var, fired, stats)
        loss.backward()
        ops.remove_parallel_grad(p["W_dec"])
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(p.values()), cfg.grad_clip)
        self._adam(lr)
        ops.normalize_rows_(p["W_dec"])
        if cfg.architecture == "jumprelu":
            with torch.no_grad():
                p["threshold"].clamp_(min=0.0)
        self.tokens_since_fired += n
        self.tokens_since_fired[fired] = 0
        self.step_count += 1
        self.tokens_seen += n
        stats.update(loss=float(loss.detach()), fvu=float(fvu.detach()), dead=self.dead_fraction())
        return stats

    @torch.no_grad()
    def _adam(self, lr: float, eps: float = 1e-8) -> None:
        """One Adam update (Kingma & Ba, bias-corrected, as ``torch.optim.Adam``); clears the grads."""
        b1, b2 = self.cfg.adam_betas
        t = self.step_count + 1
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        for name, p in self.params.items():
            if p.grad is None:
                continue
            m, v = self.adam_m[name], self.adam_v[name]
            m.lerp_(p.grad, 1.0 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-lr / c1)
            p.grad = None

    def _sparse_loss(self, x: torch.Tensor, total_var: torch.Tensor, fired: torch.Tensor,
                     stats: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, p = self.cfg, self.params
        with torch.no_grad():
            x_c = x - p["b_dec"]
            if cfg.encode_dtype == "bfloat16":  # selection and kept values from a bf16 matmul
                bf = torch.bfloat16
                pre = torch.addmm(p["b_enc"].to(bf), x_c.to(bf), p["W_enc"].to(bf))
            else:
                pre = torch.addmm(p["b_enc"], x_c, p["W_enc"])
        if cfg.architecture == "batchtopk":
            sel = ops.batch_topk_select(pre, cfg.k)
        else:
            sel = ops.topk_select(pre, cfg.k)
        vals = ops.selected_values(sel, x_c, p["W_enc"], p["b_enc"], p["b_dec"])
        x_hat = ops.sparse_decode(sel, vals, p["W_dec"]) + p["b_dec"]
        e = x - x_hat
        fvu = e.pow(2).sum() / total_var
        active = sel.values > 0
        fired[sel.cols[active]] = True
        stats["l0"] = float(active.sum()) / x.shape[0]
        if cfg.architecture == "batchtopk" and self.step_count >= cfg.threshold_start() and active.any():
            # EMA of the smallest kept activation (dictionary_learning); its weight is at least
            # 1/n, so the first 1/(1-beta) batches are averaged evenly rather than the first one ruling
            self.threshold_count += 1
            w = max(1.0 - cfg.threshold_beta, 1.0 / self.threshold_count)
            smallest = float(sel.values[active].min())
            prev = self.batch_threshold
            self.batch_threshold = smallest if prev < 0 else (1 - w) * prev + w * smallest
        loss = fvu
        dead = self.tokens_since_fired >= cfg.dead_window()
        n_dead = int(dead.sum())
        if cfg.auxk_alpha > 0 and n_dead > 0:
            k_aux = cfg.aux_k(self.d_in)
            aux = ops.sub_select(pre, dead.nonzero().squeeze(1), k_aux)
            aux_vals = ops.selected_values(aux, x_c, p["W_enc"], p["b_enc"], p["b_dec"])
            e_hat = ops.sparse_decode(aux, aux_vals, p["W_dec"])
            auxk = min(n_dead / k_aux, 1.0) * (e_hat - e.detach()).pow(2).sum() / total_var
            loss = loss + cfg.auxk_alpha * auxk
            stats["auxk"] = float(auxk.detach())
        return loss, fvu

    def dead_fraction(self) -> float:
        """Fraction of latents that have not fired for the dead-latent window."""
        return float((self.tokens_since_fired >= self.cfg.dead_window()).float().mean())

    # ------------------------------------------------------------------ export
    def to_sae(self) -> SAE:
        """The trained SAE for inference, reading and writing raw activations (scale folded out):
        TopK as ``topk``; BatchTopK as ``jumprelu`` with its threshold broadcast; JumpReLU as is."""
        cfg, p = self.cfg, self.params
        s = self.scale or 1.0
        arch = "topk" if cfg.architecture == "topk" else "jumprelu"
        meta: dict[str, Any] = {"training_tokens": self.tokens_seen, "training_scale": s,
                                "trained_with": "saesteer.train"}
        if cfg.architecture == "batchtopk":
            meta["batchtopk_k"] = cfg.k
            meta["batchtopk_threshold"] = self.batch_threshold / s
        sae = SAE(SAEConfig(d_in=self.d_in, d_sae=self.d_sae, architecture=arch,
                            k=cfg.k if arch == "topk" else None, source_architecture=cfg.architecture,
                            source_format="saesteer", hook_name=cfg.hook_name, model_name=cfg.model_name,
                            metadata=meta))
        with torch.no_grad():
            sae.W_enc.copy_(p["W_enc"])
            sae.W_dec.copy_(p["W_dec"])
            sae.b_enc.copy_(p["b_enc"] / s)
            sae.b_dec.copy_(p["b_dec"] / s)
            if cfg.architecture == "jumprelu":
                sae.threshold.copy_(p["threshold"] / s)
            elif cfg.architecture == "batchtopk":
                sae.threshold.fill_(max(self.batch_threshold, 0.0) / s)
        return sae.eval()
