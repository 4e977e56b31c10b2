"""An on-disk activation buffer: activations written once as safetensors shards, read back shuffled for
as many epochs (and runs) as wanted.

Layout of the folder::

    meta.json                  {"d_in", "n_tokens", "dtype", "shards": [{"file", "n"}], "complete": true, ...}
    shard_00000.safetensors    one tensor "activations" [n, d_in]
    ...

``meta.json`` is written last, so a folder whose writing was cut short is never mistaken for a
complete cache. Shards hold plain tensors only (no pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from saesteer.train.activations import rebatch, shuffle_blocks

META = "meta.json"
KEY = "activations"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def write_cache(
    blocks: Iterable[torch.Tensor],
    folder: str | os.PathLike,
    *,
    max_tokens: int | None = None,
    shard_tokens: int = 1 << 18,
    dtype: torch.dtype = torch.float32,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``[n, d_in]`` blocks to ``folder`` in shards of ``shard_tokens`` rows, stored as ``dtype``.

    Stops after ``max_tokens`` rows. Memory: one shard. Returns the folder. An existing cache in the
    folder is replaced (its old shards are removed first).
    """
    from safetensors.torch import save_file

    name = {v: k for k, v in _DTYPES.items()}.get(dtype)
    if name is None:
        raise ValueError(f"cache dtype must be one of {', '.join(_DTYPES)}; got {dtype}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)
    for old in out.glob("shard_*.safetensors"):
        old.unlink()
    shards: list[dict[str, Any]] = []
    pending: list[torch.Tensor] = []
    held = total = 0
    d_in: int | None = None

    def flush(rows: torch.Tensor) -> None:
        fname = f"shard_{len(shards):05d}.safetensors"
        save_file({KEY: rows.to(dtype).contiguous()}, str(out / fname))
        shards.append({"file": fname, "n": int(rows.shape[0])})

    for block in blocks:
        if max_tokens is not None and total >= max_tokens:
            break
        if max_tokens is not None:
            block = block[: max_tokens - total]
        d_in = int(block.shape[-1])
        pending.append(block)
        held += block.shape[0]
        total += block.shape[0]
        while held >= shard_tokens:
            buf = torch.cat(pending)
            flush(buf[:shard_tokens])
            pending, held = [buf[shard_tokens:]], buf.shape[0] - shard_tokens
    if held:
        flush(torch.cat(pending))
    if d_in is None:
        raise ValueError("no activations to cache (is the text shorter than one context length?)")
    info = dict(meta or {})
    info.update({"d_in": d_in, "n_tokens": total, "dtype": name, "shards": shards, "complete": True})
    (out / META).write_text(json.dumps(info, indent=1))
    return out


def is_complete_cache(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a finished cache (its ``meta.json`` says so)."""
    p = Path(folder) / META
    if not p.is_file():
        return False
    try:
        return bool(json.loads(p.read_text()).get("complete"))
    except ValueError:
        return False


class CachedActivations:
    """Shuffled float32 blocks read from a cache folder written by :func:`write_cache`.

    Each epoch visits the shards in a seeded random order and shuffles rows across shards with a
    buffer of ``buffer_tokens`` rows. Cost: reading the shards once per epoch; memory: the buffer
    plus one shard.
    """

    def __init__(self, folder: str | os.PathLike, *, buffer_tokens: int = 1 << 18, seed: int = 0,
                 shuffle: bool = True, batch_tokens: int | None = None) -> None:
        self.folder = Path(folder)
        if not is_complete_cache(self.folder):
            raise FileNotFoundError(f"{self.folder} holds no complete activation cache ({META} missing)")
        self.meta: dict[str, Any] = json.loads((self.folder / META).read_text())
        self.buffer_tokens = int(buffer_tokens)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.batch_tokens = batch_tokens
        self.hook = self.meta.get("hook_name")
        self.model_name = self.meta.get("model_name")

    @property
    def d_in(self) -> int:
        return int(self.meta["d_in"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    def read_shard(self, i: int) -> torch.Tensor:
        """Shard ``i`` as a float32 ``[n, d_in]`` tensor."""
        from safetensors.torch import load_file

        return load_file(str(self.folder / self.meta["shards"][i]["file"]))[KEY].to(torch.float32)

    def iter_epoch(self, epoch: int = 0) -> Iterator[torch.Tensor]:
        """Blocks of one pass over the cache (cut to ``[batch_tokens, d_in]`` batches when
        ``batch_tokens`` is set); shard order and row shuffle seeded by ``(seed, epoch)``."""
        n = len(self.meta["shards"])
        if not self.shuffle:
            blocks: Iterator[torch.Tensor] = (self.read_shard(i) for i in range(n))
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g).tolist()
            blocks = shuffle_blocks((self.read_shard(i) for i in order), self.buffer_tokens, g)
        return rebatch(blocks, self.batch_tokens) if self.batch_tokens else blocks

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.iter_epoch(0)
