"""saesteer: put trained sparse autoencoders inside the models you already run.

>>> import saesteer
>>> model = saesteer.wrap(hf_causal_lm, sae="path/or/hub-id", layer=12)
>>> out = model.generate(**inputs, edits={1234: 8.0})      # clamp feature 1234 to 8.0
"""

from saesteer.edits import Add, Clamp, Edit, EditSet, Erase, Scale, Steer, sae_for_vlm
from saesteer.errors import (CompiledModelError, EditError, HookError, HubUnavailableError, SAEFormatError,
                             SaesteerError)
from saesteer.features import FeatureActivations
from saesteer.positions import Positions
from saesteer.sae import SAE, SAEConfig, load_sae, save_sae
from saesteer.wrap import SteeredModel, wrap
from saesteer.reward import SARM
from saesteer.featureedit import FeatureEdit
from saesteer.conformance import check

__version__ = "0.1.0"

__all__ = [
    "SAE", "SAEConfig", "load_sae", "save_sae",
    "wrap", "SteeredModel", "FeatureActivations", "SARM",
    "FeatureEdit", "check",
    "Edit", "Clamp", "Erase", "Scale", "Add", "Steer", "EditSet", "Positions", "sae_for_vlm",
    "SaesteerError", "SAEFormatError", "HookError", "EditError", "HubUnavailableError", "CompiledModelError",
]
