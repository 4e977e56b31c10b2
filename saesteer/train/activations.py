"""Activations for SAE training: pack text into fixed-length chunks, run the host model only up to the
hook, and hand out shuffled ``[n, d_in]`` float32 blocks with bounded memory.

>>> src = ActivationSource(model, "blocks.6.hook_resid_post", texts, tokenizer=tok, context_length=256)
>>> for block in src:            # [n, d_in] float32 blocks, shuffled across many sequences
...     ...

Costs: one forward per ``model_batch`` chunks, cut short right after the hooked module (a tap with
``stop=True``, :func:`saesteer.runtime.taps.tap`), so layers after the hook cost nothing. The shuffle buffer
holds at most ``buffer_tokens`` activations (plus one model batch).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from saesteer.runtime.taps import require, tap


def capture_activations(
    model: nn.Module,
    hook: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    stop_early: bool = True,
) -> torch.Tensor:
    """The activation ``[B, T, d]`` at ``hook`` for one batch of token ids (no gradient).

    With ``stop_early`` the forward ends at the hooked module (cost: the layers up to the hook);
    without it the whole model runs (used by tests to check the two agree). The capturing hook is
    put first, so it sees the module's own tensor, and is removed before returning, also on error.
    """
    from saesteer import adapters

    point = adapters.resolve(model, hook)
    kwargs: dict[str, Any] = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if getattr(model, "config", None) is not None and hasattr(model.config, "use_cache"):
        kwargs["use_cache"] = False
    with tap(point, stop=stop_early, prepend=True) as caught, torch.no_grad():
        model(**kwargs)
    return require(caught, f"{hook} ({point.path})")


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def pack_tokens(
    texts: Iterable[str | Sequence[int]],
    context_length: int,
    *,
    tokenizer: Any = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> Iterator[torch.Tensor]:
    """Tokenize documents and pack them into ``[context_length]`` int64 chunks.

    Documents are joined with ``eos_token_id`` (when given); each chunk starts with ``bos_token_id``
    (when given). A document may be a string (tokenized without special tokens) or a sequence of
    token ids. The final partial chunk is dropped. Deterministic; holds one document at a time.
    """
    body = context_length - (1 if bos_token_id is not None else 0)
    if body < 1:
        raise ValueError(f"context_length {context_length} leaves no room for text")
    buf: list[int] = []
    start = 0
    for doc in texts:
        if isinstance(doc, str):
            if tokenizer is None:
                raise ValueError("documents are strings but no tokenizer was given")
            ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        else:
            ids = [int(t) for t in doc]
        buf.extend(ids)
        if eos_token_id is not None:
            buf.append(eos_token_id)
        while len(buf) - start >= body:
            piece = buf[start:start + body]
            start += body
            yield torch.tensor(([bos_token_id] if bos_token_id is not None else []) + piece, dtype=torch.long)
        if start > 1 << 16:  # compact now and then, not at every chunk
            del buf[:start]
            start = 0


def shuffle_blocks(
    blocks: Iterable[torch.Tensor], buffer_tokens: int, generator: torch.Generator | None
) -> Iterator[torch.Tensor]:
    """Shuffle rows across blocks with a buffer of at most ``buffer_tokens`` rows (plus one block).

    When the buffer is full it is permuted and its first half handed out; the rest waits for new
    rows. At the end what is left is permuted and handed out. ``generator=None`` or a buffer of
    zero passes the blocks through unshuffled. Deterministic for a seeded generator.
    """
    if generator is None or buffer_tokens <= 0:
        yield from blocks
        return
    parts: list[torch.Tensor] = []
    held = 0
    for block in blocks:
        parts.append(block)
        held += block.shape[0]
        if held >= buffer_tokens:
            buf = torch.cat(parts)
            buf = buf[torch.randperm(buf.shape[0], generator=generator)]
            out = buf.shape[0] // 2
            yield buf[:out]
            parts, held = [buf[out:]], buf.shape[0] - out
    if held:
        buf = torch.cat(parts)
        yield buf[torch.randperm(buf.shape[0], generator=generator)]


def rebatch(blocks: Iterable[torch.Tensor], batch_tokens: int) -> Iterator[torch.Tensor]:
    """Cut blocks of any length into ``[batch_tokens, d_in]`` batches; a final partial batch is dropped."""
    parts: list[torch.Tensor] = []
    held = 0
    for block in blocks:
        if block.ndim != 2:
            raise ValueError(f"activation blocks must be [n, d_in]; got shape {tuple(block.shape)}")
        parts.append(block)
        held += block.shape[0]
        if held >= batch_tokens:
            buf = torch.cat(parts) if len(parts) > 1 else parts[0]
            n_full = held // batch_tokens * batch_tokens
            for i in range(0, n_full, batch_tokens):
                yield buf[i:i + batch_tokens]
            parts = [buf[n_full:]] if held > n_full else []
            held -= n_full


def _auto_prepend_bos(tokenizer: Any) -> bool:
    """True when the tokenizer itself puts its BOS token first (Llama-2/Gemma style)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos is None:
        return False
    try:
        ids = tokenizer("a")["input_ids"]
    except Exception:  # noqa: BLE001 - an odd tokenizer: do not guess
        return False
    return bool(ids) and ids[0] == bos


class ActivationSource:
    """Activations of ``model`` at ``hook`` on packed text, as shuffled float32 ``[n, d_in]`` blocks.

    ``texts``: documents (strings, or token-id sequences when there is no tokenizer); iterate it
    again for every epoch (a list or a re-iterable reader; a one-shot generator gives one epoch).
    Blocks have any length (the trainer cuts its own batches) unless ``batch_tokens`` is given.
    ``skip_chunks`` packed chunks are left out at the start (held out for evaluation, see
    :meth:`chunks`). ``drop_first`` drops position 0 of every chunk (BOS / attention sink, whose norm
    is far from the rest). ``prepend_bos=None`` does what the tokenizer does by default.

    Cost per block: one forward of ``model_batch`` chunks up to the hook. Memory: the shuffle buffer
    (``buffer_tokens`` x ``d_in`` floats) plus one model batch.
    """

    def __init__(
        self,
        model: nn.Module,
        hook: str,
        texts: Iterable[str | Sequence[int]],
        *,
        tokenizer: Any = None,
        context_length: int = 128,
        model_batch: int = 8,
        buffer_tokens: int = 1 << 16,
        drop_first: bool = True,
        prepend_bos: bool | None = None,
        skip_chunks: int = 0,
        seed: int = 0,
        model_name: str | None = None,
        batch_tokens: int | None = None,
    ) -> None:
        from saesteer import adapters

        self.model = model
        self.point = adapters.resolve(model, hook)
        self.hook = self.point.name
        self.texts = texts
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.model_batch = int(model_batch)
        self.buffer_tokens = int(buffer_tokens)
        self.drop_first = bool(drop_first)
        if prepend_bos is None:
            prepend_bos = _auto_prepend_bos(tokenizer)
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None) if prepend_bos else None
        self.eos_token_id = getattr(tokenizer, "eos_token_id", None)
        self.skip_chunks = int(skip_chunks)
        self.seed = int(seed)
        self.batch_tokens = batch_tokens
        cfg = getattr(model, "config", None)
        self.model_name = model_name or getattr(cfg, "name_or_path", None) or type(model).__name__

    @property
    def d_in(self) -> int | None:
        """Width of the hooked tensor when the adapter knows it (None: known after the first block)."""
        return self.point.width

    def chunks(self, *, start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
        """Packed ``[context_length]`` token chunks ``start..stop`` of the text (``skip_chunks`` not
        applied: ``chunks(stop=n)`` are the chunks a source with ``skip_chunks=n`` leaves out)."""
        packed = pack_tokens(self.texts, self.context_length, tokenizer=self.tokenizer,
                             bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id)
        return itertools.islice(packed, start, stop)

    def raw_blocks(self) -> Iterator[torch.Tensor]:
        """Unshuffled activations, one ``[model_batch * T', d_in]`` float32 CPU block per forward."""
        device = _model_device(self.model)
        chunks = self.chunks(start=self.skip_chunks)
        while True:
            group = list(itertools.islice(chunks, self.model_batch))
            if not group:
                return
            ids = torch.stack(group).to(device)
            x = capture_activations(self.model, self.hook, ids)
            if self.drop_first:
                x = x[:, 1:]
            yield x.reshape(-1, x.shape[-1]).to("cpu", torch.float32)

    def iter_epoch(self, epoch: int = 0) -> Iterator[torch.Tensor]:
        """Shuffled blocks for one pass over the text (cut to ``[batch_tokens, d_in]`` batches when
        ``batch_tokens`` is set); the shuffle is seeded by ``(seed, epoch)``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        blocks = shuffle_blocks(self.raw_blocks(), self.buffer_tokens, g)
        return rebatch(blocks, self.batch_tokens) if self.batch_tokens else blocks

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.iter_epoch(0)

    def cache(self, folder: str | Path, *, max_tokens: int | None = None, shard_tokens: int = 1 << 18,
              dtype: torch.dtype = torch.float32) -> "Any":
        """Write the (unshuffled) activations to ``folder`` as safetensors shards and return a
        :class:`~saesteer.train.cache.CachedActivations` over them. Cost: one pass of the model over
        the text (up to ``max_tokens`` activations); disk: ``tokens x d_in x dtype size``."""
        from saesteer.train.cache import CachedActivations, write_cache

        meta = {"hook_name": self.hook, "model_name": self.model_name, "context_length": self.context_length,
                "drop_first": self.drop_first, "skip_chunks": self.skip_chunks}
        write_cache(self.raw_blocks(), folder, max_tokens=max_tokens, shard_tokens=shard_tokens, dtype=dtype,
                    meta=meta)
        return CachedActivations(folder, buffer_tokens=self.buffer_tokens, seed=self.seed)
