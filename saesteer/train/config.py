"""``TrainConfig``: every knob of an SAE training run, with the defaults of the OpenAI TopK recipe
(Gao et al. 2024) as eai-sparsify and dictionary_learning implement it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

ARCHITECTURES = ("topk", "batchtopk", "jumprelu")
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

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "adam_betas" in kw:
            kw["adam_betas"] = tuple(kw["adam_betas"])
        return cls(**kw)

    #: fields that must match for a checkpoint to be resumed under this config
    RESUME_KEYS = ("architecture", "d_sae", "expansion_factor", "k", "batch_tokens", "normalize_activations",
                   "seed", "b_dec_init")
