"""SAELens release names: ``"gemma-scope-2b-pt-res-canonical"`` + an SAE id -> the hub repo and folder.

Resolved from the installed sae-lens's own ``pretrained_saes.yaml`` when sae-lens is installed (read
with the C YAML loader, without importing sae-lens, and cached under ``~/.cache/saesteer`` keyed by
the file's size and mtime), else from the table shipped with saesteer (``releases.json.gz``, made by
``python scripts/build_release_table.py`` from the sae-lens of the day it was built). Each SAE carries
its folder in the repo, its Neuronpedia id and, for some releases, the ``norm_scaling_factor`` that
sae-lens folds into the weights.

Cost: the first lookup after a sae-lens upgrade parses its YAML (~0.8 s); later ones read a ~200 KB
gzipped json (~50 ms).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).with_name("releases.json.gz")
CACHE_DIR = Path(os.environ.get("SAESTEER_CACHE", "~/.cache/saesteer")).expanduser()


def sae_lens_yaml() -> Path | None:
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "pretrained_saes.yaml"
    return p if p.is_file() else None


def table_from_yaml(path: Path) -> dict[str, Any]:
    """The release table of one ``pretrained_saes.yaml``: release -> {repo_id, model, conversion_func,
    config_overrides, saes: {sae_id: {path, neuronpedia?, norm_scaling_factor?}}}."""
    import yaml

    with open(path, encoding="utf-8") as f:
        raw = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    out: dict[str, Any] = {}
    for name, r in (raw or {}).items():
        if not isinstance(r, dict) or "repo_id" not in r:
            continue
        saes = {}
        for s in r.get("saes") or []:
            entry = {"path": str(s["path"])}
            for key in ("neuronpedia", "norm_scaling_factor"):
                if s.get(key) is not None:
                    entry[key] = s[key]
            saes[str(s["id"])] = entry
        out[name] = {"repo_id": r["repo_id"], "model": r.get("model"), "conversion_func": r.get("conversion_func"),
                     "config_overrides": r.get("config_overrides"), "saes": saes}
    return out


def _read_gz(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def write_table(table: dict[str, Any], path: Path, source: str) -> Path:
    """Write ``table`` as gzipped json with where it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"source": source, "releases": table}, f, separators=(",", ":"), sort_keys=True)
    return path


@lru_cache(maxsize=1)
def table() -> tuple[dict[str, Any], str]:
    """``(releases, source)``: the installed sae-lens's table when it is installed, else the shipped one."""
    y = sae_lens_yaml()
    if y is not None:
        st = y.stat()
        cached = CACHE_DIR / f"releases-{st.st_size}-{int(st.st_mtime)}.json.gz"
        try:
            data = _read_gz(cached)
            return data["releases"], data["source"]
        except (OSError, ValueError, KeyError):
            pass
        t = table_from_yaml(y)
        src = f"installed sae-lens ({y})"
        try:
            write_table(t, cached, src)
        except OSError:  # a read-only home: parse again next time
            pass
        return t, src
    data = _read_gz(SHIPPED)
    return data["releases"], data["source"]


def is_release(name: str) -> bool:
    return name in table()[0]


def split(id_: str, sae_id: str | None) -> tuple[str, str | None] | None:
    """``(release, sae_id)`` when ``id_`` names a release, alone (``sae_id`` separate) or in the
    one-string form ``"release/sae/id"``; None when it is no release name."""
    releases = table()[0]
    head, _, rest = id_.strip("/").partition("/")
    if id_.strip("/") in releases:
        return id_.strip("/"), sae_id
    if head in releases and rest:
        return head, rest + (f"/{sae_id}" if sae_id else "")
    return None


def lookup(release: str, sae_id: str | None) -> tuple[str, str, dict[str, Any]]:
    """``(repo_id, folder, extra)`` of one SAE of a release; ``extra`` holds what the files do not say
    (release, sae_id, model name, Neuronpedia id, norm scaling factor, conversion function). Raises
    SAEFormatError listing the release's SAE ids when ``sae_id`` is not one of them."""
    from saesteer.errors import SAEFormatError

    r = table()[0][release]
    saes = r["saes"]
    if sae_id is None or sae_id not in saes:
        ids = list(saes)
        shown = ", ".join(ids[:12]) + (f", ... ({len(ids)} ids)" if len(ids) > 12 else "")
        raise SAEFormatError(f"SAELens release {release!r} needs an SAE id (load_sae(release, sae_id)), one of: {shown}")
    s = saes[sae_id]
    extra: dict[str, Any] = {"release": release, "sae_id": sae_id, "model_name": r.get("model"),
                             "conversion_func": r.get("conversion_func")}
    if s.get("neuronpedia"):
        extra["neuronpedia_id"] = s["neuronpedia"]
    if s.get("norm_scaling_factor") is not None:
        extra["norm_scaling_factor"] = s["norm_scaling_factor"]
    overrides = r.get("config_overrides") or {}
    if isinstance(overrides, dict) and isinstance(overrides.get("hook_name"), str):
        extra["hook_name"] = overrides["hook_name"]
    return r["repo_id"], s["path"], extra
