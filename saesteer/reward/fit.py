"""Bradley-Terry training of a SARM head on ``(prompt, chosen, rejected)`` triples.

Loss: ``-log sigmoid(r_chosen - r_rejected)`` averaged over pairs. Two modes, as SARM's:

- ``"head"``: the SAE is frozen; only the score vector learns. The backbone is frozen too, so each
  text runs through it once, its last-token features are cached, and the epochs train a logistic
  model on them: seconds on a CPU once the texts are encoded.
- ``"head+sae"``: the SAE learns with the head, with a reconstruction term
  ``rec_coef * ||x_hat - x||^2 / ||x||^2`` (SARM's normalised MSE, in the SAE's normalised space)
  on token activations sampled from the training texts, so the features stay features.

The head (and SAE) are trained on copies and written back only when training ends, so an
interrupted fit leaves the reward model as it was. Held-out pairwise accuracy (ties count one half)
is measured before the first epoch and after every epoch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from saesteer.errors import RewardError
from saesteer.reward.conversation import as_messages
from saesteer.reward.head import read_features

MODES = ("head", "head+sae")
Pair = Sequence[Any]


@dataclass
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float
    heldout_accuracy: float | None
    heldout_loss: float | None
    rec_loss: float | None = None


@dataclass
class FitReport:
    """What a fit did: mode, pair counts, per-epoch loss and accuracies, wall time."""

    mode: str
    n_train: int
    n_heldout: int
    history: list[EpochStats] = field(default_factory=list)
    encode_seconds: float = 0.0
    train_seconds: float = 0.0
    truncated_texts: int = 0

    @property
    def heldout_accuracy(self) -> float | None:
        return self.history[-1].heldout_accuracy if self.history else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heldout_accuracy"] = self.heldout_accuracy
        return d

    def __str__(self) -> str:
        rows = [f"Bradley-Terry fit ({self.mode}): {self.n_train} train pairs, {self.n_heldout} held-out; "
                f"encode {self.encode_seconds:.1f} s, train {self.train_seconds:.1f} s"]
        for s in self.history:
            ho = "" if s.heldout_accuracy is None else f", held-out acc {s.heldout_accuracy:.3f} (chance 0.5)"
            rec = "" if s.rec_loss is None else f", rec {s.rec_loss:.4f}"
            rows.append(f"  epoch {s.epoch:>3}: loss {s.loss:.4f}, train acc {s.train_accuracy:.3f}{ho}{rec}")
        return "\n".join(rows)


def check_pairs(pairs: Sequence[Pair], where: str) -> list[tuple[str | None, str, str]]:
    """Validate ``(prompt, chosen, rejected)`` triples before anything runs. The prompt may be empty
    or None; an empty chosen or rejected text raises RewardError naming the pair."""
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__len__"):
        raise RewardError(f"{where}: expected a list of (prompt, chosen, rejected) triples")
    out = []
    for n, p in enumerate(pairs):
        if isinstance(p, dict):
            p = (p.get("prompt"), p.get("chosen"), p.get("rejected"))
        if not isinstance(p, (tuple, list)) or len(p) != 3:
            raise RewardError(f"{where}[{n}]: a preference pair is (prompt, chosen, rejected), got {p!r:.80}")
        prompt, chosen, rejected = p
        for name, t in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(t, str) or not t.strip():
                raise RewardError(f"{where}[{n}]: the {name} response is empty (or not a string): {t!r:.60}")
        if prompt is not None and not isinstance(prompt, str):
            raise RewardError(f"{where}[{n}]: the prompt must be a string or None, got {type(prompt).__name__}")
        out.append((prompt, chosen, rejected))
    if not out:
        raise RewardError(f"{where}: no preference pairs")
    return out


@dataclass
class EncodedPairs:
    """The backbone's activations for a set of pairs: ``last [N, d]`` (one row per distinct text,
    at its last token), ``chosen``/``rejected [P]`` row indices, and for ``"head+sae"`` a sample of
    token activations ``tokens [M, d]`` for the reconstruction term."""

    last: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    tokens: torch.Tensor | None = None
    truncated: int = 0

    def __len__(self) -> int:
        return int(self.chosen.shape[0])


def encode_pairs(rm: Any, pairs: list[tuple[str | None, str, str]], *, batch_size: int = 16,
                 tokens_per_text: int = 0, progress: bool = True, seed: int = 0, desc: str = "backbone") -> EncodedPairs:
    """Run every distinct text of ``pairs`` through the truncated backbone once (shortest first, to
    pad little). Cost: one backbone forward per text up to the hook."""
    texts: dict[str, int] = {}
    idx_c, idx_r = [], []
    for n, (prompt, chosen, rejected) in enumerate(pairs):
        for resp, idx in ((chosen, idx_c), (rejected, idx_r)):
            t = rm.render(as_messages(prompt, resp), where=f"pair {n}")
            idx.append(texts.setdefault(t, len(texts)))
    order = sorted(texts, key=len)
    rows: dict[int, torch.Tensor] = {}
    toks: list[torch.Tensor] = []
    g = torch.Generator().manual_seed(seed)
    truncated = 0
    bar = tqdm(total=len(order), desc=desc, unit="text", disable=not progress, leave=False)
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        batch = rm.tokenize(chunk)
        truncated += sum(1 for c in batch.truncated if c)
        h = rm.backbone.hidden_states(batch.input_ids, batch.attention_mask).cpu()
        last = batch.attention_mask.sum(1) - 1  # right-padded
        for b, t in enumerate(chunk):
            rows[texts[t]] = h[b, last[b]]
            if tokens_per_text:
                valid = h[b, : int(last[b]) + 1]
                pick = torch.randperm(valid.shape[0], generator=g)[:tokens_per_text]
                toks.append(valid[pick])
        bar.update(len(chunk))
    bar.close()
    last = torch.stack([rows[i] for i in range(len(texts))])
    return EncodedPairs(last, torch.tensor(idx_c), torch.tensor(idx_r),
                        torch.cat(toks) if toks else None, truncated)


def _accuracy(r: torch.Tensor, data: EncodedPairs) -> tuple[float, float]:
    m = r[data.chosen] - r[data.rejected]
    acc = ((m > 0).double() + 0.5 * (m == 0).double()).mean().item()
    return acc, float(-F.logsigmoid(m).mean())


def _rec_loss(sae: Any, x: torch.Tensor) -> torch.Tensor:
    """SARM's normalised MSE, in the SAE's normalised input space."""
    x_n, _, _ = sae.normalize(x)
    x_in = sae.encoder_input(x_n)
    f = sae.activate(sae.pre_activation(x_in), x_in)
    x_hat = sae.decode(f)  # no shift/scale: stays in the normalised space
    return (((x_hat - x_n) ** 2).mean(-1) / (x_n ** 2).mean(-1).clamp_min(1e-12)).mean()


def train(head: Any, data: EncodedPairs, heldout: EncodedPairs | None, *, mode: str = "head", epochs: int = 20,
          lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, rec_coef: float = 1.0,
          rec_batch: int = 512, seed: int = 0, progress: bool = True) -> tuple[list[EpochStats], torch.Tensor, Any]:
    """Train copies of the head weight (and SAE, in ``"head+sae"``) on encoded pairs. Returns the
    per-epoch stats, the trained ``[d_sae]`` weight and the trained SAE (None in ``"head"``).
    Cost per epoch in ``"head"``: two ``[P, d_sae]`` gathers and dot products; in ``"head+sae"``:
    an SAE forward and backward on every text and ``rec_batch`` tokens per step."""
    if mode not in MODES:
        raise RewardError(f"mode must be one of {MODES}, got {mode!r}")
    g = torch.Generator().manual_seed(seed)
    w = head.weight.detach().clone().float().requires_grad_(True)
    sae = None
    params = [w]
    if mode == "head+sae":
        sae = copy.deepcopy(head.sae).float().train()
        sae.requires_grad_(True)
        params += list(sae.parameters())
        if data.tokens is None:
            raise RewardError("'head+sae' needs token activations: encode with tokens_per_text > 0")

    def feats(last: torch.Tensor) -> torch.Tensor:
        return read_features(sae if sae is not None else head.sae, last, head.use_topk)

    with torch.no_grad():
        cache_tr = feats(data.last).float() if sae is None else None
        cache_ho = feats(heldout.last).float() if (sae is None and heldout is not None) else None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history: list[EpochStats] = []

    def evaluate(epoch: int, loss: float, rec: float | None) -> EpochStats:
        with torch.no_grad():
            r_tr = (cache_tr if cache_tr is not None else feats(data.last).float()) @ w
            acc_tr, loss_tr = _accuracy(r_tr, data)
            acc_ho = loss_ho = None
            if heldout is not None:
                r_ho = (cache_ho if cache_ho is not None else feats(heldout.last).float()) @ w
                acc_ho, loss_ho = _accuracy(r_ho, heldout)
        s = EpochStats(epoch, loss if epoch else loss_tr, acc_tr, acc_ho, loss_ho, rec)
        history.append(s)
        return s

    evaluate(0, 0.0, None)
    P = len(data)
    bar = tqdm(range(1, epochs + 1), desc=f"fit ({mode})", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        perm = torch.randperm(P, generator=g)
        total, recs, n = 0.0, [], 0
        for s in range(0, P, batch_size):
            b = perm[s:s + batch_size]
            if cache_tr is not None:
                fc, fr = cache_tr[data.chosen[b]], cache_tr[data.rejected[b]]
            else:
                fc, fr = feats(data.last[data.chosen[b]]).float(), feats(data.last[data.rejected[b]]).float()
            loss = -F.logsigmoid(fc @ w - fr @ w).mean()
            total += float(loss.detach()) * len(b)
            if sae is not None:
                tok = data.tokens[torch.randint(data.tokens.shape[0], (rec_batch,), generator=g)]
                rec = _rec_loss(sae, tok)
                recs.append(float(rec.detach()))
                loss = loss + rec_coef * rec
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(b)
        st = evaluate(epoch, total / max(n, 1), sum(recs) / len(recs) if recs else None)
        post = {"loss": f"{st.loss:.4f}", "train": f"{st.train_accuracy:.3f}"}
        if st.heldout_accuracy is not None:
            post["held-out"] = f"{st.heldout_accuracy:.3f}"
        bar.set_postfix(post)
        if progress:
            tqdm.write(f"epoch {epoch}: loss {st.loss:.4f}, train acc {st.train_accuracy:.3f}"
                       + ("" if st.heldout_accuracy is None else f", held-out acc {st.heldout_accuracy:.3f}"))
    if sae is not None:
        sae.eval().requires_grad_(False)
    return history, w.detach(), sae


def split_heldout(pairs: list, heldout: Any, seed: int) -> tuple[list, list]:
    """``heldout`` as a fraction in ``[0, 1)`` of ``pairs`` (seeded shuffle) or a list of pairs."""
    if heldout is None or (isinstance(heldout, (int, float)) and not isinstance(heldout, bool) and heldout == 0):
        return pairs, []
    if isinstance(heldout, (int, float)) and not isinstance(heldout, bool):
        if not 0 < heldout < 1:
            raise RewardError(f"heldout must be a fraction in [0, 1) or a list of pairs, got {heldout!r}")
        n = int(round(len(pairs) * heldout))
        if n < 1 or n >= len(pairs):
            raise RewardError(f"heldout={heldout} of {len(pairs)} pairs leaves no train or no held-out pair")
        perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
        return [pairs[i] for i in perm[n:]], [pairs[i] for i in perm[:n]]
    return pairs, check_pairs(heldout, "heldout")


def fit(rm: Any, pairs: Sequence[Pair], *, heldout: Any = 0.1, mode: str = "head", epochs: int = 20,
        lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0, rec_coef: float = 1.0,
        tokens_per_text: int = 16, encode_batch_size: int = 16, seed: int = 0, progress: bool = True) -> FitReport:
    """Validate, encode, train, write back (see the module docstring); returns the report."""
    if mode not in MODES:
        raise RewardError(f"mode must be one of {MODES}, got {mode!r}")
    checked = check_pairs(pairs, "pairs")
    train_pairs, ho_pairs = split_heldout(checked, heldout, seed)
    t0 = time.perf_counter()
    keep = tokens_per_text if mode == "head+sae" else 0
    data = encode_pairs(rm, train_pairs, batch_size=encode_batch_size, tokens_per_text=keep, progress=progress,
                        seed=seed, desc="backbone (train)")
    ho = encode_pairs(rm, ho_pairs, batch_size=encode_batch_size, progress=progress, seed=seed,
                      desc="backbone (held-out)") if ho_pairs else None
    t1 = time.perf_counter()
    history, w, sae = train(rm.head, data, ho, mode=mode, epochs=epochs, lr=lr, batch_size=batch_size,
                            weight_decay=weight_decay, rec_coef=rec_coef, seed=seed, progress=progress)
    t2 = time.perf_counter()
    with torch.no_grad():
        if sae is not None:
            rm.head.sae.load_state_dict(sae.to(rm.head.sae.dtype).state_dict())
        rm.head.score.weight.copy_(w.to(rm.head.score.weight.dtype).unsqueeze(0))
    return FitReport(mode, len(train_pairs), len(ho_pairs), history, t1 - t0, t2 - t1,
                     data.truncated + (ho.truncated if ho else 0))
