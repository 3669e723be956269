"""Run a backbone config under 2-process CPU DDP and record, per rank and step, what the rank trained on.

Used by ``tests/test_ddp_ranks.py`` (as a script: Lightning's DDP launcher re-runs it for rank 1)::

    python tests/ddp_probe.py CONFIG.yaml OUT_DIR

Each rank writes ``OUT_DIR/rank<r>.json``: per training step the structure names of its batch, a noise
fingerprint (the first 8 uniforms its training-noise generator is about to draw) and, at the end, a
checksum of its parameters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch


class RankProbe(L.Callback):
    """Records the batch names and noise fingerprint of every step of this rank."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        gen = pl_module.noise_generator()
        clone = torch.Generator(device=gen.device)
        clone.set_state(gen.get_state())
        fingerprint = torch.rand(8, generator=clone, device=gen.device).tolist()
        self.steps.append({"step": trainer.global_step, "names": list(batch.names), "noise": fingerprint})

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        params = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "steps": self.steps,
            "param_sum": float(params.double().sum()),
            "param_abs_sum": float(params.double().abs().sum()),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main(config: str, out_dir: str) -> None:
    from proteinflow.train.backbone_config import load_backbone_config
    from proteinflow.train.backbone_module import BackboneDataModule, BackboneFlowModule

    cfg = load_backbone_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    trainer = L.Trainer(
        max_steps=cfg.train.max_steps,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        callbacks=[RankProbe(out)],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(BackboneFlowModule(cfg.to_dict()), datamodule=BackboneDataModule(cfg))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
