"""The one reader of a host's forward arguments, on what each transformers version passes."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from saesteer.runtime import call_inputs

IDS = torch.tensor([[5, 6, 7]])


class _Cache:
    def __init__(self, n):
        self.n = n

    def get_seq_length(self):
        return self.n


def _pos(args=(), **kw):
    return call_inputs.read(args, kw).token_positions()


def test_new_sequence_without_anything():
    pos, valid, past = _pos(input_ids=IDS)
    assert pos.tolist() == [[0, 1, 2]] and valid.all() and past == 0


def test_224_style_decoding_step_position_ids_and_cache_kwarg():
    """transformers 5.24+: input_ids, position_ids, cache (no mask, no cache_position)."""
    step = torch.tensor([[9]])
    pos, valid, past = _pos(input_ids=step, position_ids=torch.tensor([[7]]), cache=_Cache(7), use_cache=True)
    assert pos.tolist() == [[7]] and past == 7
    pos, _, past = _pos(input_ids=step, cache=_Cache(4))  # no position ids: the cache's own length
    assert pos.tolist() == [[4]] and past == 4


def test_4x_style_cache_position_and_past_key_values():
    pos, _, past = _pos(input_ids=torch.tensor([[9]]), cache_position=torch.tensor([5]), past_key_values=_Cache(2))
    assert pos.tolist() == [[5]] and past == 5
    pos, _, past = _pos(input_ids=torch.tensor([[9]]), past_key_values=_Cache(3))
    assert pos.tolist() == [[3]] and past == 3


def test_left_padded_mask_wins_and_marks_pads():
    am = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    ids = torch.tensor([[9], [9]])  # a decoding step: the mask covers past + current
    pos, valid, past = _pos(input_ids=ids, attention_mask=am, position_ids=torch.tensor([[99], [99]]),
                            cache=_Cache(4))
    assert pos.tolist() == [[2], [4]] and valid.all() and past == 4
    pos, valid, _ = _pos((torch.tensor([[0, 0, 5, 6, 7]]), torch.tensor([[0, 0, 1, 1, 1]])))  # positional
    assert valid.tolist() == [[False, False, True, True, True]] and pos[0, 2:].tolist() == [0, 1, 2]


def test_real_dynamic_cache_length_and_odd_inputs():
    cache = DynamicCache()
    k = torch.zeros(1, 2, 6, 4)
    cache.update(k, k, 0)
    pos, _, past = _pos(input_ids=torch.tensor([[1]]), cache=cache)
    assert pos.tolist() == [[6]] and past == 6
    assert _pos(pixel_values=torch.zeros(1, 3, 4, 4)) is None
    # 3-D (multimodal rope) position ids and 4-D masks are not read as positions / pads
    pos, valid, _ = _pos(input_ids=IDS, position_ids=torch.zeros(3, 1, 3, dtype=torch.long),
                         attention_mask=torch.zeros(1, 1, 3, 3))
    assert pos.tolist() == [[0, 1, 2]] and valid.all()


def test_prompt_lengths_and_rows():
    am = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert call_inputs.prompt_lengths((), {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": am}).tolist() == [2, 3]
    assert call_inputs.prompt_lengths((IDS,), {}).tolist() == [3]
    assert call_inputs.read((), {"inputs_embeds": torch.zeros(4, 3, 8)}).rows == 4
