"""Feature explanations from the ecosystem, in and out of :class:`~saesteer.labels.FeatureLabels`.

- **Neuronpedia** explanation exports: its dataset export (``v1/<modelId>/<saeId>/explanations/
  batch-N.jsonl.gz``, one JSON object a line) and the JSON array its older export endpoint returned.
  Each object has ``modelId``, ``layer`` (the Neuronpedia SAE id, e.g. ``"6-res-jb"``), ``index`` (a
  string), ``description``, ``explanationModelName``, ``typeName``. A folder of batch files is read
  whole.
- **delphi** (EleutherAI) explanation folders: ``explanations/<module>_latent<i>.txt``, each holding
  the explanation as a JSON string (delphi writes ``orjson.dumps(explanation)``).

:func:`to_neuronpedia` writes saesteer's labels back as Neuronpedia export rows. Reading never
executes anything from a file: json only. Cost: one pass over the files.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from saesteer.errors import SAEFormatError

_DELPHI_NAME = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)\.txt$")


def _json_rows(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SAEFormatError(f"cannot read {path}: {e}") from e
    try:
        data = json.loads(text)
        rows = data if isinstance(data, list) else [data]
    except ValueError:  # jsonl
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as e:
            raise SAEFormatError(f"{path} is neither JSON nor JSON lines: {e}") from e
    if not all(isinstance(r, dict) for r in rows):
        raise SAEFormatError(f"{path}: expected JSON objects (one explanation each)")
    return rows


def read_neuronpedia(path: str | os.PathLike, *, layer: str | None = None) -> tuple[dict[int, str], str]:
    """``({feature: description}, source)`` from a Neuronpedia explanation export: a ``.json``,
    ``.jsonl`` or ``.jsonl.gz`` file, or a folder of them. ``layer`` keeps only rows of that
    Neuronpedia SAE id (an export may hold several); when a feature has several explanations the
    first is kept. SAEFormatError when a row lacks ``index`` or ``description`` or holds several
    layers without ``layer=``."""
    p = Path(path)
    files = sorted(p.glob("*.json*")) if p.is_dir() else [p]
    if not files:
        raise SAEFormatError(f"no Neuronpedia export files (*.json, *.jsonl, *.jsonl.gz) in {p}")
    out: dict[int, str] = {}
    layers, models = set(), set()
    for f in files:
        for r in _json_rows(f):
            if "index" not in r or "description" not in r:
                raise SAEFormatError(f"{f}: a Neuronpedia explanation needs 'index' and 'description', got "
                                     f"{sorted(r)}")
            if layer is not None and r.get("layer") != layer:
                continue
            layers.add(r.get("layer"))
            models.add(r.get("explanationModelName"))
            try:
                i = int(r["index"])
            except (TypeError, ValueError):
                raise SAEFormatError(f"{f}: index {r['index']!r} is not a feature number") from None
            out.setdefault(i, str(r["description"]).strip())
    if len(layers) > 1:
        raise SAEFormatError(f"{p} holds explanations of several SAEs ({', '.join(map(str, sorted(layers, key=str)))}): "
                             "pick one with layer=")
    by = ", ".join(sorted(m for m in models if m)) or "unknown model"
    return out, f"neuronpedia {next(iter(layers), '')} ({by})".replace("  ", " ")


def read_delphi(folder: str | os.PathLike, *, module: str | None = None) -> tuple[dict[int, str], str]:
    """``({feature: explanation}, source)`` from a delphi explanations folder (``<module>_latent<i>.txt``);
    ``module`` picks one hookpoint when the folder holds several."""
    p = Path(folder)
    if p.is_dir() and (p / "explanations").is_dir():
        p = p / "explanations"
    found: dict[str, dict[int, str]] = {}
    for f in sorted(p.glob("*.txt")) if p.is_dir() else []:
        m = _DELPHI_NAME.match(f.name)
        if not m:
            continue
        try:
            text = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SAEFormatError(f"{f}: not a delphi explanation (a JSON string): {e}") from e
        if not isinstance(text, str):
            raise SAEFormatError(f"{f}: a delphi explanation is a JSON string, got {type(text).__name__}")
        found.setdefault(m["module"], {})[int(m["index"])] = text.strip()
    if not found:
        raise SAEFormatError(f"no delphi explanations (<module>_latent<i>.txt) in {p}")
    if module is None and len(found) > 1:
        raise SAEFormatError(f"{p} holds explanations of several modules ({', '.join(sorted(found))}): pick one "
                             "with module=")
    name = module if module is not None else next(iter(found))
    if name not in found:
        raise SAEFormatError(f"no delphi explanations for module {name!r} in {p}; found {', '.join(sorted(found))}")
    return found[name], f"delphi {name}"


def read_explanations(path: str | os.PathLike, *, which: str | None = None) -> tuple[dict[int, str], str]:
    """Either format, told apart by its files: delphi's ``*_latent<i>.txt`` or Neuronpedia's json.
    ``which`` is the Neuronpedia layer or the delphi module to keep."""
    p = Path(path)
    folder = p / "explanations" if (p / "explanations").is_dir() else p
    if folder.is_dir() and any(_DELPHI_NAME.match(f.name) for f in folder.glob("*.txt")):
        return read_delphi(folder, module=which)
    return read_neuronpedia(p, layer=which)


def to_neuronpedia(labels: Any, *, model_id: str, layer: str,
                   explanation_model: str = "saesteer-auto-label") -> list[dict[str, Any]]:
    """saesteer's labels as Neuronpedia export rows (``modelId``, ``layer``, ``index`` as a string,
    ``description``, ``explanationModelName``, ``typeName``), one per feature with a label."""
    rows = []
    for f in labels:
        text = labels[f]
        if not text:
            continue
        info = labels.info(f)
        rows.append({"modelId": model_id, "layer": layer, "index": str(f), "description": text,
                     "explanationModelName": (info.get("explanation_source") or explanation_model),
                     "typeName": "saesteer_top-contexts" if not info.get("explanation") else "imported"})
    return rows


def write_jsonl_gz(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows as gzipped JSON lines (Neuronpedia's batch file format)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(p, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return p
