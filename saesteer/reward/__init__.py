"""Reward models read through SAE features.

- :class:`SARM` ("Interpretable Reward Model via Sparse Autoencoder"): a backbone cut at layer L,
  an SAE, and a bias-free linear head over its features, read at the last non-pad token. Every
  reward is ``sum_i w_i f_i``: :meth:`SARM.explain` lists the shares, :meth:`SARM.reweight`
  shifts a preference without retraining, ``steer=`` takes SARM's steering JSON.
- :func:`reward_change` / :func:`erase_effects`: an SAE attached with ``saesteer.wrap`` inside a
  reward model that has its own head (any ``*ForSequenceClassification``), edits applied there,
  and the reward change reported.
- :func:`load_demo`: SmolLM2-135M-Instruct + the bundled SAE + a head trained here to prefer
  positive-sentiment replies (VADER), offline.
"""

from saesteer.errors import RewardError
from saesteer.reward.demo import DEMO_NAME, demo_path, load_demo
from saesteer.reward.explain import FeatureContribution, RewardExplanation, parse_steering
from saesteer.reward.fit import EpochStats, FitReport
from saesteer.reward.model import SARM
from saesteer.reward.wrapped import FeatureEffect, RewardChange, erase_effects, reward_change

__all__ = [
    "SARM", "FitReport", "EpochStats", "RewardExplanation", "FeatureContribution", "parse_steering",
    "reward_change", "erase_effects", "RewardChange", "FeatureEffect", "RewardError",
    "load_demo", "demo_path", "DEMO_NAME",
]
