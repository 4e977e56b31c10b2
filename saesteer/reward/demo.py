"""The demo reward model that ships with saesteer: SmolLM2-135M-Instruct, the bundled SAE (layer
15, 4608 features) and a head trained by ``scripts/build_demo_reward.py`` to prefer replies that
VADER scores as more positive. See the card (``README.md``) beside the head for how it was built
and how well it agrees with its labeller on held-out pairs."""

from __future__ import annotations

from pathlib import Path

import torch

from saesteer.errors import RewardError

DEMO_NAME = "smollm2-135m-it-reward-vader"


def demo_path() -> Path:
    """Folder of the demo head (``sarm.json``, ``score.safetensors``, ``README.md``)."""
    from saesteer.embedded.default import ASSETS

    p = ASSETS / DEMO_NAME
    if not (p / "sarm.json").is_file():
        raise RewardError(f"the demo reward model is missing from {p}; rebuild it with "
                          "`python scripts/build_demo_reward.py`")
    return p


def load_demo(dtype: torch.dtype = torch.float32):
    """The demo :class:`~saesteer.reward.SARM`, offline. Cost: loading SmolLM2 (~1 s once cached)
    and the 11 MB SAE; the head is 4608 floats."""
    from saesteer.reward.model import SARM

    return SARM.from_pretrained(demo_path(), dtype=dtype)
