"""Run by tests/test_train_ddp.py under ``torchrun --nproc_per_node 2``: trains each architecture of
``ARCHS`` with ``saesteer.train.train_sae`` on the same data as the one-process reference, and records
the architectures DDP refuses. Not a test module itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from saesteer.toy import toy_activations
from saesteer.train import TrainConfig, train_sae, distributed

ARCHS = {"topk": {"k": 6}, "batchtopk": {"k": 6}, "jumprelu": {"l0_coefficient": 0.01}, "gated": {},
         "ordered": {"k": 6}}
REFUSED = ("matryoshka", "p_anneal")


def config(arch: str) -> TrainConfig:
    return TrainConfig(architecture=arch, d_sae=32, batch_tokens=256, total_tokens=256 * 24, lr=3e-3,
                       warmup_steps=4, threshold_start_step=8, dead_tokens=512, seed=1, log_every=1,
                       checkpoint_every=0, **ARCHS.get(arch, {"k": 6}))


def data() -> list[torch.Tensor]:
    x = toy_activations(256 * 24, seed=3)[0]
    return [x[i:i + 1000] for i in range(0, x.shape[0], 1000)]


def main(out: str) -> None:
    torch.set_num_threads(1)
    for arch in ARCHS:
        train_sae(data(), config(arch), Path(out) / arch, resume=False, progress=False)
    refused = {}
    for arch in REFUSED:
        try:
            train_sae(data(), config(arch), Path(out) / "refused" / arch, resume=False, progress=False)
        except ValueError as e:
            refused[arch] = str(e)
    rank, size = distributed.world()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"world": size, "refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1])
