"""The one reader of vLLM's model-runner state: which request owns which rows of the flat token batch
a forward sees, and where each of those tokens sits in its request.

vLLM runs every scheduled token of every request as one flat ``[num_tokens, d]`` batch, requests in
``runner.input_batch.req_ids`` order, request ``i`` owning rows ``query_start_loc[i]:query_start_loc[i+1]``
(set by the runner's ``_prepare_inputs`` before the forward). The absolute position of each token is the
``positions`` argument of the model's forward. ``runner.requests[req_id]`` holds the request's
``sampling_params`` (with ``extra_args``) and ``prompt_token_ids``. Chunked prefill and decode steps are
read the same way: a chunk is rows of one request whose positions start past zero.

vLLM internals read here (check them on a version bump): ``runner.input_batch.req_ids``,
``runner.input_batch.num_reqs``, ``runner.query_start_loc.cpu``, ``runner.requests[id].sampling_params
.extra_args``, ``runner.requests[id].num_prompt_tokens``, and the ``positions`` keyword of the model's
forward. Cost: a Python loop over the requests of the step (not over tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: the key of saesteer's object in ``SamplingParams.extra_args``
EXTRA_KEY = "saesteer"


@dataclass(frozen=True)
class RequestRows:
    """One request's rows ``[start, stop)`` in this forward's flat batch, its prompt length, and its
    ``extra_args["saesteer"]`` object (None: an unsteered request)."""

    req_id: str
    start: int
    stop: int
    prompt_len: int
    spec: Any


def positions_of(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The ``positions`` tensor of a vLLM model forward call (keyword, or the second positional)."""
    pos = kwargs.get("positions")
    if pos is None and len(args) >= 2:
        pos = args[1]
    return pos if isinstance(pos, torch.Tensor) else None


def step_rows(runner: Any) -> list[RequestRows]:
    """The requests of the forward about to run, in row order, with their steering objects."""
    batch = runner.input_batch
    n = batch.num_reqs
    starts = runner.query_start_loc.cpu[: n + 1].tolist()
    out: list[RequestRows] = []
    for i, req_id in enumerate(batch.req_ids[:n]):
        state = runner.requests[req_id]
        params = state.sampling_params
        extra = getattr(params, "extra_args", None) or {}
        out.append(RequestRows(req_id, int(starts[i]), int(starts[i + 1]), int(state.num_prompt_tokens),
                               extra.get(EXTRA_KEY)))
    return out
