"""What ``SteeredModel.features`` returns: the top features of every token, with values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch


@dataclass
class FeatureActivations:
    """Top-``k`` SAE features per token at one hook.

    ``values``/``indices`` are ``[B, T, k]`` (sorted, largest first); ``valid [B, T]`` is False on
    padding; ``tokens`` holds the decoded token strings per row when a tokenizer was given;
    ``labels`` maps feature index to a label when the SAE has them.
    """

    hook: str
    values: torch.Tensor
    indices: torch.Tensor
    valid: torch.Tensor
    tokens: list[list[str]] | None = None
    labels: Mapping[int, str] | None = field(default=None, repr=False)

    def at(self, row: int, position: int) -> list[tuple[int, float]]:
        """``[(feature, value), ...]`` of the active top features at one token (zeros dropped)."""
        v, i = self.values[row, position], self.indices[row, position]
        return [(int(a), float(b)) for a, b in zip(i, v) if b > 0]

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per non-pad token: row, position, token, and its active features."""
        out = []
        B, T = self.valid.shape
        for r in range(B):
            for t in range(T):
                if not self.valid[r, t]:
                    continue
                feats = [
                    {"feature": f, "value": v, **({"label": self.labels.get(f)} if self.labels else {})}
                    for f, v in self.at(r, t)
                ]
                tok = self.tokens[r][t] if self.tokens else None
                out.append({"row": r, "position": t, "token": tok, "features": feats})
        return out

    def __str__(self) -> str:
        lines = [f"features at {self.hook}:"]
        for rec in self.to_records():
            shown = ", ".join(
                f"{d['feature']}={d['value']:.2f}" + (f" ({d['label']})" if d.get("label") else "")
                for d in rec["features"][:5]
            )
            lines.append(f"  [{rec['row']},{rec['position']:>3}] {rec['token']!r:>14}  {shown}")
        return "\n".join(lines)


def decode_tokens(tokenizer: Any, input_ids: torch.Tensor) -> list[list[str]]:
    """Each token of each row as text (via ``tokenizer.convert_ids_to_tokens`` when present)."""
    rows: Sequence[Sequence[int]] = input_ids.tolist()
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return [list(tokenizer.convert_ids_to_tokens(list(r))) for r in rows]
    return [[tokenizer.decode([t]) for t in r] for r in rows]
