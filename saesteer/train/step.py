"""``SAETrainer``: the parameters, optimizer and bookkeeping of one SAE being trained, and one step.

Parameters live in saesteer's SAE layout (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
``b_dec``, ``threshold`` for JumpReLU; Gated: ``W_enc`` is ``W_gate``, with ``b_gate``, ``b_mag``,
``r_mag`` and no ``b_enc``) in the normalised units of training; :meth:`to_sae` folds
the normalisation back out. Decoder rows stay unit-norm: the gradient along each row is removed
before the Adam step and rows are renormalised after it (as sparsify and dictionary_learning do).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from saesteer.sae.module import SAE, SAEConfig
from saesteer.train import distributed, guided, losses, ops
from saesteer.train.config import K_ARCHITECTURES, TrainConfig


class SAETrainer:
    """One SAE under training. ``step(x)`` costs one dense encoder matmul (``N x d_in x d_sae``) plus
    ``O(N k d_in)`` sparse work for TopK/BatchTopK (JumpReLU: three dense matmuls)."""

    def __init__(self, cfg: TrainConfig, d_in: int) -> None:
        self.cfg = cfg
        self.d_in = int(d_in)
        self.d_sae = cfg.width(self.d_in)
        arch = cfg.architecture
        if arch in K_ARCHITECTURES and max(cfg.k, cfg.k_at(0, self.d_in)) > self.d_sae:
            raise ValueError(f"k={cfg.k} (or k_start={cfg.k_at(0, self.d_in)}) is larger than d_sae={self.d_sae}")
        dev = torch.device(cfg.device)
        g = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.randn(self.d_sae, self.d_in, generator=g)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        biases = ("b_gate", "b_mag", "r_mag") if arch == "gated" else ("b_enc",)
        self.params = nn.ParameterDict({
            "W_enc": nn.Parameter(W_dec.t().contiguous()),
            **{b: nn.Parameter(torch.zeros(self.d_sae)) for b in biases},
            "W_dec": nn.Parameter(W_dec),
            "b_dec": nn.Parameter(torch.zeros(self.d_in)),
        })
        self.schedule = losses.PAnneal(cfg) if arch == "p_anneal" else None
        if arch == "matryoshka":
            sizes = cfg.group_sizes(self.d_sae)
            self.group_sizes = sizes
            self.group_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(dev)
            self.group_weights = list(cfg.group_weights or [1.0 / len(sizes)] * len(sizes))
            if len(self.group_weights) != len(sizes):
                raise ValueError(f"{len(self.group_weights)} group_weights for {len(sizes)} groups")
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
        self.labels: torch.Tensor | None = None  # G-SAE concept labels of the current batch
        #: identifiable-SAE reconstruction weights per input dimension (None: unweighted)
        self.recon_weights: torch.Tensor | None = None
        self.batch_threshold = -1.0  # BatchTopK inference threshold (normalised units), -1 = unset
        self.threshold_count = 0  # batches averaged into it

    # ------------------------------------------------------------------ set-up from the first batch
    def initialize(self, x: torch.Tensor) -> None:
        """Estimate the input scale and initialise ``b_dec`` from the first batch (raw units)."""
        x = x[:, :self.d_in].to(self.device, torch.float32)  # without G-SAE label columns
        norm = x.norm(dim=-1).mean().item()
        self.scale = math.sqrt(self.d_in) / norm if self.cfg.normalize_activations and norm > 0 else 1.0
        xs = x * self.scale
        with torch.no_grad():
            if self.cfg.b_dec_init == "geometric_median":
                self.params["b_dec"].copy_(ops.geometric_median(xs))
            elif self.cfg.b_dec_init == "mean":
                self.params["b_dec"].copy_(xs.mean(0))
        if self.cfg.recon_weighting == "inverse_variance" and self.recon_weights is None:
            w = 1.0 / xs.var(0).clamp_min(1e-8)
            self.recon_weights = w / w.mean()

    # ------------------------------------------------------------------ one step
    def step(self, x: torch.Tensor) -> dict[str, float]:
        """One optimizer step on raw activations ``x [N, d_in]``; returns the step's statistics
        (``loss``, ``fvu``, ``auxk`` , ``l0``, ``dead`` fraction, ``lr``). Under DDP (a process group of
        more than one rank, :mod:`saesteer.train.distributed`) ``x`` is this rank's slice of the global
        batch, and the step is the one-process step on the whole batch."""
        self.world = distributed.world()[1]
        if self.scale is None:
            self.initialize(distributed.all_gather_rows(x.to(self.device, torch.float32)))
        cfg, p = self.cfg, self.params
        x = x.to(self.device, torch.float32)
        if x.shape[1] != self.d_in + cfg.n_concepts:
            raise ValueError(f"rows are {x.shape[1]} wide; this trainer reads {self.d_in} activations"
                             f" + {cfg.n_concepts} concept labels")
        self.labels = x[:, self.d_in:] if cfg.n_concepts else None
        x = x[:, :self.d_in] * self.scale
        n = self.global_rows = x.shape[0] * self.world  # the global batch
        self.row_share = x.shape[0] / n  # row means: this rank's sum / global count = mean * row_share
        lr = cfg.lr_at(self.step_count, self.d_sae)
        total_var = self._centered_sq(x).clamp_min(1e-12)
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=self.device)
        stats: dict[str, float] = {"lr": lr, "auxk": 0.0}
        if cfg.architecture == "jumprelu":
            # (x - b_dec) @ W_enc + b_enc, written so that b_dec's gradient is a matrix-vector product
            z = torch.addmm(p["b_enc"] - p["b_dec"] @ p["W_enc"], x, p["W_enc"])
            f, l0 = ops.JumpReLUL0.apply(z, p["threshold"], cfg.jumprelu_bandwidth)
            x_hat = f @ p["W_dec"] + p["b_dec"]
            fvu = (x - x_hat).pow(2).sum() / total_var
            loss = fvu + cfg.l0_coefficient * l0 * self.row_share
            fired |= (f > 0).any(0)
            stats["l0"] = float(distributed.all_sum(l0.detach() * self.row_share))
        elif cfg.architecture in ("gated", "p_anneal"):
            loss, fvu = self._dense_loss(x, total_var, fired, stats)
        else:
            loss, fvu = self._sparse_loss(x, total_var, fired, stats)
        loss.backward()
        if self.world > 1:
            for t in p.values():
                if t.grad is not None:
                    distributed.all_sum(t.grad)
            fired = distributed.all_sum(fired.to(torch.int32)) > 0
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
        summed = distributed.all_sum(torch.stack([loss.detach(), fvu.detach()]))
        stats.update(loss=float(summed[0]), fvu=float(summed[1]), dead=self.dead_fraction())
        return stats

    def _centered_sq(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_n sum_j w_j (x_nj - mean_j)^2`` over the global batch (``w`` None: 1)."""
        if self.world == 1:
            c = (x - x.mean(0)).pow(2)
            return (c if w is None else c * w).sum()
        mean = distributed.all_sum(x.sum(0)) / self.global_rows
        c = (x - mean).pow(2)
        return distributed.all_sum((c if w is None else c * w).sum())

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

    def _dense_loss(self, x: torch.Tensor, total_var: torch.Tensor, fired: torch.Tensor,
                    stats: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated and p-annealing (dense ``N x F`` encodes; :mod:`saesteer.train.losses`)."""
        cfg, p = self.cfg, self.params
        scale = cfg.sparsity_scale(self.step_count)
        if cfg.architecture == "gated":
            loss, f, parts = losses.gated_loss(p, x, cfg.sparsity_coefficient * scale)
            loss = loss * self.row_share
            x_hat = parts["x_hat"]
            stats.update(sparsity=float(parts["sparsity"].detach()), aux=float(parts["aux"].detach()))
        else:
            assert self.schedule is not None
            f = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
            x_hat = f @ p["W_dec"] + p["b_dec"]
            share = self.row_share
            lp, alpha, p_used = self.schedule.penalty(f, self.step_count,
                                                      reduce=lambda t: distributed.all_sum(t * share))
            loss = ((x - x_hat).pow(2).sum(-1).mean() + alpha * scale * lp) * share
            stats.update(p=p_used, sparsity_coefficient=alpha, sparsity=float(lp.detach()))
        active = f > 0
        fired |= active.any(0)
        stats["l0"] = float(distributed.all_sum(active.sum())) / self.global_rows
        return loss, (x - x_hat).pow(2).sum() / total_var

    def _sparse_loss(self, x: torch.Tensor, total_var: torch.Tensor, fired: torch.Tensor,
                     stats: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK, BatchTopK, Matryoshka BatchTopK and Ordered (TopK): sparse selections, AuxK."""
        cfg, p = self.cfg, self.params
        arch = cfg.architecture
        k = cfg.k_at(self.step_count, self.d_in)
        stats["k"] = k
        with torch.no_grad():
            x_c = x - p["b_dec"]
            if cfg.encode_dtype == "bfloat16":  # selection and kept values from a bf16 matmul
                bf = torch.bfloat16
                pre = torch.addmm(p["b_enc"].to(bf), x_c.to(bf), p["W_enc"].to(bf))
            else:
                pre = torch.addmm(p["b_enc"], x_c, p["W_enc"])
        batch = arch in ("batchtopk", "matryoshka")
        if batch and self.world > 1:  # the global batch's top k * N: every rank keeps what is above its cut-off
            sel = ops.select_at_least(pre, self._global_cutoff(pre, k * self.global_rows))
        else:
            sel = ops.batch_topk_select(pre, k) if batch else ops.topk_select(pre, k)
        vals = ops.selected_values(sel, x_c, p["W_enc"], p["b_enc"], p["b_dec"])
        if arch == "matryoshka":
            recon, x_hat = losses.matryoshka_recon(sel, vals, x, p["W_dec"], p["b_dec"], self.group_of,
                                                   self.group_weights)
            recon = recon * self.row_share
        elif arch == "ordered":
            recon, x_hat = losses.ordered_recon(sel, vals, x, p["W_dec"], p["b_dec"], k)
            recon = recon / total_var
        else:
            x_hat = ops.sparse_decode(sel, vals, p["W_dec"]) + p["b_dec"]
            recon = None
        e = x - x_hat
        fvu = e.pow(2).sum() / total_var
        if self.recon_weights is not None and recon is None:  # identifiable-SAE reweighting (saesteer's reading)
            w = self.recon_weights.to(x.device)
            recon = (e.pow(2) * w).sum() / self._centered_sq(x, w).clamp_min(1e-12)
        active = sel.values > 0
        fired[sel.cols[active]] = True
        stats["l0"] = float(distributed.all_sum(active.sum())) / self.global_rows
        # (saesteer: batches of a k-annealing phase, k > cfg.k, stay out of the inference threshold)
        smallest = float("inf")
        if batch and self.step_count >= cfg.threshold_start() and k == cfg.k:
            local = sel.values[active].min() if active.any() else torch.tensor(float("inf"), device=x.device)
            smallest = float(distributed.all_min(local.detach().clone()))
        if smallest < float("inf"):
            # EMA of the smallest kept activation (dictionary_learning); its weight is at least
            # 1/n, so the first 1/(1-beta) batches are averaged evenly rather than the first one ruling
            self.threshold_count += 1
            w = max(1.0 - cfg.threshold_beta, 1.0 / self.threshold_count)
            prev = self.batch_threshold
            self.batch_threshold = smallest if prev < 0 else (1 - w) * prev + w * smallest
        loss = fvu if recon is None else recon
        dead = self.tokens_since_fired >= cfg.dead_window()
        n_dead = int(dead.sum())
        if cfg.auxk_alpha > 0 and n_dead > 0:
            k_aux = cfg.aux_k(self.d_in)
            aux = ops.sub_select(pre, dead.nonzero().squeeze(1), k_aux)
            aux_vals = ops.selected_values(aux, x_c, p["W_enc"], p["b_enc"], p["b_dec"])
            e_hat = ops.sparse_decode(aux, aux_vals, p["W_dec"])
            if arch == "matryoshka":
                e_var = self._centered_sq(e.detach()) / n if self.world > 1 else None
                auxk = losses.matryoshka_auxk(e_hat, e.detach(), e_var) * self.row_share
            else:
                auxk = min(n_dead / k_aux, 1.0) * (e_hat - e.detach()).pow(2).sum() / total_var
            loss = loss + cfg.auxk_alpha * auxk
            stats["auxk"] = float(auxk.detach())
        if cfg.n_concepts:  # G-SAE (saesteer's reading): latent c predicts label c
            z = guided.concept_pre_activations(x, p["W_enc"], p["b_enc"], p["b_dec"], cfg.n_concepts)
            bce = guided.concept_loss(z, self.labels)
            loss = loss + cfg.concept_coefficient * bce * self.row_share
            stats["concept_bce"] = float(bce.detach())
        return loss, fvu

    def _global_cutoff(self, pre: torch.Tensor, want: int) -> float:
        """The ``want``-th largest pre-activation over every rank's ``pre`` (BatchTopK's cut-off under
        DDP): each rank offers its own top ``want`` (padded with -inf), all ranks gather them."""
        flat = pre.reshape(-1)
        top = flat.topk(min(want, flat.numel()), sorted=False).values.float()
        if top.numel() < want:
            top = torch.cat([top, top.new_full((want - top.numel(),), float("-inf"))])
        return float(distributed.all_gather_rows(top).topk(want, sorted=False).values.min())

    def dead_fraction(self) -> float:
        """Fraction of latents that have not fired for the dead-latent window."""
        return float((self.tokens_since_fired >= self.cfg.dead_window()).float().mean())

    def extra_state(self) -> dict[str, Any]:
        """Schedule state that is not a function of the step (p-annealing's), as JSON for the checkpoint."""
        return {"p_anneal": self.schedule.state()} if self.schedule is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.schedule is not None and "p_anneal" in state:
            self.schedule.load(state["p_anneal"])

    # ------------------------------------------------------------------ export
    #: the inference architecture each trained one is saved as
    SAVED_AS = {"topk": "topk", "ordered": "topk", "batchtopk": "jumprelu", "matryoshka": "jumprelu",
                "jumprelu": "jumprelu", "gated": "gated", "p_anneal": "relu"}

    def to_sae(self) -> SAE:
        """The trained SAE for inference, reading and writing raw activations (scale folded out):
        TopK and Ordered as ``topk``; BatchTopK and Matryoshka as ``jumprelu`` with their threshold
        broadcast; JumpReLU as is; Gated as ``gated``; p-annealing as ``relu``."""
        cfg, p = self.cfg, self.params
        s = self.scale or 1.0
        arch = self.SAVED_AS[cfg.architecture]
        meta: dict[str, Any] = {"training_tokens": self.tokens_seen, "training_scale": s,
                                "trained_with": "saesteer.train"}
        if cfg.architecture in ("batchtopk", "matryoshka"):
            meta["batchtopk_k"] = cfg.k
            meta["batchtopk_threshold"] = self.batch_threshold / s
        if cfg.n_concepts:
            meta["guided_concepts"] = {"latents": list(range(cfg.n_concepts)), "reading": "saesteer G-SAE"}
        if cfg.architecture == "matryoshka":
            meta["matryoshka_group_sizes"] = list(self.group_sizes)
        if self.schedule is not None:
            meta["p_anneal"] = {"p": self.schedule.p, "sparsity_coefficient": self.schedule.coefficient}
        src = {"matryoshka": "matryoshka_batchtopk"}.get(cfg.architecture, cfg.architecture)
        sae = SAE(SAEConfig(d_in=self.d_in, d_sae=self.d_sae, architecture=arch,
                            k=cfg.k if arch == "topk" else None, source_architecture=src,
                            source_format="saesteer", hook_name=cfg.hook_name, model_name=cfg.model_name,
                            metadata=meta))
        with torch.no_grad():
            sae.W_enc.copy_(p["W_enc"])
            sae.W_dec.copy_(p["W_dec"])
            sae.b_dec.copy_(p["b_dec"] / s)
            if arch == "gated":  # every pre-activation scales with the input: biases / s, r_mag as is
                sae.b_gate.copy_(p["b_gate"] / s)
                sae.b_mag.copy_(p["b_mag"] / s)
                sae.r_mag.copy_(p["r_mag"])
            else:
                sae.b_enc.copy_(p["b_enc"] / s)
            if cfg.architecture == "jumprelu":
                sae.threshold.copy_(p["threshold"] / s)
            elif cfg.architecture in ("batchtopk", "matryoshka"):
                sae.threshold.fill_(max(self.batch_threshold, 0.0) / s)
        return sae.eval()
