"""Coupled pairs for reflow: integrate a teacher from seeded noise to data and store ``(x0, x1)``.

Reflow (Liu et al. 2022, "Flow straight and fast") retrains a flow on the *deterministic coupling* its
ODE defines: draw ``x0`` from the prior, integrate the teacher from ``t = 0`` to ``t = 1`` to get
``x1 = phi(x0)``, and train a student on the geodesic paths between these pairs. Paths of the new flow
cross less, so it is straighter and needs fewer steps. This module makes and reads the pairs; the student
is trained by the one training path (:mod:`proteinflow.train.run`, ``reflow`` section of the config,
:class:`PairDataModule`) with the flows' own loss given ``x0``
(:meth:`~proteinflow.models.frame_flow.FrameFlow.pair_loss`).

Dataset layout (a folder)::

    pairs.json                       settings: teacher, model_kind, solver, steps, grid, seed, lengths, ...
    L0100_i000000-000007.pt          one shard per sampling batch: the pairs of one length

A shard is a ``torch.save`` dict of tensors and builtins (read with ``weights_only=True``)::

    x0, x1:  the state as a dict of tensors: frames {"rots": [B, N, 3, 3], "trans": [B, N, 3]} (Angstrom),
             Euclidean baselines {"x": [B, N, A, 3]} (Angstrom)
    index:   [B] backbone index within its length; seed: [B] its prior seed
             (:func:`~proteinflow.train.backbone_sampling.backbone_seed`)
    nfe:     [B] teacher evaluations per pair; seconds: wall time of the batch (float)
    length:  N (int)

Every pair depends only on ``(seed, length, index)`` and the teacher: its noise has its own generator,
and batches are the fixed plan of :func:`~proteinflow.train.backbone_sampling.plan_batches`. Shards are
written atomically (temporary file, then rename), so a killed run leaves only whole shards, and a rerun
with the same settings skips the shards already written (resumable). ``rank``/``world_size`` split the
shards round robin between processes (one per device), which write disjoint files.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from proteinflow.atomic import atomic_path, atomic_write_text
from proteinflow.models.frame_flow import FrameFlow, FrameSamples
from proteinflow.models.registry import BackboneFlow, BackboneSamples
from proteinflow.timing import device_seconds, resolve_device
from proteinflow.train.backbone_sampling import (
    backbone_seed,
    check_sample_request,
    load_backbone_checkpoint,
    plan_batches,
    seeded_noise,
    shard_batches,
)

#: Version of the pair-dataset layout.
PAIRS_FORMAT = 1
#: The settings file of a pair dataset.
PAIRS_META = "pairs.json"

State = dict[str, Tensor]


@dataclass(frozen=True)
class PairSettings:
    """What a pair dataset was made with (``pairs.json``); a resumed run must match it exactly.

    Attributes:
        teacher: path of the teacher checkpoint; teacher_sha256: its content hash (first 16 hex digits).
        model_kind: ``frames``, ``atoms`` or ``ca``.
        solver, steps, grid, rtol, atol: how the teacher was integrated
            (:func:`~proteinflow.models.sampling.sample_to_data`).
        seed: base seed of the noise; lengths, num: ``num`` pairs of every length; batch_size: pairs per
            shard.
    """

    teacher: str
    teacher_sha256: str
    model_kind: str
    solver: str
    steps: int | None
    grid: str
    rtol: float | None
    atol: float | None
    seed: int
    lengths: tuple[int, ...]
    num: int
    batch_size: int
    format: int = PAIRS_FORMAT

    def to_json(self) -> str:
        """The settings as JSON (lengths as a list)."""
        return json.dumps({**asdict(self), "lengths": list(self.lengths)}, indent=1)


def file_sha256(path: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a file (identifies a teacher checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def shard_name(length: int, indices: Sequence[int]) -> str:
    """File name of the shard of backbones ``indices`` (consecutive) of ``length``."""
    return f"L{length:04d}_i{indices[0]:06d}-{indices[-1]:06d}.pt"


def state_of(samples: BackboneSamples) -> State:
    """The sampled end state as a dict: frames ``{"rots", "trans"}``, Euclidean baselines ``{"x"}``."""
    if isinstance(samples, FrameSamples):
        return {"rots": samples.rots, "trans": samples.trans}
    return {"x": samples.x}


def as_state_dict(x: Tensor | State) -> State:
    """A prior draw or state as a dict (a Euclidean tensor becomes ``{"x": x}``)."""
    return dict(x) if isinstance(x, dict) else {"x": x}


def flow_state(flow: BackboneFlow, x: State) -> Tensor | State:
    """A stored state in the form ``flow`` takes: the dict for frames, the ``"x"`` tensor otherwise."""
    if isinstance(flow, FrameFlow):
        if set(x) != {"rots", "trans"}:
            raise ValueError(f"a frame flow needs states with keys rots, trans; got {sorted(x)}")
        return x
    if set(x) != {"x"}:
        raise ValueError(f"a Euclidean flow needs states with the key x; got {sorted(x)}")
    return x["x"]


def _check_meta(out: Path, settings: PairSettings) -> None:
    """Write ``pairs.json`` or check that the existing one matches ``settings`` (error naming the key)."""
    meta = out / PAIRS_META
    if meta.is_file():
        old = json.loads(meta.read_text())
        new = json.loads(settings.to_json())
        diff = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        if diff:
            key = diff[0]
            raise ValueError(
                f"{meta}: existing pairs were made with {key}={old.get(key)!r}, this run has "
                f"{key}={new.get(key)!r}; resume with the same settings or use a new --out"
            )
        return
    atomic_write_text(meta, settings.to_json())


@dataclass(frozen=True)
class PairRunSummary:
    """What :func:`generate_pairs` did: shards written and skipped, pairs written, seconds spent."""

    written: int
    skipped: int
    pairs: int
    seconds: float


def generate_pairs(
    ckpt: str | Path,
    out: str | Path,
    *,
    lengths: Sequence[int],
    num: int,
    solver: str = "exp_2m",
    steps: int | None = 20,
    grid: str = "uniform",
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    batch_size: int = 8,
    device: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> PairRunSummary:
    """Integrate the teacher ``ckpt`` from seeded noise and store ``(x0, x1)`` shards in ``out``.

    Args:
        ckpt: teacher checkpoint (any ``model_kind``).
        out: dataset folder (created; see the module docstring for the layout).
        lengths, num: ``num`` pairs of each length.
        solver, steps, grid, rtol, atol: the teacher's integration (any of
            :data:`~proteinflow.models.sampling.SAMPLING_METHODS`).
        seed: base seed of the noise (pair ``k`` of length ``N`` uses ``backbone_seed(seed, N, k)``).
        batch_size: pairs per batch (= per shard).
        device: torch device (default: CUDA if available, else CPU).
        rank, world_size: this process does the shards ``rank, rank + world_size, ...`` of the plan.
        progress: print one line per shard.

    Raises ``ValueError`` naming the argument (as its ``reflow pairs`` flag, :func:`check_sample_request`)
    or the existing ``pairs.json`` key that differs.
    """
    check_sample_request(lengths, num, batch_size, solver, grid)
    dev = resolve_device(device)
    flow, cfg = load_backbone_checkpoint(ckpt, dev)
    adaptive = solver == "dopri5"
    settings = PairSettings(
        teacher=str(ckpt),
        teacher_sha256=file_sha256(ckpt),
        model_kind=cfg.model_kind,
        solver=solver,
        steps=None if adaptive else steps,
        grid=grid,
        rtol=rtol if adaptive else None,
        atol=atol if adaptive else None,
        seed=seed,
        lengths=tuple(int(n) for n in lengths),
        num=num,
        batch_size=batch_size,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_meta(out, settings)  # every rank: write it if missing (same content), else check it
    written = skipped = pairs = 0
    start = time.perf_counter()
    for batch in shard_batches(plan_batches(lengths, num, batch_size), rank, world_size):
        path = out / shard_name(batch.length, batch.indices)
        if path.is_file():
            skipped += 1
            continue
        x0, mask = seeded_noise(flow, batch.length, batch.indices, seed, dev)
        t0 = device_seconds(dev)
        result = flow.sample(
            mask, method=solver, steps=settings.steps, grid=grid, rtol=rtol, atol=atol, x_init=x0
        )
        seconds = device_seconds(dev) - t0
        shard = {
            "x0": {k: v.cpu() for k, v in as_state_dict(x0).items()},
            "x1": {k: v.cpu() for k, v in state_of(result).items()},
            "index": torch.tensor(batch.indices, dtype=torch.long),
            "seed": torch.tensor([backbone_seed(seed, batch.length, k) for k in batch.indices]),
            "nfe": result.nfe_per_sample.cpu().to(torch.long),
            "seconds": float(seconds),
            "length": int(batch.length),
        }
        with atomic_path(path) as tmp:
            torch.save(shard, tmp)
        written += 1
        pairs += len(batch.indices)
        if progress:
            per = seconds / len(batch.indices)
            print(f"{path.name}: {len(batch.indices)} pairs, {per:.2f} s/pair", flush=True)
    return PairRunSummary(written, skipped, pairs, time.perf_counter() - start)


def read_pair_settings(folder: str | Path) -> PairSettings:
    """The settings of a pair dataset; ``FileNotFoundError``/``ValueError`` naming the file."""
    meta = Path(folder) / PAIRS_META
    if not meta.is_file():
        raise FileNotFoundError(
            f"{folder} is not a pair dataset: {meta} is missing (make it with `reflow pairs`)"
        )
    raw = json.loads(meta.read_text())
    if raw.get("format") != PAIRS_FORMAT:
        raise ValueError(
            f"{meta}: unknown pair-dataset format {raw.get('format')!r} (expected {PAIRS_FORMAT})"
        )
    raw["lengths"] = tuple(raw["lengths"])
    return PairSettings(**raw)


def read_shard(path: str | Path) -> dict[str, Any]:
    """One shard (``torch.load(weights_only=True)``); ``ValueError`` naming the file if it is not one."""
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path} is not a readable pair shard ({type(err).__name__}: {err})") from err
    missing = {"x0", "x1", "index", "length"} - set(shard) if isinstance(shard, dict) else {"x0"}
    if missing:
        raise ValueError(f"{path} is not a pair shard (missing {sorted(missing)})")
    return shard


@dataclass
class PairExample:
    """One coupled pair: ``x0``, ``x1`` state dicts (leaves ``[N, ...]``), its length and index."""

    x0: State
    x1: State
    length: int
    index: int


class PairDataset(torch.utils.data.Dataset):
    """Every pair of a pair-dataset folder, in memory (shards in name order, pairs in shard order).

    Attributes:
        settings: the folder's :class:`PairSettings`.
        lengths: ``[P]`` numpy array of pair lengths (for length-budget batching).
        seconds_per_pair: the teacher's mean wall time per pair over the shards read.
    """

    def __init__(self, folder: str | Path) -> None:
        import numpy as np

        self.folder = Path(folder)
        self.settings = read_pair_settings(self.folder)
        self.examples: list[PairExample] = []
        seconds = 0.0
        for path in sorted(self.folder.glob("L*_i*.pt")):
            shard = read_shard(path)
            seconds += float(shard.get("seconds", 0.0))
            for j, k in enumerate(shard["index"].tolist()):
                x0 = {key: v[j] for key, v in shard["x0"].items()}
                x1 = {key: v[j] for key, v in shard["x1"].items()}
                self.examples.append(PairExample(x0, x1, int(shard["length"]), int(k)))
        if not self.examples:
            raise ValueError(f"{self.folder}: no pair shards (L*_i*.pt) found")
        self.lengths = np.array([e.length for e in self.examples], dtype=np.int64)
        self.seconds_per_pair = seconds / len(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> PairExample:
        return self.examples[index]


@dataclass
class PairBatch:
    """A padded batch of pairs: ``x0``/``x1`` state dicts (leaves ``[B, N, ...]``), ``mask [B, N]``,
    ``residue_index [B, N]`` (0-based, as sampling makes them) and ``names`` (``L<N>_<index>``)."""

    x0: State
    x1: State
    mask: Tensor
    residue_index: Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.mask.shape[0])


def _pad(leaves: Sequence[Tensor], n_max: int, fill: Tensor) -> Tensor:
    """Stack ``[N_i, ...]`` leaves into ``[B, n_max, ...]``, padding with ``fill`` (``[...]``)."""
    out = fill.expand(len(leaves), n_max, *fill.shape).clone()
    for i, leaf in enumerate(leaves):
        out[i, : leaf.shape[0]] = leaf
    return out


def collate_pairs(examples: Sequence[PairExample]) -> PairBatch:
    """Pad pairs of different lengths: rotations with the identity, other leaves with 0, mask False."""
    n_max = max(e.length for e in examples)
    states: dict[str, State] = {"x0": {}, "x1": {}}
    for side in states:
        for key, first in getattr(examples[0], side).items():
            tail = first.shape[1:]
            fill = torch.eye(3, dtype=first.dtype) if key == "rots" else torch.zeros(tail, dtype=first.dtype)
            states[side][key] = _pad([getattr(e, side)[key] for e in examples], n_max, fill)
    mask = torch.zeros(len(examples), n_max, dtype=torch.bool)
    for i, e in enumerate(examples):
        mask[i, : e.length] = True
    res_idx = torch.arange(n_max).expand(len(examples), n_max).clone()
    names = [f"L{e.length}_{e.index}" for e in examples]
    return PairBatch(states["x0"], states["x1"], mask, res_idx, names)
