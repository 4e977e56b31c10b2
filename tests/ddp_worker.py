"""Run by tests/test_train_ddp.py under ``torchrun --nproc_per_node 2``: trains each run of ``RUNS``
with ``saesteer.train.train_sae`` on the same data as the one-process reference. Not a test module."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from saesteer.toy import toy_activations
from saesteer.train import TrainConfig, train_sae, distributed

#: name -> (architecture, its knobs): every architecture, and the reweighted and guided losses
RUNS = {"topk": ("topk", {"k": 6}), "batchtopk": ("batchtopk", {"k": 6}),
        "jumprelu": ("jumprelu", {"l0_coefficient": 0.01}), "gated": ("gated", {}),
        "p_anneal": ("p_anneal", {"sparsity_coefficient": 0.05}), "matryoshka": ("matryoshka", {"k": 6}),
        "ordered": ("ordered", {"k": 6}), "topk_reweighted": ("topk", {"k": 6, "recon_weighting": "inverse_variance"}),
        "batchtopk_k_anneal": ("batchtopk", {"k": 6, "k_anneal_steps": 10, "k_start": 24})}


def config(name: str) -> TrainConfig:
    arch, knobs = RUNS[name]
    return TrainConfig(architecture=arch, d_sae=32, batch_tokens=256, total_tokens=256 * 24, lr=3e-3,
                       warmup_steps=4, threshold_start_step=8, dead_tokens=512, seed=1, log_every=1,
                       checkpoint_every=0, **knobs)


def data() -> list[torch.Tensor]:
    x = toy_activations(256 * 24, seed=3)[0]
    return [x[i:i + 1000] for i in range(0, x.shape[0], 1000)]


def main(out: str) -> None:
    torch.set_num_threads(1)
    for name in RUNS:
        train_sae(data(), config(name), Path(out) / name, resume=False, progress=False)
    rank, size = distributed.world()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"world": size}))


if __name__ == "__main__":
    main(sys.argv[1])
