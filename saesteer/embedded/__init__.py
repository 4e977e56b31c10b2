"""Small models saesteer can load without network access."""

from saesteer.embedded.smollm2 import (
    GGUF_FILE,
    EmbeddedModelMissingError,
    load_smollm2,
    smollm2_path,
)

__all__ = ["GGUF_FILE", "EmbeddedModelMissingError", "load_smollm2", "smollm2_path"]
