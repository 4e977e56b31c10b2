"""Tiny random vision-language models built from configs (never downloaded), with the module
structure of the real ones and tiny sizes.

``tiny_llava()`` mirrors llava-hf/llava-1.5-7b-hf: a ``CLIPVisionModel`` tower of 24 layers (ViT-L/14-336
has 24; width 32 here instead of 1024, 56 px images of 14 px patches = 4x4 patches + CLS instead of
24x24 + CLS), ``vision_feature_layer=-2``, ``vision_feature_select_strategy="default"``, a GELU
projector, and a Llama language model (2 layers, width 32). ``tiny_llava_next()`` is the same with
LLaVA-NeXT's any-resolution crops.
"""

from __future__ import annotations

import torch
import transformers as tf

D_VISION = 32
IMAGE = 56
PATCH = 14
N_PATCHES = (IMAGE // PATCH) ** 2  # 16
IMAGE_TOKEN = 120
VOCAB = 128


def clip_vision_config(layers: int = 24) -> tf.CLIPVisionConfig:
    return tf.CLIPVisionConfig(hidden_size=D_VISION, intermediate_size=64, num_hidden_layers=layers,
                               num_attention_heads=4, image_size=IMAGE, patch_size=PATCH, projection_dim=16)


def text_config() -> tf.LlamaConfig:
    return tf.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _ready(model: torch.nn.Module) -> torch.nn.Module:
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = 0
        model.generation_config.eos_token_id = None  # fixed-length generations
        model.generation_config.suppress_tokens = [IMAGE_TOKEN]  # a generated <image> would break re-runs
    return model.eval()


def tiny_llava(seed: int = 0, **cfg_kw) -> tf.LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    kw = dict(image_token_id=IMAGE_TOKEN, vision_feature_layer=-2, vision_feature_select_strategy="default",
              image_seq_length=N_PATCHES, projector_hidden_act="gelu")
    kw.update(cfg_kw)
    cfg = tf.LlavaConfig(vision_config=clip_vision_config(), text_config=text_config(), **kw)
    return _ready(tf.LlavaForConditionalGeneration(cfg))


def tiny_llava_next(seed: int = 0) -> tf.LlavaNextForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = tf.LlavaNextConfig(vision_config=clip_vision_config(), text_config=text_config(),
                             image_token_id=IMAGE_TOKEN, vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_seq_length=N_PATCHES,
                             image_grid_pinpoints=[[IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE], [2 * IMAGE, 2 * IMAGE]])
    return _ready(tf.LlavaNextForConditionalGeneration(cfg))


def tiny_clip_vision(seed: int = 0, layers: int = 4) -> tf.CLIPVisionModel:
    torch.manual_seed(seed)
    return tf.CLIPVisionModel(clip_vision_config(layers)).eval()


def tiny_clip(seed: int = 0, layers: int = 4) -> tf.CLIPModel:
    torch.manual_seed(seed)
    tc = tf.CLIPTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=32, projection_dim=16,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg = tf.CLIPConfig(text_config=tc.to_dict(), vision_config=clip_vision_config(layers).to_dict(), projection_dim=16)
    return tf.CLIPModel(cfg).eval()


def tiny_siglip(seed: int = 0, layers: int = 4) -> tf.SiglipModel:
    torch.manual_seed(seed)
    tc = tf.SiglipTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=16, pad_token_id=0, bos_token_id=1,
                             eos_token_id=2)
    vc = tf.SiglipVisionConfig(hidden_size=D_VISION, intermediate_size=64, num_hidden_layers=layers,
                               num_attention_heads=4, image_size=IMAGE, patch_size=PATCH)
    return tf.SiglipModel(tf.SiglipConfig(text_config=tc.to_dict(), vision_config=vc.to_dict())).eval()


def tiny_siglip_vision(seed: int = 0, layers: int = 4) -> tf.SiglipVisionModel:
    torch.manual_seed(seed)
    cfg = tf.SiglipVisionConfig(hidden_size=D_VISION, intermediate_size=64, num_hidden_layers=layers,
                                num_attention_heads=4, image_size=IMAGE, patch_size=PATCH)
    return tf.SiglipVisionModel(cfg).eval()


def pixels(n: int = 2, seed: int = 5, crops: int | None = None) -> torch.Tensor:
    """Random pixel values ``[n, 3, IMAGE, IMAGE]`` (``[n, crops, 3, IMAGE, IMAGE]`` with ``crops``)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, IMAGE, IMAGE) if crops is None else (n, crops, 3, IMAGE, IMAGE)
    return torch.randn(*shape, generator=g)


def llava_inputs(n: int = 2, seed: int = 5, image_tokens: list[int] | None = None) -> dict[str, torch.Tensor]:
    """One image per row: ``[bos, 4 text tokens, <image> x N_PATCHES (or image_tokens[row]), 3 text
    tokens]``, left-padded to one length; random pixel values."""
    g = torch.Generator().manual_seed(seed)
    counts = image_tokens or [N_PATCHES] * n
    rows = [[1] + torch.randint(3, IMAGE_TOKEN, (4,), generator=g).tolist() + [IMAGE_TOKEN] * c
            + torch.randint(3, IMAGE_TOKEN, (3,), generator=g).tolist() for c in counts]
    T = max(map(len, rows))
    ids = torch.zeros(n, T, dtype=torch.long)
    mask = torch.zeros(n, T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r):] = torch.tensor(r)
        mask[b, T - len(r):] = 1
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels(n, seed)}


def llava_next_inputs(model: tf.LlavaNextForConditionalGeneration, sizes: list[tuple[int, int]],
                      seed: int = 5) -> dict[str, torch.Tensor]:
    """LLaVA-NeXT inputs for images of ``sizes`` (h, w): crops per image as the model computes them,
    and as many image tokens per row as the model's packed features (asked of the model itself)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    cfg = model.config
    crops = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, cfg.vision_config.image_size) for s in sizes]
    pv = pixels(len(sizes), seed, crops=max(crops))
    image_sizes = torch.tensor(sizes)
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pv, image_sizes=image_sizes).pooler_output
    out = llava_inputs(len(sizes), seed, image_tokens=[f.shape[0] for f in feats])
    out.update(pixel_values=pv, image_sizes=image_sizes)
    return out
