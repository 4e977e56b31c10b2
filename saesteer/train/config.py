"""``TrainConfig``: every knob of an SAE training run, with the defaults of the OpenAI TopK recipe
(Gao et al. 2024) as eai-sparsify and dictionary_learning implement it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "gated", "p_anneal", "matryoshka", "ordered")
#: architectures with a k (a TopK or BatchTopK selection)
K_ARCHITECTURES = ("topk", "batchtopk", "matryoshka", "ordered")
SPARSITY_FUNCTIONS = ("Lp^p", "Lp")
B_DEC_INITS = ("geometric_median", "mean", "zeros")


@dataclass
class TrainConfig:
    """What to train and how.

    Sizes are in tokens (activation rows): ``batch_tokens`` per step, ``total_tokens`` in all, so
    the run is ``total_tokens // batch_tokens`` steps. ``d_sae`` wins over ``expansion_factor``.

    - ``lr=None``: ``2e-4 / sqrt(d_sae / 2**14)`` (the scaling rule of Gao et al., used by sparsify and
      dictionary_learning); linear warm-up over ``warmup_steps`` (None: ``min(1000, steps // 10)``),
      linear decay to 0 over the last ``lr_decay_frac`` of the steps.
    - AuxK (TopK and BatchTopK): latents that have not fired for ``dead_tokens`` tokens (None:
      ``min(10M, total_tokens // 10)``) are dead; the top ``k_aux`` (None: ``d_in // 2``) dead
      latents of each token are trained to predict the residual, weight ``auxk_alpha`` (1/32);
      the AuxK loss is normalised by the batch variance and scaled by ``min(n_dead / k_aux, 1)``
      (as sparsify does).
    - BatchTopK: trained with a batch-wide top ``k * N``; saved as JumpReLU with one threshold for
      every latent, by dictionary_learning's rule: an EMA (``threshold_beta``) of the smallest kept
      activation of each batch, from step ``threshold_start_step`` (None: ``min(1000, steps // 2)``).
      Where dictionary_learning seeds the EMA with its first value, the EMA weight here is
      ``max(1 - beta, 1/n)`` (a plain mean over the first ``1/(1-beta)`` batches), so short runs
      are not ruled by one early batch.
    - JumpReLU: straight-through estimators with a rectangle kernel of width ``jumprelu_bandwidth``,
      thresholds start at ``jumprelu_init_threshold``; loss ``FVU + l0_coefficient * L0``.
    - ``encode_dtype="bfloat16"`` (TopK/BatchTopK): the dense encoder matmul, which selects the
      latents, runs in bfloat16 (about 2.5x faster on CPUs with AVX512-BF16/AMX; kept values carry
      bf16 rounding, as under GPU autocast). Gradients stay float32.
    - k-annealing (TopK, BatchTopK, Matryoshka, Ordered; ``k_anneal_steps > 0``): the k of step ``t``
      is ``int(k_start (1 - r) + k r)`` with ``r = min(t, k_anneal_steps) / k_anneal_steps``
      (``k_start`` None: ``d_in``, dictionary_learning's start); see :meth:`k_at`. dictionary_learning
      sets the k of step ``t + 1`` after step ``t`` from ``t``'s ratio (k lags one step); here step
      ``t`` uses its own. BatchTopK's inference threshold averages only batches at the final k.
    - Gated, p-annealing, Matryoshka, Ordered: see :mod:`saesteer.train.losses` for each loss, what
      reproduces its reference and what is saesteer's reading. ``sparsity_coefficient`` is Gated's
      lambda and p-annealing's initial alpha (0.1 in both references), warmed up linearly from 0 over
      ``sparsity_warmup_steps`` (None: ``min(2000, steps // 10)``). p-annealing: ``sparsity_function``
      (``Lp^p`` as the paper's sweep, or ``Lp``), ``p_start`` -> ``p_end`` in ``n_sparsity_updates``
      switches from ``anneal_start`` (None: ``min(15000, steps // 2)``) to ``anneal_end`` (None: the
      run's step count, as the reference), ``sparsity_queue_length`` batches averaged for the rescale.
      Matryoshka: ``group_fractions`` (None: 1/16, 1/16, 1/8, 1/4, 1/2), ``group_weights`` (None:
      1/#groups each). To match the references' optimisers: Gated ``lr=5e-5, adam_betas=(0, 0.999)``;
      Matryoshka ``grad_clip=1.0``.
    - ``n_concepts > 0`` (TopK family): G-SAE concept-guided latents, saesteer's reading
      (:mod:`saesteer.train.guided`): rows carry ``n_concepts`` 0/1 label columns after the
      activations, latent ``c`` is trained to predict label ``c`` (weight ``concept_coefficient``).
    - ``recon_weighting`` (TopK, BatchTopK): the identifiable-SAE reweighted reconstruction
      ``sum_j w_j (x_j - x_hat_j)^2`` (Cui et al., arXiv 2506.15963), saesteer's reading: weights per
      input dimension, ``"inverse_variance"`` sets ``w_j = 1 / Var(x_j)`` of the first batch, scaled
      to mean 1 (the paper's weight-selection principle is not confirmed); ``SAETrainer.recon_weights``
      can be set to any other ``[d_in]`` weights before the first step. The loss is then a weighted
      FVU (divided by ``sum_j w_j`` times the variance of dimension ``j``).
    - ``normalize_activations``: train on ``x * s`` with ``s = sqrt(d_in) / mean ||x||`` (from the
      first batch); ``s`` is folded into the saved SAE, which reads and writes raw activations.
    """

    architecture: str = "topk"
    d_sae: int | None = None
    expansion_factor: int = 8
    k: int = 32
    lr: float | None = None
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int | None = None
    lr_decay_frac: float = 0.2
    batch_tokens: int = 4096
    total_tokens: int = 10_000_000
    auxk_alpha: float = 1 / 32
    k_aux: int | None = None
    dead_tokens: int | None = None
    b_dec_init: str = "geometric_median"
    normalize_activations: bool = True
    threshold_beta: float = 0.999
    threshold_start_step: int | None = None
    l0_coefficient: float = 2e-3
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.01
    grad_clip: float | None = None
    k_anneal_steps: int = 0
    k_start: int | None = None
    sparsity_coefficient: float = 0.1
    sparsity_warmup_steps: int | None = None
    sparsity_function: str = "Lp^p"
    p_start: float = 1.0
    p_end: float = 0.2
    anneal_start: int | None = None
    anneal_end: int | None = None
    n_sparsity_updates: int = 10
    sparsity_queue_length: int = 10
    group_fractions: tuple[float, ...] | None = None
    group_weights: tuple[float, ...] | None = None
    n_concepts: int = 0
    recon_weighting: str = "none"
    concept_coefficient: float = 1.0
    encode_dtype: str = "float32"
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    device: str = "cpu"
    hook_name: str | None = None
    model_name: str | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {self.architecture!r}")
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init must be one of {', '.join(B_DEC_INITS)}; got {self.b_dec_init!r}")
        if self.batch_tokens < 1 or self.total_tokens < self.batch_tokens:
            raise ValueError(f"need 1 <= batch_tokens <= total_tokens; got {self.batch_tokens}, {self.total_tokens}")
        if self.encode_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"encode_dtype must be float32 or bfloat16; got {self.encode_dtype!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1; got {self.k}")
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        if self.sparsity_function not in SPARSITY_FUNCTIONS:
            raise ValueError(f"sparsity_function must be one of {', '.join(SPARSITY_FUNCTIONS)}; "
                             f"got {self.sparsity_function!r}")
        if self.k_anneal_steps < 0 or self.n_sparsity_updates < 1:
            raise ValueError("k_anneal_steps must be >= 0 and n_sparsity_updates >= 1")
        if self.recon_weighting not in ("none", "inverse_variance"):
            raise ValueError(f"recon_weighting must be none or inverse_variance; got {self.recon_weighting!r}")
        if self.recon_weighting != "none" and self.architecture not in ("topk", "batchtopk"):
            raise ValueError("recon_weighting is implemented for topk and batchtopk only")
        if self.n_concepts < 0 or (self.n_concepts and self.architecture not in K_ARCHITECTURES):
            raise ValueError(f"n_concepts (G-SAE) needs one of {', '.join(K_ARCHITECTURES)}; "
                             f"got {self.architecture!r} with n_concepts={self.n_concepts}")
        if self.group_fractions is not None:
            self.group_fractions = tuple(float(f) for f in self.group_fractions)
            if abs(sum(self.group_fractions) - 1.0) > 1e-6 or min(self.group_fractions) <= 0:
                raise ValueError(f"group_fractions must be positive and sum to 1; got {self.group_fractions}")
        if self.group_weights is not None:
            self.group_weights = tuple(float(w) for w in self.group_weights)

    # ------------------------------------------------------------------ derived values
    @property
    def steps(self) -> int:
        return self.total_tokens // self.batch_tokens

    def width(self, d_in: int) -> int:
        return int(self.d_sae) if self.d_sae else int(self.expansion_factor) * d_in

    def learning_rate(self, d_sae: int) -> float:
        return float(self.lr) if self.lr is not None else 2e-4 / math.sqrt(d_sae / 2**14)

    def warmup(self) -> int:
        return int(self.warmup_steps) if self.warmup_steps is not None else min(1000, self.steps // 10)

    def lr_at(self, step: int, d_sae: int) -> float:
        """Learning rate of step ``step`` (0-based): warm-up, flat, linear decay to zero."""
        base = self.learning_rate(d_sae)
        w = self.warmup()
        if w > 0 and step < w:
            return base * (step + 1) / w
        decay = int(self.steps * self.lr_decay_frac)
        start = self.steps - decay
        if decay > 0 and step >= start:
            return base * max(self.steps - step, 0) / decay
        return base

    def dead_window(self) -> int:
        return int(self.dead_tokens) if self.dead_tokens is not None else min(10_000_000, self.total_tokens // 10)

    def aux_k(self, d_in: int) -> int:
        return int(self.k_aux) if self.k_aux is not None else max(d_in // 2, 1)

    def threshold_start(self) -> int:
        if self.threshold_start_step is not None:
            return int(self.threshold_start_step)
        return min(1000, self.steps // 2)

    def k_at(self, step: int, d_in: int) -> int:
        """The k of step ``step`` (0-based) under k-annealing; ``k`` itself without it."""
        if not self.k_anneal_steps:
            return int(self.k)
        start = int(self.k_start) if self.k_start is not None else int(d_in)
        r = min(step, self.k_anneal_steps) / self.k_anneal_steps
        return max(int(start * (1 - r) + self.k * r), 1)

    def sparsity_warmup(self) -> int:
        if self.sparsity_warmup_steps is not None:
            return int(self.sparsity_warmup_steps)
        return min(2000, self.steps // 10)

    def sparsity_scale(self, step: int) -> float:
        """The sparsity-penalty warm-up factor of step ``step``: ``min(step / warmup, 1)`` (as
        dictionary_learning's ``get_sparsity_warmup_fn``; 1 without a warm-up)."""
        w = self.sparsity_warmup()
        return 1.0 if w <= 0 else min(step / w, 1.0)

    def group_sizes(self, d_sae: int) -> list[int]:
        """Matryoshka group sizes: ``int(frac * d_sae)`` for all but the last group, which takes the
        remainder (dictionary_learning's rule)."""
        fr = self.group_fractions or (1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
        sizes = [int(f * d_sae) for f in fr[:-1]]
        sizes.append(d_sae - sum(sizes))
        if min(sizes) <= 0:
            raise ValueError(f"group_fractions {fr} give an empty group at d_sae={d_sae}: {sizes}")
        return sizes

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        for key in ("group_fractions", "group_weights"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "adam_betas" in kw:
            kw["adam_betas"] = tuple(kw["adam_betas"])
        for key in ("group_fractions", "group_weights"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    #: fields that must match for a checkpoint to be resumed under this config
    RESUME_KEYS = ("architecture", "d_sae", "expansion_factor", "k", "batch_tokens", "normalize_activations",
                   "seed", "b_dec_init", "group_fractions", "n_concepts", "recon_weighting")
