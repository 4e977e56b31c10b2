"""Requests that arrive together are served in one batched, steered ``generate``.

One worker thread owns the model. It takes the first waiting request, gathers every request that
arrives within ``window_s`` (100 ms by default: a request that finds the worker idle waits that long
for company; requests queued behind a running batch form the next one) up to ``max_batch`` with the
same sampling settings, left-pads their
prompts into one batch and runs one ``generate`` with per-row edits (``edits=[row0, row1, ...]``):
each row is steered exactly as it would be alone. Greedy rows give the tokens the request alone
would give; a sampled request with a ``seed`` runs alone, so its seed means what it says. Every
decoding step's tokens go to each request's queue as they arrive (that is what streaming reads);
a request that asked for fewer tokens than its batch-mates stops taking them at its own
``max_tokens`` (greedy: the same tokens as a run of that length alone).

A batch that fails is re-run one request at a time, so a request that fails fails alone.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from saesteer.edits import EditSet

_DONE = object()


@dataclass
class Job:
    """One request: its prompt tokens, edits and sampling settings; ``out`` receives
    ``("tokens", [id, ...])`` after each step (with ``("logprobs", [...])`` when asked), then
    ``("done", finish_reason)`` or ``("error", exception)``."""

    prompt_ids: list[int]
    edits: EditSet
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None
    out: "queue.Queue[tuple[str, Any]]" = field(default_factory=queue.Queue)
    produced: int = 0
    finished: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def group_key(self) -> tuple:
        """Requests with the same key can share a batch."""
        if self.greedy:
            return ("greedy",)
        if self.seed is not None:
            return ("seeded", id(self))  # alone: its seed reproduces its own sampling
        return ("sample", self.temperature, self.top_p)


class Batcher:
    """The worker that serves :class:`Job` s in batches on ``model`` (a SteeredModel)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 16, window_s: float = 0.1) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.window_s = max(1, int(max_batch)), window_s
        self._queue: "queue.Queue[Job]" = queue.Queue()
        self._pending: list[Job] = []
        self.batches: list[int] = []  # sizes of the batches run, for tests and the benchmark
        self._thread = threading.Thread(target=self._loop, name="saesteer-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self._queue.put(job)
        return job

    # ------------------------------------------------------------------ worker
    def _take(self) -> list[Job]:
        first = self._pending.pop(0) if self._pending else self._queue.get()
        group, key = [first], first.group_key()
        deadline = time.monotonic() + self.window_s
        while len(group) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=max(left, 0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            (group if job.group_key() == key and len(group) < self.max_batch else self._pending).append(job)
        # earlier arrivals of the same kind that waited in _pending join too
        for job in list(self._pending):
            if len(group) >= self.max_batch:
                break
            if job.group_key() == key:
                self._pending.remove(job)
                group.append(job)
        return group

    def _loop(self) -> None:
        while True:
            group = self._take()
            try:
                self._run(group)
            except Exception as e:  # noqa: BLE001 - isolate: one at a time, each fails alone
                if len(group) == 1:
                    self._fail(group[0], e)
                    continue
                for job in group:
                    if job.finished:
                        continue
                    try:
                        self._run([job])
                    except Exception as e1:  # noqa: BLE001
                        self._fail(job, e1)

    @staticmethod
    def _fail(job: Job, e: BaseException) -> None:
        if not job.finished:
            job.finished = True
            job.out.put(("error", e))

    def _run(self, group: list[Job]) -> None:
        from transformers import LogitsProcessor

        self.batches.append(len(group))
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        T = max(len(j.prompt_ids) for j in group)
        ids = torch.full((len(group), T), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, j in enumerate(group):
            ids[r, T - len(j.prompt_ids):] = torch.tensor(j.prompt_ids)
            mask[r, T - len(j.prompt_ids):] = 1
        dev = next((p.device for p in self.model.model.parameters() if p.device.type != "meta"), torch.device("cpu"))
        eos = tok.eos_token_id
        head = group[0]

        class Step(LogitsProcessor):
            """Hands each step's chosen tokens (and log-probs) to the jobs: called with the
            sequences so far, so the token chosen at step t arrives with the call of step t+1."""

            def __init__(self) -> None:
                self.last: torch.Tensor | None = None

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                self.flush(input_ids)
                self.last = scores.float().log_softmax(-1) if any(j.logprobs is not None for j in group) else None
                return scores

            def flush(self, input_ids: torch.Tensor) -> None:
                if input_ids.shape[1] <= T:
                    return
                chosen = input_ids[:, -1].tolist()
                for r, j in enumerate(group):
                    if j.finished:
                        continue
                    j.produced += 1
                    if j.logprobs is not None and self.last is not None:  # before its token: read with it
                        lp = self.last[r]
                        top = lp.topk(j.logprobs) if j.logprobs else None
                        j.out.put(("logprobs", [(chosen[r], float(lp[chosen[r]]), [] if top is None else
                                                 list(zip(top.indices.tolist(), top.values.tolist())))]))
                    j.out.put(("tokens", [chosen[r]]))
                    if chosen[r] == eos:
                        j.finished = True
                        j.out.put(("done", "stop"))
                    elif j.produced >= j.max_tokens:
                        j.finished = True
                        j.out.put(("done", "length"))

        step = Step()
        kw: dict[str, Any] = dict(max_new_tokens=max(j.max_tokens for j in group), pad_token_id=pad,
                                  logits_processor=[step], return_dict_in_generate=True)
        if head.greedy:
            kw["do_sample"] = False
        else:
            kw.update(do_sample=True, temperature=head.temperature, top_p=head.top_p)
            if head.seed is not None:
                torch.manual_seed(head.seed)
        edits = [j.edits if j.edits else None for j in group]
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), edits=edits, **kw)
        step.flush(out.sequences)  # the last step's token comes with no further call
        for j in group:
            if not j.finished:
                j.finished = True
                j.out.put(("done", "length"))
