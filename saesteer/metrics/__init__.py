"""Metrics over SAE features: the Monosemanticity Score of sae-for-vlm, per-image feature
activations, top-activating images and per-patch activation maps."""

from saesteer.metrics.image_activations import hooked_tokens, image_activations
from saesteer.metrics.monosemanticity import (
    embed_images,
    image_features_embedder,
    min_max_scale,
    monosemanticity_score,
)
from saesteer.metrics.top_images import TopImages, patch_activation_map, top_images

__all__ = [
    "monosemanticity_score", "min_max_scale", "embed_images", "image_features_embedder",
    "image_activations", "hooked_tokens", "top_images", "TopImages", "patch_activation_map",
]
