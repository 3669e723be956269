"""Sizes and options of the IPA trunk (:class:`~proteinflow.models.ipa.FrameDenoiser`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IPAConfig"]


@dataclass(frozen=True)
class IPAConfig:
    """Sizes and options of :class:`~proteinflow.models.ipa.FrameDenoiser`.

    Defaults are FrameFlow's network (microsoft/protein-frame-flow, released ``configs/base.yaml``):
    node 256, edge 128, IPA hidden 16 per head, 8 heads, 8 query/key points, 12 value points, 6 blocks,
    a 2-layer sequence transformer in each block, relative-position clip 64, 22 distance bins,
    time/position embeddings of 128: 11.25M parameters (pinned by ``tests/test_ipa.py``). ``c_hidden`` is
    per head (``linear_q: c_s -> c_hidden * heads``). Some of FrameFlow's development configs used
    ``c_hidden: 128`` (16.77M parameters with the same other sizes).

    Attributes:
        c_s: node (single) feature size.
        c_z: edge (pair) feature size.
        c_hidden: IPA scalar query/key/value size per head.
        num_heads: IPA heads.
        num_qk_points: query/key points per head.
        num_v_points: value points per head.
        c_pair_value: size the pair features are projected to before the pair-value output.
        num_blocks: IPA blocks.
        c_time: sinusoidal time embedding size.
        c_pos: sinusoidal residue-index embedding size.
        time_scale: ``t`` is multiplied by this before the sinusoidal embedding.
        relpos_k: relative sequence offsets are clipped to ``[-relpos_k, relpos_k]`` (one-hot).
        edge_feat_dim: per-node projection size in the edge embedder.
        num_dist_bins: RBF centres of the distograms (evenly on ``[0, dist_max]`` Angstrom).
        dist_max: last distogram centre in Angstrom.
        self_condition: whether the network takes previous ``x1_hat`` translations as an input.
        edge_transition_hidden: hidden width of the between-block edge MLP (FrameFlow: c_s + c_z).
        seq_tfmr_layers: post-LN transformer-encoder layers after each IPA (0 = none).
        seq_tfmr_heads: heads of that transformer.
        trans_scale: internal translation scale (Angstrom -> internal units; 0.1 = nm).
        predict_psi: also predict the psi torsion as a unit vector ``(sin, cos)``.
        pair_chunk_size: if set, pair MLPs are evaluated in chunks of this many rows (caps the peak
            memory of no-grad sampling; under autograd the saved activations dominate instead).
        checkpoint_blocks: recompute each block in the backward pass (``torch.utils.checkpoint``):
            training memory ~ one block's activations instead of ``num_blocks`` of them, ~1.3x time.
    """

    c_s: int = 256
    c_z: int = 128
    c_hidden: int = 16
    num_heads: int = 8
    num_qk_points: int = 8
    num_v_points: int = 12
    c_pair_value: int = 32
    num_blocks: int = 6
    c_time: int = 128
    c_pos: int = 128
    time_scale: float = 1000.0
    relpos_k: int = 64
    edge_feat_dim: int = 64
    num_dist_bins: int = 22
    dist_max: float = 20.0
    self_condition: bool = True
    edge_transition_hidden: int = 384
    seq_tfmr_layers: int = 2
    seq_tfmr_heads: int = 4
    trans_scale: float = 0.1
    predict_psi: bool = False
    pair_chunk_size: int | None = None
    checkpoint_blocks: bool = False

    def __post_init__(self) -> None:
        positive = (
            "c_s", "c_z", "c_hidden", "num_heads", "num_qk_points", "num_v_points", "c_pair_value",
            "num_blocks", "relpos_k", "edge_feat_dim", "edge_transition_hidden", "seq_tfmr_heads",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"IPAConfig.{name} must be a positive integer, got {value!r}")
        for name in ("c_time", "c_pos"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0 or value % 2:
                raise ValueError(f"IPAConfig.{name} must be a positive even integer, got {value!r}")
        if not isinstance(self.num_dist_bins, int) or self.num_dist_bins < 2:
            raise ValueError(f"IPAConfig.num_dist_bins must be an integer >= 2, got {self.num_dist_bins!r}")
        if not isinstance(self.seq_tfmr_layers, int) or self.seq_tfmr_layers < 0:
            raise ValueError(
                f"IPAConfig.seq_tfmr_layers must be an integer >= 0, got {self.seq_tfmr_layers!r}"
            )
        if self.seq_tfmr_layers and self.c_s % self.seq_tfmr_heads:
            raise ValueError(
                f"IPAConfig.c_s ({self.c_s}) must be divisible by seq_tfmr_heads ({self.seq_tfmr_heads})"
            )
        for name in ("time_scale", "dist_max", "trans_scale"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"IPAConfig.{name} must be > 0, got {value!r}")
        if self.pair_chunk_size is not None and (
            not isinstance(self.pair_chunk_size, int) or self.pair_chunk_size <= 0
        ):
            raise ValueError(
                f"IPAConfig.pair_chunk_size must be None or a positive integer, got {self.pair_chunk_size!r}"
            )

    @classmethod
    def tiny(cls, **overrides: object) -> IPAConfig:
        """A very small configuration for tests and smoke runs (a few thousand parameters)."""
        values: dict[str, object] = dict(
            c_s=32, c_z=16, c_hidden=8, num_heads=2, num_qk_points=3, num_v_points=4, c_pair_value=4,
            num_blocks=2, c_time=16, c_pos=16, relpos_k=8, edge_feat_dim=8, num_dist_bins=8,
            edge_transition_hidden=48, seq_tfmr_layers=0, seq_tfmr_heads=2,
        )  # fmt: skip
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
