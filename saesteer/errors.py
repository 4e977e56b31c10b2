"""Exceptions saesteer raises. Every one is raised before the host model is touched."""

from __future__ import annotations


class SaesteerError(Exception):
    """Base class of every error saesteer raises on purpose."""


class SAEFormatError(SaesteerError, ValueError):
    """A file or folder is not an SAE saesteer can read, or reading it would be unsafe."""


class HubUnavailableError(SaesteerError, OSError):
    """A hub id was given but the HuggingFace hub cannot be reached (offline, or no such repo)."""


class HookError(SaesteerError, ValueError):
    """A hook name does not resolve on this model, or the SAE does not fit the hooked tensor."""


class EditError(SaesteerError, ValueError):
    """An edit is malformed: unknown feature, non-finite value, wrong number of rows, ..."""


class RewardError(SaesteerError, ValueError):
    """Bad input for a reward model: an empty text in a preference pair, a head whose width does
    not match its SAE, a checkpoint that is not a reward model, ..."""


class CompiledModelError(SaesteerError, RuntimeError):
    """The model (or part of it) is compiled with ``torch.compile``: a compiled graph never runs the
    hooks saesteer adds per call, so steering it would silently do nothing."""
