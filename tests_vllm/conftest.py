"""The vLLM tests: run inside the vLLM virtualenv (``make test-vllm`` builds it), never by the main suite.

One in-process engine (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) serves the module: SmolLM2-135M-Instruct
in float32 with the bundled SAE, eager mode, a small ``max_num_batched_tokens`` so long prompts are
prefilled in chunks. The HF side is saesteer's own ``SteeredModel.generate`` on the same weights."""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

#: chunked prefill: a prompt longer than this is computed over several steps
MAX_BATCHED = 64


@pytest.fixture(scope="session")
def paths():
    from saesteer.embedded.default import default_sae_path
    from saesteer.embedded.smollm2 import smollm2_path

    return str(smollm2_path()), str(default_sae_path())


@pytest.fixture(scope="session")
def llm(paths):
    from vllm import LLM

    from saesteer.integrations import vllm as sv

    model, _ = paths
    engine = LLM(model=model, dtype="float32", max_model_len=512, max_num_batched_tokens=MAX_BATCHED,
                 max_num_seqs=16, seed=0, enable_prefix_caching=True, **sv.engine_args())
    sv.attach(engine, paths[1])
    return engine


@pytest.fixture(scope="session")
def hf(paths):
    """saesteer's HF path on the same float32 weights: ``run(ids, edits, n) -> (tokens, logprobs)``."""
    import saesteer
    from saesteer.embedded.smollm2 import load_smollm2

    model, tok = load_smollm2(dtype=torch.float32)
    sm = saesteer.wrap(model, paths[1], tokenizer=tok)

    def run(ids: list[int], edits=None, n: int = 16, **kw):
        x = torch.tensor([ids])
        out = sm.generate(x, attention_mask=torch.ones_like(x), edits=edits, max_new_tokens=n, do_sample=False,
                          output_logits=True, return_dict_in_generate=True, pad_token_id=tok.eos_token_id, **kw)
        new = out.sequences[0, len(ids):].tolist()
        lp = [torch.log_softmax(l[0].double(), -1)[t].item() for l, t in zip(out.logits, new)]
        return new, lp

    run.tokenizer = tok
    run.sae = sm.sae
    run.sm = sm
    return run
