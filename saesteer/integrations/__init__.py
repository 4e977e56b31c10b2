"""Bridges to other interpretability tools. Each submodule imports its tool lazily (or not at
all), so ``import saesteer`` never pulls them in.

- :mod:`saesteer.integrations.nnsight`: ``steer(layer.output, sae, edits)`` inside an nnsight trace.
"""
