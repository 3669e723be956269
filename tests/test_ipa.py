"""Tests for the IPA frame denoiser: equivariance, padding, gradients, brute-force references."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from scipy.spatial.transform import Rotation

from proteinflow.models.embeddings import rbf_embedding, sinusoidal_embedding
from proteinflow.models.ipa import (
    FrameDenoiser,
    InvariantPointAttention,
    IPAConfig,
    quaternion_vector_to_rotation,
)


def _random_rotations(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    q = torch.randn(*shape, 4, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True)
    return quaternion_vector_to_rotation(q[..., 1:] / q[..., :1])


def _frames(b: int, n: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    # a random walk with ~3.8 A steps, roughly like a CA trace, away from the origin
    steps = torch.randn(b, n, 3, dtype=dtype)
    trans = 3.8 * torch.cumsum(steps / steps.norm(dim=-1, keepdim=True), dim=1) + 7.0
    return _random_rotations(b, n, dtype=dtype), trans


def _perturbed(cfg: IPAConfig, dtype: torch.dtype = torch.float64, scale: float = 0.1) -> FrameDenoiser:
    """A model whose zero-initialised ("final") layers are made non-zero, so every path is active."""
    net = FrameDenoiser(cfg).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def _inputs(b: int, n: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    rots, trans = _frames(b, n, dtype)
    sc = trans + 2.0 * torch.randn_like(trans)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, -3:] = False
    return dict(
        rots=rots,
        trans=trans,
        t=torch.rand(b, dtype=dtype),
        mask=mask,
        self_cond_trans=sc,
        res_idx=torch.arange(n).expand(b, n) + 3,
    )


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def test_quaternion_vector_matches_scipy() -> None:
    bcd = torch.randn(50, 3, dtype=torch.float64) * 2.0
    quat_xyzw = torch.cat([bcd, torch.ones(50, 1, dtype=torch.float64)], dim=-1).numpy()
    expected = torch.from_numpy(Rotation.from_quat(quat_xyzw).as_matrix())
    torch.testing.assert_close(quaternion_vector_to_rotation(bcd), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        quaternion_vector_to_rotation(torch.zeros(3, dtype=torch.float64)), torch.eye(3, dtype=torch.float64)
    )


def test_sinusoidal_and_rbf_closed_form() -> None:
    x = torch.tensor([0.0, 1.5, -7.0], dtype=torch.float64)
    emb = sinusoidal_embedding(x, 6, max_period=100.0)
    freqs = torch.tensor([1.0, 100.0 ** (-1 / 3), 100.0 ** (-2 / 3)], dtype=torch.float64)
    expected = torch.cat([torch.sin(x[:, None] * freqs), torch.cos(x[:, None] * freqs)], dim=-1)
    torch.testing.assert_close(emb, expected)
    d = torch.tensor([0.0, 5.0, 12.5], dtype=torch.float64)
    rbf = rbf_embedding(d, 0.0, 20.0, 5)  # centres 0, 5, 10, 15, 20, sigma 5
    torch.testing.assert_close(rbf[1, 1], torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(rbf[2, 2], torch.tensor(math.exp(-0.25), dtype=torch.float64))
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(x, 5)


def _reference_ipa(
    ipa: InvariantPointAttention,
    s: torch.Tensor,
    z: torch.Tensor,
    rots: torch.Tensor,
    trans: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """AlphaFold2 Algorithm 22 written out literally, with [B, N, N, H, P, 3] point differences."""
    cfg = ipa.cfg
    b, n = s.shape[:2]
    h, c, pq, pv = cfg.num_heads, cfg.c_hidden, cfg.num_qk_points, cfg.num_v_points
    q = ipa.linear_q(s).view(b, n, h, c)
    k, v = ipa.linear_kv(s).view(b, n, h, 2 * c).split(c, dim=-1)

    def glob(x: torch.Tensor) -> torch.Tensor:  # [B, N, H, P, 3]
        return torch.einsum("bnij,bnhpj->bnhpi", rots, x) + trans[:, :, None, None, :]

    qp = glob(ipa.linear_q_pts(s).view(b, n, h, pq, 3))
    kvp = glob(ipa.linear_kv_pts(s).view(b, n, h, pq + pv, 3))
    kp, vp = kvp[:, :, :, :pq], kvp[:, :, :, pq:]
    gamma = torch.nn.functional.softplus(ipa.head_weights)
    w_c = math.sqrt(2.0 / (9.0 * pq))
    bias = ipa.linear_b(z)  # [B, N, N, H]
    scal = torch.einsum("bihc,bjhc->bijh", q, k) / math.sqrt(c)
    sq = ((qp[:, :, None] - kp[:, None, :]) ** 2).sum((-1, -2))  # [B, N, N, H]
    logits = math.sqrt(1 / 3) * (scal + bias - 0.5 * gamma * w_c * sq)
    logits = logits.masked_fill(~mask.bool()[:, None, :, None], -1e30)
    a = torch.softmax(logits, dim=2)  # over j
    o = torch.einsum("bijh,bjhc->bihc", a, v)
    o_pt_glob = torch.einsum("bijh,bjhpx->bihpx", a, vp)
    o_pt = torch.einsum("bnji,bnhpj->bnhpi", rots, o_pt_glob - trans[:, :, None, None, :])
    o_norm = torch.sqrt((o_pt**2).sum(-1) + ipa.eps)
    o_pair = torch.einsum("bijh,bijc->bihc", a, ipa.down_z(z))
    feats = torch.cat([o.flatten(-2), o_pt.flatten(-3), o_norm.flatten(-2), o_pair.flatten(-2)], dim=-1)
    return ipa.linear_out(feats)


def test_ipa_matches_bruteforce_reference() -> None:
    cfg = IPAConfig.tiny()
    ipa = InvariantPointAttention(cfg).double()
    with torch.no_grad():
        for p in ipa.parameters():
            p.add_(0.3 * torch.randn_like(p))
    b, n = 2, 9
    s = torch.randn(b, n, cfg.c_s, dtype=torch.float64)
    z = torch.randn(b, n, n, cfg.c_z, dtype=torch.float64)
    rots, trans = _frames(b, n)
    trans = 0.1 * trans
    mask = torch.ones(b, n)
    mask[1, 4:] = 0
    mask = mask.double()
    got = ipa(s, z, rots, trans, mask)
    expected = _reference_ipa(ipa, s, z, rots, trans, mask)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------
# the denoiser
# ---------------------------------------------------------------------------------------------------


def test_default_config_is_frameflow_size() -> None:
    cfg = IPAConfig()
    assert (cfg.num_blocks, cfg.c_s, cfg.c_z, cfg.c_hidden, cfg.num_heads) == (6, 256, 128, 16, 8)
    assert cfg.seq_tfmr_layers == 2
    assert (cfg.num_qk_points, cfg.num_v_points) == (8, 12)
    with pytest.raises(ValueError, match="c_s"):
        IPAConfig(c_s=0)


def _num_params(cfg: IPAConfig) -> int:
    return sum(p.numel() for p in FrameDenoiser(cfg).parameters())


def test_parameter_counts_are_pinned() -> None:
    # FrameFlow's network (c_hidden 16 per head, 8 heads, 6 blocks, 2-layer sequence transformer) has
    # 11.26M parameters; the defaults and configs/frames_frameflow.yaml build exactly that.
    import yaml

    config = Path(__file__).resolve().parents[1] / "configs" / "frames_frameflow.yaml"
    frameflow = yaml.safe_load(config.read_text())["model"] or {}
    assert abs(_num_params(IPAConfig(**frameflow)) / 11.26e6 - 1) < 0.01
    assert abs(_num_params(IPAConfig()) / 11.26e6 - 1) < 0.01
    # the development configs' c_hidden 128 (8x wider attention) would be 16.8M
    assert abs(_num_params(IPAConfig(c_hidden=128)) / 16.77e6 - 1) < 0.01


def test_initial_model_returns_input_frames() -> None:
    # backbone updates are zero-initialised: at init the prediction is the input frame
    net = FrameDenoiser(IPAConfig.tiny()).double()
    x = _inputs(2, 7)
    out = net(**x)
    m = x["mask"]
    torch.testing.assert_close(out.pred_rots[m], x["rots"][m], atol=1e-12, rtol=0)
    torch.testing.assert_close(out.pred_trans[m], x["trans"][m], atol=1e-12, rtol=1e-12)
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    torch.testing.assert_close(out.pred_rots[~m], eye)
    assert torch.all(out.pred_trans[~m] == 0)


@pytest.mark.parametrize("seq_layers", [0, 1])
def test_se3_equivariance(seq_layers: int) -> None:
    cfg = IPAConfig.tiny(seq_tfmr_layers=seq_layers, predict_psi=True)
    net = _perturbed(cfg)
    x = _inputs(2, 8)
    out = net(**x)
    # the check below must be able to fail: the prediction really moved the frames
    assert (out.pred_trans - x["trans"])[x["mask"]].abs().max() > 1e-2

    q = _random_rotations(2)[:, None]  # [B, 1, 3, 3]
    shift = 25.0 * torch.randn(2, 1, 3, dtype=torch.float64)
    moved = dict(x)
    moved["rots"] = q @ x["rots"]
    moved["trans"] = (q @ x["trans"][..., None]).squeeze(-1) + shift
    moved["self_cond_trans"] = (q @ x["self_cond_trans"][..., None]).squeeze(-1) + shift
    out2 = net(**moved)
    m = x["mask"]
    rot_err = (out2.pred_rots - q @ out.pred_rots)[m].abs().max()
    trans_err = (out2.pred_trans - ((q @ out.pred_trans[..., None]).squeeze(-1) + shift))[m].abs().max()
    assert rot_err <= 1e-5 and trans_err <= 1e-5, (rot_err, trans_err)
    torch.testing.assert_close(out2.psi[m], out.psi[m], atol=1e-8, rtol=0)
    torch.testing.assert_close(out2.node_features, out.node_features, atol=1e-8, rtol=0)


@pytest.mark.parametrize("seq_layers", [0, 1])
def test_padding_garbage_is_irrelevant(seq_layers: int) -> None:
    cfg = IPAConfig.tiny(seq_tfmr_layers=seq_layers, predict_psi=True, num_blocks=3)
    net = _perturbed(cfg)
    n_real, n_pad = 7, 5
    x = _inputs(1, n_real)
    x["mask"] = torch.ones(1, n_real, dtype=torch.bool)
    ref = net(**x)

    # interleave padding positions with garbage (huge values, NaN, inf) among the real residues
    n = n_real + n_pad
    real_pos = torch.tensor([0, 2, 3, 5, 8, 9, 11])
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, real_pos] = True
    rots = 1e3 * torch.randn(1, n, 3, 3, dtype=torch.float64)
    rots[0, 1, 0, 0] = float("nan")
    trans = 1e4 * torch.randn(1, n, 3, dtype=torch.float64)
    trans[0, 4, 1] = float("inf")
    sc = 1e4 * torch.randn(1, n, 3, dtype=torch.float64)
    res_idx = torch.randint(-(10**6), 10**6, (1, n))
    rots[0, real_pos], trans[0, real_pos] = x["rots"][0], x["trans"][0]
    sc[0, real_pos], res_idx[0, real_pos] = x["self_cond_trans"][0], x["res_idx"][0]
    padded = net(rots, trans, x["t"], mask, sc, res_idx)

    torch.testing.assert_close(padded.pred_rots[0, real_pos], ref.pred_rots[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(padded.pred_trans[0, real_pos], ref.pred_trans[0], atol=1e-9, rtol=0)
    torch.testing.assert_close(padded.psi[0, real_pos], ref.psi[0], atol=1e-10, rtol=0)
    assert torch.isfinite(padded.pred_rots).all() and torch.isfinite(padded.pred_trans).all()

    # batching with another (different-length) sample changes nothing either
    other = _inputs(1, n)
    batched = net(
        torch.cat([rots.nan_to_num(), other["rots"]]),
        torch.cat([trans.nan_to_num(), other["trans"]]),
        torch.cat([x["t"], other["t"]]),
        torch.cat([mask, torch.ones(1, n, dtype=torch.bool)]),
        torch.cat([sc, other["self_cond_trans"]]),
        torch.cat([res_idx, other["res_idx"]]),
    )
    torch.testing.assert_close(batched.pred_trans[0, real_pos], ref.pred_trans[0], atol=1e-9, rtol=0)


def test_gradients_reach_every_parameter() -> None:
    net = _perturbed(IPAConfig.tiny(seq_tfmr_layers=1, predict_psi=True), dtype=torch.float32)
    x = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in _inputs(2, 6).items()}
    out = net(**x)
    target_r, target_t = _frames(2, 6, torch.float32)
    loss = ((out.pred_rots - target_r) ** 2).mean() + ((out.pred_trans - target_t) ** 2).mean()
    loss = loss + out.psi.sum()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_input_gradients_match_finite_differences() -> None:
    net = _perturbed(IPAConfig.tiny(seq_tfmr_layers=1), scale=0.3)
    x = _inputs(1, 5)
    x["mask"] = torch.tensor([[True, True, True, True, False]])

    def f(trans: torch.Tensor, sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = net(**dict(x, trans=trans, self_cond_trans=sc))
        return out.pred_trans, out.pred_rots

    inputs = (x["trans"].clone().requires_grad_(), x["self_cond_trans"].clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_output_rotations_are_rotations_and_time_matters() -> None:
    net = _perturbed(IPAConfig.tiny(num_blocks=4), dtype=torch.float32, scale=0.2)
    x = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in _inputs(3, 10).items()}
    out = net(**x)
    r = out.pred_rots
    eye = torch.eye(3).expand_as(r)
    assert (r.transpose(-1, -2) @ r - eye).abs().max() <= 1e-5
    assert (torch.linalg.det(r) - 1).abs().max() <= 1e-5
    x2 = dict(x, t=1.0 - x["t"])
    assert (net(**x2).pred_trans - out.pred_trans).abs().max() > 1e-3


def test_pair_chunking_gives_same_result() -> None:
    cfg = IPAConfig.tiny()
    net = _perturbed(cfg)
    chunked = FrameDenoiser(IPAConfig.tiny(pair_chunk_size=3)).double()
    chunked.load_state_dict(net.state_dict())
    x = _inputs(2, 8)
    a, b = net(**x), chunked(**x)
    torch.testing.assert_close(a.pred_trans, b.pred_trans, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(a.pred_rots, b.pred_rots, atol=1e-12, rtol=1e-12)


def test_checkpointed_blocks_give_same_gradients() -> None:
    net = _perturbed(IPAConfig.tiny())
    ckpt = FrameDenoiser(IPAConfig.tiny(checkpoint_blocks=True)).double()
    ckpt.load_state_dict(net.state_dict())
    x = _inputs(2, 6)
    for model in (net, ckpt):
        out = model(**x)
        ((out.pred_trans - x["trans"]) ** 2).sum().add(out.pred_rots.sum()).backward()
    for (name, p), q in zip(net.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-9, msg=name)


def test_bad_arguments_are_named() -> None:
    net = FrameDenoiser(IPAConfig.tiny())
    x = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in _inputs(2, 5).items()}
    with pytest.raises(ValueError, match="rots"):
        net(**dict(x, rots=x["rots"][..., :2]))
    with pytest.raises(ValueError, match="trans"):
        net(**dict(x, trans=x["trans"][:, :4]))
    with pytest.raises(ValueError, match="t must"):
        net(**dict(x, t=x["t"][:1]))
    with pytest.raises(ValueError, match="mask"):
        net(**dict(x, mask=x["mask"][:, :3]))
    with pytest.raises(TypeError, match="res_idx"):
        net(**dict(x, res_idx=x["res_idx"].float()))
    no_sc = FrameDenoiser(IPAConfig.tiny(self_condition=False))
    with pytest.raises(ValueError, match="self_cond"):
        no_sc(**x)
    with pytest.raises(TypeError, match="cfg"):
        FrameDenoiser({"c_s": 3})  # type: ignore[arg-type]
