"""The model/SAE pairs the demo serves: the embedded default, plus any pair a visitor loads by path or id.

Each browser session remembers which pair it uses (a :class:`PairKey` in its own ``gr.State``), and
the pairs themselves live in one shared, bounded cache. Loading a pair in one session therefore
never changes what another session is steering; edits are per call in saesteer, so sessions that
share a pair do not see each other's edits either.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import saesteer
from saesteer.errors import SaesteerError

#: what the model box means when it holds nothing but this word: the offline SmolLM2-135M-Instruct
EMBEDDED_MODEL = "smollm2"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class PairKey:
    """Which model and SAE: ``model`` is ``smollm2``, a folder or a hub id; ``sae`` a folder/file,
    a hub id, or ``""`` for the bundled SAE; ``hook`` ``""`` for the SAE's own hook."""

    model: str = EMBEDDED_MODEL
    sae: str = ""
    hook: str = ""

    def describe(self) -> str:
        sae = self.sae or "the bundled SAE"
        return f"{self.model} + {sae}" + (f" at {self.hook}" if self.hook else "")


@dataclass
class LoadedPair:
    """A wrapped model with its tokenizer, ready to steer."""

    key: PairKey
    model: saesteer.SteeredModel
    tokenizer: Any

    @property
    def sae(self) -> saesteer.SAE:
        return self.model.sae

    @property
    def hook(self) -> str:
        return next(iter(self.model.attachments))


class ModelRegistry:
    """A thread-safe cache of loaded pairs, at most ``capacity`` of them plus the default, which is
    never evicted. Loading costs what ``from_pretrained`` and ``load_sae`` cost (about 2 s for the
    embedded default, most of it reading weights); a cached pair costs nothing."""

    def __init__(self, default: PairKey = PairKey(), *, dtype: str = "bfloat16", capacity: int = 2,
                 preloaded: LoadedPair | None = None) -> None:
        if dtype not in DTYPES:
            raise SaesteerError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.default = default
        self.dtype = dtype
        self.capacity = capacity
        self._pairs: OrderedDict[PairKey, LoadedPair] = OrderedDict()
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        if preloaded is not None:
            self._pairs[preloaded.key] = preloaded

    def get(self, key: PairKey | None = None) -> LoadedPair:
        """The pair for ``key`` (the default when None), loading it on first use. One load runs at a
        time; sessions asking for pairs already loaded never wait for it."""
        key = key or self.default
        with self._lock:
            if key in self._pairs:
                self._pairs.move_to_end(key)
                return self._pairs[key]
        with self._loading:
            with self._lock:
                if key in self._pairs:
                    return self._pairs[key]
            pair = load_pair(key, DTYPES[self.dtype])
            with self._lock:
                self._pairs[key] = pair
                extra = [k for k in self._pairs if k != self.default]
                for old in extra[: max(0, len(extra) - self.capacity)]:
                    del self._pairs[old]
            return pair


def key_from_page(model: Any, sae: Any, hook: Any) -> PairKey:
    """The pair a visitor typed: blanks mean the embedded model, the bundled SAE, the SAE's hook."""
    def clean(v: Any, name: str) -> str:
        s = "" if v is None else str(v).strip()
        if len(s) > 300 or any(c in s for c in "\n\r\0"):
            raise SaesteerError(f"the {name} must be a folder or a hub id on one line (at most 300 characters)")
        return s

    return PairKey(clean(model, "model") or EMBEDDED_MODEL, clean(sae, "SAE"), clean(hook, "hook"))


def load_pair(key: PairKey, dtype: torch.dtype) -> LoadedPair:
    """Load and wrap one pair. Every failure is a :class:`SaesteerError` that says what to do:
    a missing folder, a hub id while offline, a folder that holds no model, an SAE that does not
    fit the model (wrong width, unknown hook), a model with no tokenizer."""
    from saesteer.cli import load_model

    name = key.model
    if name != EMBEDDED_MODEL and not Path(name).exists() and not _looks_like_hub_id(name):
        raise SaesteerError(f"no such folder: {name!r} (give '{EMBEDDED_MODEL}', a model folder, "
                            "or a hub id such as owner/name)")
    try:
        model, tok = load_model(name, dtype)
    except SaesteerError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; the page shows one message
        raise SaesteerError(f"cannot load model {name!r}: {_short(e)}") from e
    if tok is None:
        raise SaesteerError(f"model {name!r} has no tokenizer beside it")
    sae: str | os.PathLike = key.sae or _bundled_sae()
    try:
        sm = saesteer.wrap(model, sae, hook=key.hook or None, tokenizer=tok)
    except SaesteerError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SaesteerError(f"cannot load SAE {key.sae or 'bundled'!r}: {_short(e)}") from e
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedPair(key, sm, tok)


def _bundled_sae() -> Path:
    from saesteer.embedded import default_sae_path

    return default_sae_path()


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:300]}"
