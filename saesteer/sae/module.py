"""The one SAE module every file format loads into.

Layout, whatever the file: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
``b_dec [d_in]``, optional ``threshold [d_sae]`` (JumpReLU, and BatchTopK/Matryoshka at inference),
optional ``k`` (TopK), and for Gated SAEs ``b_gate``, ``b_mag``, ``r_mag`` (``b_enc`` unused).

Encoding is ``normalise -> subtract b_dec (optional) -> pre-activation -> activation``; decoding is
``f @ W_dec + b_dec -> un-normalise``. Normalisation is per token and affine
(``x_n = (x - shift) / scale``), so the difference of two decodes is ``(f' - f) @ W_dec * scale``:
the fact the error-preserving edit relies on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from saesteer.errors import EditError, SAEFormatError

#: activation kinds at inference time
ARCHITECTURES = ("relu", "jumprelu", "topk", "gated")
#: activations whose feature i depends on encoder column i only (the fast path applies)
ELEMENTWISE = ("relu", "jumprelu", "gated")
#: bytes of pre-activation per top-k chunk in a steered TopK forward (see SAE._topk_rows)
TOPK_CHUNK_BYTES = 1 << 20
_SUBSET_CACHE_SIZE = 64


@dataclass(frozen=True)
class FeatureSubset:
    """A few features' weights gathered once (see :meth:`SAE.subset`): the index tensor, their
    encoder columns ``W_enc [d_in, n]`` and decoder rows ``W_dec [n, d_in]``."""

    features: tuple[int, ...]
    idx: torch.Tensor
    W_enc: torch.Tensor
    W_dec: torch.Tensor
NORMALIZATIONS = ("none", "layer_norm", "constant_norm_rescale")


@dataclass
class SAEConfig:
    """What an SAE is, independent of the file it came from.

    ``architecture`` is the activation used at inference (``relu``, ``jumprelu``, ``topk``,
    ``gated``); ``source_architecture`` keeps what the file called it (``standard``,
    ``batchtopk``, ``matryoshka_batchtopk``, ``sarm_topk``, ...).
    """

    d_in: int
    d_sae: int
    architecture: str = "relu"
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize: str = "none"
    norm_eps: float = 1e-5
    topk_relu: bool = True
    source_architecture: str | None = None
    source_format: str | None = None
    hook_name: str | None = None
    model_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: transcoders: the output width (None: an SAE, which writes back where it reads, ``d_in`` wide)
    d_out: int | None = None
    #: transcoders: the hook whose tensor the decoder replaces (the MLP output for an MLP transcoder)
    hook_name_out: str | None = None
    #: skip transcoders: a linear skip connection ``x @ W_skip.T`` (``W_skip [d_out, d_in]``) in decode
    skip: bool = False

    @property
    def transcoder(self) -> bool:
        """True when the SAE reads one activation and reconstructs another (a transcoder)."""
        return self.d_out is not None or self.hook_name_out is not None or self.skip

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SAEFormatError(
                f"unknown SAE architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )
        if self.normalize not in NORMALIZATIONS:
            raise SAEFormatError(
                f"unknown activation normalisation {self.normalize!r}; known: {', '.join(NORMALIZATIONS)}"
            )
        for name in ("d_in", "d_sae"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise SAEFormatError(f"SAE {name} must be an int, got {v!r}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int)):
            raise SAEFormatError(f"SAE k must be an int, got {self.k!r}")
        if not isinstance(self.apply_b_dec_to_input, bool):
            raise SAEFormatError(f"apply_b_dec_to_input must be True or False, got {self.apply_b_dec_to_input!r}")
        if self.d_out is not None and (isinstance(self.d_out, bool) or not isinstance(self.d_out, int) or self.d_out <= 0):
            raise SAEFormatError(f"a transcoder's d_out must be a positive int, got {self.d_out!r}")
        if self.transcoder and self.apply_b_dec_to_input:
            raise SAEFormatError("a transcoder's b_dec lives in its output space: apply_b_dec_to_input must be False")
        if self.transcoder and self.normalize != "none":
            raise SAEFormatError("transcoders with input normalisation are not supported (the output would need "
                                 "the input's scale)")
        if self.architecture == "topk" and (self.k is None or not 0 < int(self.k) <= self.d_sae):
            raise SAEFormatError(f"a TopK SAE needs 0 < k <= d_sae ({self.d_sae}); got k={self.k}")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise SAEFormatError(f"SAE widths must be positive; got d_in={self.d_in}, d_sae={self.d_sae}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SAE(nn.Module):
    """A sparse autoencoder in saesteer's single internal layout.

    ``encode(x)`` costs one ``[d_in x d_sae]`` matmul per token (TopK adds a top-k);
    ``encode_subset(x, idx)`` costs ``len(idx)`` dot products for element-wise activations.
    """

    def __init__(
        self,
        cfg: SAEConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        #: feature labels (a :class:`saesteer.labels.FeatureLabels`) when the files had them
        self.labels: Any = None
        d, F = cfg.d_in, cfg.d_sae
        d_out = cfg.d_out or d
        kw = {"dtype": dtype, "device": device}
        self.W_enc = nn.Parameter(torch.zeros(d, F, **kw))
        self.W_dec = nn.Parameter(torch.zeros(F, d_out, **kw))
        self.b_enc = nn.Parameter(torch.zeros(F, **kw))
        self.b_dec = nn.Parameter(torch.zeros(d_out, **kw))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(d_out, d, **kw))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(F, **kw))
        if cfg.architecture == "gated":
            self.b_gate = nn.Parameter(torch.zeros(F, **kw))
            self.b_mag = nn.Parameter(torch.zeros(F, **kw))
            self.r_mag = nn.Parameter(torch.zeros(F, **kw))

    # ------------------------------------------------------------------ properties
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def d_out(self) -> int:
        """The width of what the decoder writes: ``d_in`` for an SAE, the output width of a transcoder."""
        return self.cfg.d_out or self.cfg.d_in

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    @property
    def elementwise(self) -> bool:
        """True when feature i depends on encoder column i only (edits can skip the full encode)."""
        return self.cfg.architecture in ELEMENTWISE

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def extra_repr(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.architecture == "topk" else ""
        out = f", transcoder to d_out={self.d_out}{' with skip' if c.skip else ''}" if c.transcoder else ""
        return f"d_in={c.d_in}, d_sae={c.d_sae}, architecture={c.architecture}{k}, normalize={c.normalize}{out}"

    # ------------------------------------------------------------------ normalisation
    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Per-token input transform: returns ``(x_n, shift, scale)``; the output transform is
        ``y -> y * scale + shift`` (:meth:`denormalize`).

        ``shift``/``scale`` are ``None`` when the SAE uses no normalisation (the identity).
        """
        mode = self.cfg.normalize
        if mode == "none":
            return x, None, None
        if mode == "layer_norm":
            # as SAELens: divide by (std + eps) on the way in, multiply by std on the way out
            shift = x.mean(dim=-1, keepdim=True)
            centred = x - shift
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + self.cfg.norm_eps), shift, std
        # constant_norm_rescale: x * sqrt(d) / ||x||, undone on output
        scale = x.norm(dim=-1, keepdim=True) / math.sqrt(self.cfg.d_in)
        return x / scale, None, scale

    @staticmethod
    def denormalize(y: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor:
        if scale is not None:
            y = y * scale
        if shift is not None:
            y = y + shift
        return y

    def encoder_input(self, x_n: torch.Tensor) -> torch.Tensor:
        """What the encoder reads from a normalised activation ``x_n`` (from :meth:`normalize`):
        ``x_n - b_dec`` when the SAE subtracts its decoder bias first (``apply_b_dec_to_input``),
        else ``x_n`` itself. This is the ``x_in`` that :meth:`pre_activation`, :meth:`activate` and
        :meth:`encode_subset_normalized` take. Cost: at most one elementwise subtraction."""
        return x_n - self.b_dec if self.cfg.apply_b_dec_to_input else x_n

    # ------------------------------------------------------------------ encode
    def pre_activation(self, x_in: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder pre-activations of the (already normalised, b_dec-subtracted) input.

        With ``idx`` only those features' columns are computed. For Gated SAEs this is the
        magnitude path; the gate is computed in :meth:`activate`.
        """
        W = self.W_enc if idx is None else self.W_enc[:, idx]
        if self.cfg.architecture == "gated":
            r = self.r_mag if idx is None else self.r_mag[idx]
            b = self.b_mag if idx is None else self.b_mag[idx]
            return x_in @ (W * r.exp()) + b
        b = self.b_enc if idx is None else self.b_enc[idx]
        return x_in @ W + b

    def activate(self, z: torch.Tensor, x_in: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the activation to pre-activations ``z`` (``idx`` as in :meth:`pre_activation`)."""
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(z)
        if arch == "jumprelu":
            th = self.threshold if idx is None else self.threshold[idx]
            return torch.relu(z) * (z > th).to(z.dtype)
        if arch == "gated":
            W = self.W_enc if idx is None else self.W_enc[:, idx]
            bg = self.b_gate if idx is None else self.b_gate[idx]
            gate = (x_in @ W + bg) > 0
            return torch.relu(z) * gate.to(z.dtype)
        # topk: needs the full pre-activation vector
        if idx is not None:
            raise ValueError("TopK activations need the full pre-activation vector")
        k = int(self.cfg.k)  # type: ignore[arg-type]
        vals, inds = torch.topk(z, k, dim=-1, sorted=False)
        if self.cfg.topk_relu:
            vals = torch.relu(vals)
        return torch.zeros_like(z).scatter(-1, inds, vals)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``f [..., d_sae]`` of activations ``x [..., d_in]`` (one full matmul)."""
        x_n, _, _ = self.normalize(x)
        x_in = self.encoder_input(x_n)
        return self.activate(self.pre_activation(x_in), x_in)

    def encode_subset(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``encode(x)[..., idx]``. For ReLU/JumpReLU/Gated it costs ``len(idx)`` dot products per
        token; TopK falls back to the full encode."""
        x_n, _, _ = self.normalize(x)
        return self.encode_subset_normalized(self.encoder_input(x_n), idx)

    def encode_subset_normalized(self, x_in: torch.Tensor, idx: torch.Tensor | FeatureSubset) -> torch.Tensor:
        """As :meth:`encode_subset` on an input that is already normalised and b_dec-subtracted.

        ``idx`` may be a :class:`FeatureSubset` (its gathered encoder columns are reused). TopK
        reads the edited features off the top-k indices instead of scattering a dense
        ``[..., d_sae]`` tensor; the numbers are those of the full encode."""
        sub = idx if isinstance(idx, FeatureSubset) else None
        index = sub.idx if sub is not None else idx
        if self.elementwise:
            if sub is not None and self.cfg.architecture != "gated":
                return self.activate(x_in @ sub.W_enc + self.b_enc[index], x_in, index)
            return self.activate(self.pre_activation(x_in, index), x_in, index)
        vals, inds = self._topk_rows(x_in)
        if self.cfg.topk_relu:
            vals = torch.relu(vals)
        hit = inds.unsqueeze(-1) == index  # [..., k, n]: at most one hit per column
        return torch.where(hit, vals.unsqueeze(-1), vals.new_zeros(())).sum(-2)

    def _topk_rows(self, x_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k pre-activations of every row, encoded in chunks of at most ``TOPK_CHUNK_BYTES`` of
        pre-activation (113 rows of a 4608-wide bf16 SAE, 28 of a 18432-wide one): a prefill never
        holds its whole ``[rows, d_sae]`` pre-activation, so its peak stays under the model's own
        (a 256-row chunk of a 18432-wide SAE added 8 MiB to a batch-1 generate's peak; 28 rows, none).
        Rows are independent, so the numbers are those of one call."""
        k = int(self.cfg.k)  # type: ignore[arg-type]
        rows = x_in.reshape(-1, x_in.shape[-1])
        chunk = max(1, TOPK_CHUNK_BYTES // (self.d_sae * self.W_enc.element_size()))
        if rows.shape[0] <= chunk:  # a decode step: one row per sequence, no list, no cat
            vals, inds = torch.topk(self.pre_activation(rows), k, dim=-1, sorted=False)
        else:
            parts = [torch.topk(self.pre_activation(c), k, dim=-1, sorted=False) for c in rows.split(chunk)]
            vals, inds = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return vals.reshape(*x_in.shape[:-1], k), inds.reshape(*x_in.shape[:-1], k)

    def nudge(self, adds: tuple[Any, ...]) -> torch.Tensor:
        """``sum_i amount_i * W_dec[feature_i]`` over Add edits, computed once per tuple of edits
        (cached like :meth:`subset`): what those edits add to an activation."""
        sub = self.subset(tuple(sorted({e.feature for e in adds})))
        cache: dict[tuple, tuple[FeatureSubset, torch.Tensor]] = self.__dict__.setdefault("_nudges", {})
        hit = cache.get(adds)
        if hit is not None and hit[0] is sub:  # still the current weights
            return hit[1]
        if len(cache) >= _SUBSET_CACHE_SIZE:
            cache.clear()
        col = {f: c for c, f in enumerate(sub.features)}
        amounts = torch.zeros(len(sub.features), dtype=sub.W_dec.dtype, device=sub.W_dec.device)
        for e in adds:
            amounts[col[e.feature]] += e.amount
        vec = amounts @ sub.W_dec
        cache[adds] = (sub, vec)
        return vec

    def subset(self, features: tuple[int, ...]) -> FeatureSubset:
        """The weights of ``features`` gathered once and cached until the weights change (new
        storage or an in-place update); a handful of small tensors per distinct feature tuple."""
        if torch.is_grad_enabled() and (self.W_enc.requires_grad or self.W_dec.requires_grad):
            idx = torch.tensor(features, device=self.W_dec.device, dtype=torch.long)
            return FeatureSubset(features, idx, self.W_enc[:, idx], self.W_dec[idx])  # keeps the graph
        key = (features, self.W_enc.data_ptr(), self.W_enc._version, self.W_dec.data_ptr(), self.W_dec._version)
        cache: dict[tuple, FeatureSubset] = self.__dict__.setdefault("_subsets", {})
        sub = cache.get(key)
        if sub is None:
            if len(cache) >= _SUBSET_CACHE_SIZE:
                cache.clear()
            idx = torch.tensor(features, device=self.W_dec.device, dtype=torch.long)
            with torch.no_grad():
                sub = cache[key] = FeatureSubset(features, idx, self.W_enc[:, idx], self.W_dec[idx])
        return sub

    # ------------------------------------------------------------------ decode
    def decode(
        self,
        f: torch.Tensor,
        shift: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruction ``f @ W_dec + b_dec``, un-normalised with the input's ``shift``/``scale``
        (from :meth:`normalize`) when the SAE normalises its input. A skip transcoder adds
        ``x @ W_skip.T`` of its input ``x`` (required for it)."""
        out = self.denormalize(f @ self.W_dec + self.b_dec, shift, scale)
        if self.cfg.skip:
            if x is None:
                raise ValueError("a skip transcoder's decode needs its input x (for x @ W_skip.T)")
            out = out + x @ self.W_skip.T
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` with the input's own normalisation undone (a transcoder's output
        prediction, its skip connection included)."""
        x_n, shift, scale = self.normalize(x)
        x_in = self.encoder_input(x_n)
        f = self.activate(self.pre_activation(x_in), x_in)
        return self.decode(f, shift, scale, x=x)

    # ------------------------------------------------------------------ helpers
    def fold_input_scale(self, s: float) -> None:
        """Fold a constant input scale ``x -> s * x`` (SAELens' ``expected_average_only_in``) into
        the weights, so the SAE reads and writes activations in the model's own units."""
        with torch.no_grad():
            self.W_enc.mul_(s)
            self.W_dec.div_(s)
            self.b_dec.div_(s)
        self.cfg.metadata["folded_input_scale"] = float(s)

    def check_feature(self, i: int) -> int:
        """Validate a feature index, returning it as an int."""
        if isinstance(i, bool) or not isinstance(i, (int,)) and not (
            isinstance(i, torch.Tensor) and i.numel() == 1
        ):
            raise EditError(f"feature index must be an int, got {i!r}")
        i = int(i)
        if not 0 <= i < self.cfg.d_sae:
            raise EditError(f"feature index {i} is out of range for an SAE with d_sae={self.cfg.d_sae}")
        return i
