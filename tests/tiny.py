"""Tiny random host models built from configs (never downloaded) and random SAEs for tests."""

from __future__ import annotations

import torch
import transformers as tf

from saesteer.sae.module import SAE, SAEConfig

D = 32  # hidden size of every tiny model
VOCAB = 96


def _common(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return base


CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**_common()),
    "mistral": lambda: tf.MistralConfig(**_common(sliding_window=None)),
    "qwen2": lambda: tf.Qwen2Config(**_common()),
    "gemma2": lambda: tf.Gemma2Config(**_common(head_dim=8, query_pre_attn_scalar=8, sliding_window=16)),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**_common(head_dim=8, query_pre_attn_scalar=8, sliding_window=16)),
    "phi3": lambda: tf.Phi3Config(**_common()),
    "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=3, n_head=4, n_positions=256,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "gpt_neox": lambda: tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=3,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                                         eos_token_id=2),
}
MODEL_TYPES = list(CONFIGS)


def tiny_lm(model_type: str = "llama", seed: int = 0) -> torch.nn.Module:
    """A 3-layer, width-32 random causal LM of the given family, in eval mode, fp32."""
    torch.manual_seed(seed)
    cfg = CONFIGS[model_type]()
    model = tf.AutoModelForCausalLM.from_config(cfg)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None  # never stop early: fixed-length generations
    return model.eval()


def random_sae(d_in: int = D, d_sae: int = 64, architecture: str = "relu", seed: int = 1,
               **cfg_kw) -> SAE:
    """An SAE with random weights and non-zero biases, scaled so that a good share of features fire."""
    g = torch.Generator().manual_seed(seed)
    if architecture == "topk":
        cfg_kw.setdefault("k", 8)
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture=architecture, **cfg_kw))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.1)
        if architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(d_sae, generator=g) * 0.1)
        if architecture == "gated":
            sae.b_gate.copy_(torch.randn(d_sae, generator=g) * 0.1)
            sae.b_mag.copy_(torch.randn(d_sae, generator=g) * 0.1)
            sae.r_mag.copy_(torch.randn(d_sae, generator=g) * 0.1)
    return sae.eval()


def batch(B: int = 2, T: int = 7, seed: int = 3, left_pad: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """Random token ids (avoiding the special ids 0..2) with an attention mask; ``left_pad[b]`` pads
    row b on the left."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, n in enumerate(left_pad):
        ids[b, :n] = 0
        mask[b, :n] = 0
    return {"input_ids": ids, "attention_mask": mask}


class CharTokenizer:
    """A character-level stand-in for a HF tokenizer (ids 3..VOCAB-1; 0 is pad), enough for code that
    only calls ``tok(text, add_special_tokens=False)``, ``decode`` and ``pad_token_id``."""

    pad_token_id = 0
    eos_token_id = 2
    bos_token_id = 1

    def __call__(self, text, add_special_tokens=False, **kw):
        return {"input_ids": [3 + (ord(c) % (VOCAB - 3)) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(32 + (int(i) - 3) % 95) if int(i) >= 3 else "" for i in ids)

    def convert_ids_to_tokens(self, ids):
        return [self.decode([i]) for i in ids]


def save_word_level_model(folder, lm: torch.nn.Module) -> list[str]:
    """Save ``lm`` with a word-level tokenizer (``<pad>``, ``<s>``, ``</s>``, then ``w0 .. w92``) to
    ``folder``, as a user's model folder; returns the words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(VOCAB - 3)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    lm.save_pretrained(folder)
    fast.save_pretrained(folder)
    return words
