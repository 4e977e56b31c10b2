"""Explain SAE features in words and score every explanation.

- :mod:`saesteer.explain.llm`: the explainer / scorer LLM (local HF model or OpenAI-compatible endpoint);
- :mod:`saesteer.explain.examples`: delphi's example sampling;
- :mod:`saesteer.explain.scorers`: delphi's detection and fuzzing scorers;
- :mod:`saesteer.explain.explainers`: one-shot explanations and saesteer's reading of the SAGE loop;
- :mod:`saesteer.explain.run`: the pipeline over many features; :mod:`saesteer.explain.store`: the file.
"""

from saesteer.explain.examples import Example, Split, delphi_split, feature_windows, max_activations
from saesteer.explain.explainers import LoopResult, one_shot, sage_loop
from saesteer.explain.llm import LLM, HFChatLLM, OpenAIChatLLM, load_llm
from saesteer.explain.run import explain_features, summary
from saesteer.explain.scorers import detection, fuzzing, scores

__all__ = ["Example", "Split", "delphi_split", "feature_windows", "max_activations", "LoopResult", "one_shot",
           "sage_loop", "LLM", "HFChatLLM", "OpenAIChatLLM", "load_llm", "explain_features", "summary",
           "detection", "fuzzing", "scores"]
