"""SAEs: one module, every common file format."""

from saesteer.sae.formats import detect_format, load_sae, save_sae
from saesteer.sae.module import SAE, SAEConfig

__all__ = ["SAE", "SAEConfig", "load_sae", "save_sae", "detect_format"]
