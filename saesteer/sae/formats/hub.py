"""Resolve a HuggingFace hub id (or a SAELens release name) to a local folder.

Accepted forms: ``owner/repo`` (+ ``subfolder=``/``hookpoint=``), ``owner/repo/sub/folder``, and a
SAELens release name with its SAE id (``load_sae("gemma-scope-2b-pt-res-canonical",
"layer_12/width_16k/canonical")``, or the one string ``"gemma-scope-2b-pt-res-canonical/layer_12/
width_16k/canonical"``): the repo id and path come from :mod:`saesteer.sae.formats.releases` (the
installed sae-lens's ``pretrained_saes.yaml``, else the table saesteer ships), together with what the
files do not say (``norm_scaling_factor``, model name, Neuronpedia id).

Only the files the SAE needs are downloaded (``snapshot_download(allow_patterns=...)``); for a
sharded reward-model checkpoint (SARM) only the config, the index and the shard holding the SAE.
With ``HF_HUB_OFFLINE=1`` only the local cache is used. Any failure to reach the hub or to find the
repo raises :class:`~saesteer.errors.HubUnavailableError` naming the id and suggesting a local path.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saesteer.errors import HubUnavailableError, SAEFormatError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
#: what an SAE folder can need; large unrelated files (optimizer state, pickles) are left out
_WANTED = ("*.json", "*.safetensors", "*.npz", "*.pt", "*.pth", "*.yaml", "*.md")
#: a release path with one of these suffixes names a single weights file, not a folder
_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".npz")
_IGNORED = ("optimizer_*", "lr_scheduler_*", "*state.pt", "rank_*", "*.pkl", "*.pickle", "*.bin")


@dataclass
class HubTarget:
    """A resolved hub SAE: the local folder, and facts from a release directory (may be empty)."""

    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's endpoint answers a TCP connection within ``timeout`` seconds: one probe, no
    retries (huggingface_hub and transformers retry with back-off, which costs ~50 s offline before
    their error). False under ``HF_HUB_OFFLINE=1``. Cost: one DNS look-up and connect."""
    if _offline():
        return False
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _fail(what: str, err: BaseException | None = None) -> HubUnavailableError:
    why = f": {type(err).__name__}: {str(err)[:300].rstrip('.')}" if err is not None else ""
    return HubUnavailableError(
        f"cannot load {what} from the HuggingFace hub{why}. The hub may be unreachable (offline, "
        "HF_HUB_OFFLINE=1) or the repo/folder may not exist; download the SAE and pass its local path "
        "to load_sae instead."
    )


def _split(id_: str, subfolder: str | None) -> tuple[str, str]:
    parts = [p for p in id_.strip("/").split("/") if p]
    if len(parts) < 2 or not _REPO_ID.match("/".join(parts[:2])):
        raise SAEFormatError(
            f"{id_!r} is neither an existing local path, a hub id (owner/repo[/folder]) nor a SAELens "
            "release name"
        )
    folder = "/".join(parts[2:] + ([subfolder.strip("/")] if subfolder else []))
    return "/".join(parts[:2]), folder


def _children_with_config(here: Path) -> list[str]:
    if not here.is_dir():
        return []
    return sorted(c.name for c in here.iterdir()
                  if c.is_dir() and ((c / "cfg.json").is_file() or (c / "config.json").is_file()))


def _fetch(repo_id: str, folder: str, hookpoint: str | None, what: str) -> Path:
    """Download what the SAE under ``folder`` needs, deciding from its json files (no listing call:
    ``snapshot_download`` fails fast when the hub is unreachable and falls back to the cache)."""
    from functools import partial

    from huggingface_hub import snapshot_download

    dl = partial(snapshot_download, repo_id, ignore_patterns=list(_IGNORED), local_files_only=not hub_reachable())
    if Path(folder).suffix.lower() in _FILE_SUFFIXES:  # a release whose SAE is one file (Qwen Scope, DeepSeek, Goodfire)
        file = Path(dl(allow_patterns=[folder])) / folder
        if not file.is_file():
            raise HubUnavailableError(f"{what}: the repo has no file {folder!r}")
        return file
    base = f"{folder}/" if folder else ""
    root = Path(dl(allow_patterns=[f"{base}*.json"]))  # configs only: small
    here = root / folder if folder else root
    if hookpoint and (here / hookpoint).is_dir():
        base, here = f"{base}{hookpoint}/", here / hookpoint
    index = here / "model.safetensors.index.json"
    if index.is_file():  # sharded checkpoint (SARM reward model): only the shard(s) holding the SAE
        wm = json.loads(index.read_text()).get("weight_map") or {}
        shards = sorted({v for k, v in wm.items() if k.endswith(("pre_bias", "latent_bias"))})
        if shards:
            dl(allow_patterns=[f"{base}{s}" for s in shards])
        return here
    has_cfg = (here / "cfg.json").is_file() or (here / "config.json").is_file()
    children = _children_with_config(here)
    if children and not (here / "cfg.json").is_file():
        raise SAEFormatError(
            f"{what} holds several SAEs in sub-folders: {', '.join(children[:40])}"
            + (f", ... ({len(children)})" if len(children) > 40 else "")
            + "; pass hookpoint= (sparsify) or subfolder= to pick one"
        )
    if not has_cfg and not folder:
        raise SAEFormatError(f"{what}: the repo root has no SAE config; pass subfolder= (the SAE's folder)")
    dl(allow_patterns=[f"{base}{p}" for p in _WANTED])
    return here


def resolve(id_: str, *, subfolder: str | None = None, hookpoint: str | None = None) -> HubTarget:
    """Download (or find in the cache) the files of the SAE ``id_`` names; returns the local folder.

    Cost: a few small requests and the downloads (nothing when cached); offline, a cache lookup.
    """
    from saesteer.sae.formats import releases

    extra: dict[str, Any] = {}
    rel = releases.split(id_, subfolder)
    if rel is not None:
        repo_id, folder, extra = releases.lookup(*rel)
    else:
        repo_id, folder = _split(id_, subfolder)
    what = f"{repo_id!r}" + (f" (folder {folder!r})" if folder else "")
    try:
        path = _fetch(repo_id, folder, hookpoint, what)
    except (SAEFormatError, HubUnavailableError):
        raise
    except Exception as e:  # noqa: BLE001 - offline, not found, gated, network: all mean "no hub"
        raise _fail(what, e) from e
    if not path.exists():
        raise _fail(what)
    if hookpoint and path.name == hookpoint:
        path = path.parent  # the readers pick the hookpoint themselves
    return HubTarget(path=path, extra=extra)
