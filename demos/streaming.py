"""Stream every row of one batched, steered ``generate`` as its tokens arrive.

transformers' ``TextIteratorStreamer`` takes one row; the demo runs the unsteered and the steered
row in one forward (``edits=[None, edits]``), so :class:`RowStreamer` keeps the new tokens of all
rows and :func:`stream_rows` yields the decoded text of each row after every decoding step.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from saesteer.errors import SaesteerError


class RowStreamer(BaseStreamer):
    """Receives ``generate``'s tokens (the prompt first, then one token per row per step) and hands
    each step's tokens to a reader through a queue. Costs one ``tolist`` per step."""

    def __init__(self) -> None:
        self._queue: queue.Queue[list[int] | None] = queue.Queue()
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # generate hands over the prompt ids first
            self._seen_prompt = True
            return
        self._queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self._queue.put(None)

    def get(self, timeout: float) -> list[int] | None:
        """The next step's tokens, one per row, or None when generation ended."""
        return self._queue.get(timeout=timeout)


class _StopWhenSet(StoppingCriteria):
    """Stops generation as soon as ``event`` is set (the visitor left or pressed generate again)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class RowsProgress:
    """The state of a streamed generation after one step.

    ``texts[r]`` is row ``r``'s continuation so far, decoded exactly as
    ``tokenizer.decode(new_ids, skip_special_tokens=True)`` decodes the finished output;
    ``sequences`` (prompt and new tokens, ``[rows, T]``) is set on the last update only.
    """

    texts: list[str]
    new_tokens: int
    done: bool = False
    sequences: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    prompt_len: int = 0
    new_ids: list[list[int]] = field(default_factory=list)


def chat_text(tokenizer: Any, prompt: str, chat: bool = True) -> str:
    """The text the model reads: the prompt in the tokenizer's chat template when it has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def stream_rows(model: Any, tokenizer: Any, text: str, row_edits: Sequence[Any], *, max_new_tokens: int,
                step_timeout: float = 300.0) -> Iterator[RowsProgress]:
    """Greedy ``generate`` of ``text`` once per entry of ``row_edits`` (one batched forward; ``None``
    is an unsteered row), yielding every row's text after each step. The edits are checked before
    the model runs. Closing the iterator stops generation at the next step.

    Cost: one batched greedy generation of ``max_new_tokens`` tokens, run in a worker thread
    (saesteer's edits belong to that call, so concurrent visitors never share them).
    """
    rows = len(row_edits)
    enc = tokenizer([text] * rows, return_tensors="pt", padding=True)
    model.plan(list(row_edits))  # bad edits fail here, before the model runs
    streamer, stop = RowStreamer(), threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["out"] = model.generate(
                **enc, edits=list(row_edits), max_new_tokens=max_new_tokens, do_sample=False,
                streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)]),
                pad_token_id=tokenizer.pad_token_id)
        except BaseException as e:  # noqa: BLE001 - handed to the reader below
            result["error"] = e
            streamer.end()

    worker = threading.Thread(target=run, name="saesteer-demo-generate", daemon=True)
    new: list[list[int]] = [[] for _ in range(rows)]
    worker.start()
    try:
        while True:
            try:
                step = streamer.get(timeout=step_timeout)
            except queue.Empty:
                raise SaesteerError(f"generation stalled: no token in {step_timeout:.0f} s") from None
            if step is None:
                break
            for r, t in enumerate(step):
                new[r].append(t)
            yield RowsProgress(_decode(tokenizer, new), len(new[0]), new_ids=new)
        worker.join()
        if "error" in result:
            raise result["error"]
        out = result["out"]
        n = enc["input_ids"].shape[1]
        new = [out[r, n:].tolist() for r in range(rows)]
        yield RowsProgress(_decode(tokenizer, new), len(new[0]), done=True, sequences=out,
                           attention_mask=enc["attention_mask"], prompt_len=n, new_ids=new)
    finally:
        stop.set()
        worker.join()


def _decode(tokenizer: Any, rows: list[list[int]]) -> list[str]:
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in rows]
