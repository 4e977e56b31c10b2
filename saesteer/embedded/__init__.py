"""Small models saesteer can load without network access."""

from saesteer.embedded.default import DEFAULT_SAE_NAME, default_sae_path, load_default
from saesteer.embedded.smollm2 import (
    GGUF_FILE,
    EmbeddedModelMissingError,
    load_smollm2,
    smollm2_path,
)
from saesteer.embedded.vlm import TINY_LLAVA_NAME, load_tiny_llava, tiny_llava_path

__all__ = ["DEFAULT_SAE_NAME", "default_sae_path", "load_default", "GGUF_FILE", "EmbeddedModelMissingError", "load_smollm2", "smollm2_path",
           "TINY_LLAVA_NAME", "load_tiny_llava", "tiny_llava_path"]
