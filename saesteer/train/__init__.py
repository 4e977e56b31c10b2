"""Train SAEs on a host model's activations.

>>> from saesteer.train import ActivationSource, TrainConfig, train_sae, evaluate_sae
>>> src = ActivationSource(model, "blocks.6.hook_resid_post", texts, tokenizer=tok, context_length=256)
>>> sae = train_sae(src, TrainConfig(architecture="topk", k=32, total_tokens=2_000_000), "out/sae")

Pieces: :mod:`~saesteer.train.activations` (text -> activations, stopping the forward at the hook),
:mod:`~saesteer.train.cache` (on-disk activation shards), :mod:`~saesteer.train.step` (one SAE
under training: TopK, BatchTopK, JumpReLU, Gated, p-annealing, Matryoshka BatchTopK, Ordered, with
k-annealing), :mod:`~saesteer.train.losses` (the newer losses and what each reproduces),
:mod:`~saesteer.train.guided` (G-SAE concept-guided latents and their steering, saesteer's reading), :mod:`~saesteer.train.trainer` (the loop, checkpoints, resume),
:mod:`~saesteer.train.metrics` (L0, FVU, dead fraction, CE-loss recovered), :mod:`~saesteer.train.card`
(the training card) and :mod:`~saesteer.train.cli` (``saesteer train``).
"""

from saesteer.train.activations import ActivationSource, capture_activations, pack_tokens, rebatch, shuffle_blocks
from saesteer.train.cache import CachedActivations, write_cache
from saesteer.train.checkpoint import load_checkpoint, save_checkpoint
from saesteer.train.config import TrainConfig
from saesteer.train.metrics import activation_metrics, evaluate_sae, fvu, l0
from saesteer.train.step import SAETrainer
from saesteer.train.trainer import train_sae

__all__ = [
    "ActivationSource", "CachedActivations", "TrainConfig", "SAETrainer", "train_sae", "evaluate_sae",
    "activation_metrics", "fvu", "l0", "capture_activations", "pack_tokens", "shuffle_blocks", "write_cache",
    "save_checkpoint", "load_checkpoint", "rebatch",
]
