"""``proteinflow eval`` without survivorship: honest denominators, whole-set novelty with a prefilter,
reference/train overlap, strict pairing and trajectory files that are never read as samples."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from proteinflow.protein import synthetic
from proteinflow.protein.eval_report import summary_markdown
from proteinflow.protein.evaluation import (
    DEFAULT_PREFILTER_K,
    DEFAULT_TOP_K,
    _set_column,
    evaluate,
    fraction_over_all,
    summarise,
    summarise_coverage,
)
from proteinflow.protein.set_metrics import summarise_columns
from proteinflow.protein.structure_set import (
    EvalStructure,
    StructureSet,
    ca_fingerprint,
    is_trajectory_path,
    load_structure_set,
    shared_structures,
)
from proteinflow.protein.tmscore import nearest_tm, shape_descriptor, tm_score
from proteinflow.protein.write import write_pdb, write_trajectory_pdb


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _structure(name: str, coords: np.ndarray, source: str = "") -> EvalStructure:
    return EvalStructure(name, np.asarray(coords, dtype=np.float64), None, None, source or f"{name}.pdb")


def _cath_files(cath_dir: Path, folder: str, n: int, start: int = 0) -> list[Path]:
    return sorted((cath_dir / folder).glob("*.pdb.gz"))[start : start + n]


# ------------------------------------------------------------------------------------ honest denominators


def test_fraction_over_all_counts_failures_as_not_passing() -> None:
    # 4 hook runs succeeded (3 designable), 1 returned NaN, 3 never returned, on 8 structures
    share = fraction_over_all([1.0, True, 1, 0.0, float("nan")], n_total=8)
    assert share.fraction == pytest.approx(3 / 8)  # not 3/4 over the successful runs only
    assert (share.n_pass, share.n_total, share.n_failed) == (3, 8, 4)
    assert fraction_over_all([None, None], 2).fraction == 0.0
    assert math.isnan(fraction_over_all([], 0).fraction)
    with pytest.raises(ValueError, match="values"):
        fraction_over_all([1.0, 1.0, 0.0], 2)  # more outcomes than structures: a pairing bug
    with pytest.raises(ValueError, match=r"values\[1\]"):
        fraction_over_all([1.0, 0.7], 2)  # not a yes/no outcome
    with pytest.raises(ValueError, match="n_total"):
        fraction_over_all([], -1)


def test_summary_reports_coverage_and_counts_failed_outcomes() -> None:
    rows: list[dict[str, object]] = [
        {"name": "a", "ca_only": 0.0, "novelty_tm": 0.8, "has_atom_clash": 0.0, "has_psea_sse": 1.0},
        {"name": "b", "ca_only": 0.0, "novelty_tm": float("nan"), "has_atom_clash": float("nan")},
        {"name": "c", "ca_only": 0.0, "novelty_tm": 0.4, "has_atom_clash": 0.0, "has_psea_sse": 1.0},
        {"name": "d", "ca_only": 1.0, "novelty_tm": 0.6, "has_atom_clash": float("nan"), "has_psea_sse": 0.0},
    ]
    cov = summarise_coverage(rows)
    novelty = cov["novelty_tm"]
    # the mean is over the covered structures, and the summary says how many and which are not
    assert novelty.value == pytest.approx(0.6)
    assert (novelty.n_total, novelty.n_covered, novelty.n_nan, novelty.n_missing) == (4, 3, 1, 0)
    assert novelty.uncovered == ("b",) and not novelty.complete
    # a yes/no column counts a failed structure as not passing (here: as clashing); the C-alpha-only
    # structure has no N/C/O, so atom clashes do not apply to it (neither failure nor pass)
    clash = cov["has_atom_clash"]
    assert clash.value == pytest.approx(1 / 3)  # the old mean over finite values said 0.0
    assert (clash.n_applicable, clash.n_not_applicable, clash.n_covered) == (3, 1, 2)
    sse = cov["has_psea_sse"]
    assert sse.value == pytest.approx(2 / 4) and sse.n_missing == 1 and sse.uncovered == ("b",)
    # not computed for this set: NaN, nothing counted as failed
    assert math.isnan(cov["nearest_ref_tm"].value) and not cov["nearest_ref_tm"].computed
    assert cov["nearest_ref_tm"].uncovered == ()
    assert summarise(rows)["has_atom_clash"] == pytest.approx(1 / 3)
    designable = summarise_columns(
        [{"name": "x", "designability_designable": 1.0}, {"name": "y", "designability_error": "exit 1"}],
        ["designability_designable"],
    )["designability_designable"]
    assert designable.value == 0.5 and designable.uncovered == ("y",)


def test_set_column_refuses_mismatched_lengths() -> None:
    rows: list[dict[str, object]] = [{"name": "a"}, {"name": "b"}]
    with pytest.raises(ValueError):
        _set_column(rows, "novelty_tm", [0.5])  # a truncating zip would leave b without a value
    _set_column(rows, "novelty_tm", [0.5, 0.25])
    assert [r["novelty_tm"] for r in rows] == [0.5, 0.25]


def test_summary_markdown_shows_coverage_and_designability_over_all() -> None:
    helix = synthetic.helix(30).numpy()
    samples = StructureSet(
        "s",
        [
            _structure("h30", helix),
            _structure("h31", synthetic.helix(31).numpy()),
            _structure("long80", synthetic.helix(80).numpy()),  # no training structure within +-20 %
        ],
    )
    train = StructureSet("t", [_structure("t30", helix @ _rotation(0).T), _structure("t28", helix[:28])])
    result = evaluate(samples, train=train, length_window=0.2)
    assert result.novelty is not None and result.novelty.n_found == 2
    assert result.novelty.n_candidates == 4  # 2 in the window of each 30-ish helix, none for long80
    text = summary_markdown(result, "s", None)
    table_row = next(line for line in text.splitlines() if line.startswith("| s |"))
    assert table_row.endswith(" (2/3) | - |")  # max TM train covers 2 of 3; no reference: '-'
    assert table_row.count("(") == 1  # every other column covers all 3
    assert "max TM train: covered 2 of 3 (1 NaN)" in text and "`long80`" in text
    assert "over 2 of 3 samples against 2 training structures" in text
    # designability: one designable, one not, one failed hook run -> 1 of 3, not 1 of 2
    rows = result.samples.rows
    rows[0]["designability_designable"] = 1.0
    rows[1]["designability_designable"] = 0.0
    rows[2]["designability_error"] = "exit 1: boom"
    text = summary_markdown(result, "s", None)
    assert "designable: 1 of 3 evaluated structures (0.333); 1 without a result" in text


# ------------------------------------------------------------------------------------------------ novelty


def test_shape_descriptor_is_rigid_invariant_and_separates_folds() -> None:
    ca = synthetic.helix(40).numpy()[:, 1]
    moved = ca @ _rotation(1).T + np.array([30.0, -5.0, 2.0])
    np.testing.assert_allclose(shape_descriptor(moved), shape_descriptor(ca), atol=1e-12)
    strand = synthetic.strand(40).numpy()[:, 1]
    assert np.linalg.norm(shape_descriptor(strand) - shape_descriptor(ca)) > 0.5


def test_prefilter_finds_the_training_structure_itself(cath_dir: Path) -> None:
    train = load_structure_set(cath_dir / "train", max_structures=120, seed=3)
    assert len(train.structures) >= 100
    pool = [s.ca for s in train.structures]
    descriptors = np.stack([shape_descriptor(c) for c in pool])
    for k in (5, 17, 60):  # a sample IS a training structure, moved: novelty TM = 1 with a shortlist of 1
        query = pool[k] @ _rotation(k).T + 12.0
        # the descriptor alone (prefilter_k = 1), and the coarse TM-align stage (8 coarse, 1 in full)
        for prefilter_k, n_coarse in ((1, 0), (8, 8)):
            hit = nearest_tm(
                query, pool, length_window=0.2, top_k=1, prefilter_k=prefilter_k, descriptors=descriptors
            )
            assert hit.tm == pytest.approx(1.0, abs=1e-6) and hit.n_compared == 1
            assert np.array_equal(pool[hit.index], pool[k]) and hit.n_coarse == n_coarse
            assert hit.n_candidates > 8  # the window held more; the prefilter chose the right one
    # a shortlist never beats the exhaustive search, and aligns at most top_k in full
    query = load_structure_set(cath_dir / "val", max_structures=1, seed=0).structures[0].ca
    calls: list[int] = []

    def counting(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        calls.append(len(x))
        return tm_score(x, y)

    short = nearest_tm(
        query, pool, length_window=0.2, top_k=3, prefilter_k=6, descriptors=descriptors, tm_fn=counting
    )
    full = nearest_tm(query, pool, length_window=0.2)
    assert short.n_coarse == 6 and short.n_compared <= 3 and short.n_candidates == full.n_candidates > 6
    assert calls.count(len(query[::2])) == 6 and calls.count(len(query)) == short.n_compared
    assert short.tm <= full.tm + 1e-9
    with pytest.raises(ValueError, match="top_k"):
        nearest_tm(query, pool, top_k=0)
    with pytest.raises(ValueError, match="prefilter_k"):
        nearest_tm(query, pool, top_k=2, prefilter_k=0)
    with pytest.raises(ValueError, match="descriptors"):
        nearest_tm(query, pool, top_k=2, prefilter_k=4, descriptors=descriptors[:3])


def test_eval_defaults_use_the_whole_training_set() -> None:
    from proteinflow.cli import build_parser
    from proteinflow.cli.eval import DEFAULT_PREFILTER_K as CLI_PREFILTER_K
    from proteinflow.cli.eval import DEFAULT_TOP_K as CLI_TOP_K

    args = build_parser().parse_args(["eval", "x"])
    assert args.train_max is None  # 'all', not a random 500
    assert args.top_k == CLI_TOP_K == DEFAULT_TOP_K
    assert args.prefilter_k == CLI_PREFILTER_K == DEFAULT_PREFILTER_K
    assert build_parser().parse_args(["eval", "x", "--top-k", "all"]).top_k is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "x", "--top-k", "0"])


# ------------------------------------------------------------------------------------------------ overlap


def test_ca_fingerprint_matches_pdb_precision_and_float32() -> None:
    rng = np.random.default_rng(0)
    ca = np.round(rng.uniform(-999.0, 999.0, size=(300, 3)), 3)  # PDB coordinates
    assert ca_fingerprint(ca.astype(np.float32)) == ca_fingerprint(ca)  # prepared datasets store float32
    moved = ca.copy()
    moved[7, 1] += 0.002
    assert ca_fingerprint(moved) != ca_fingerprint(ca)
    assert ca_fingerprint(ca[:-1]) != ca_fingerprint(ca)


def test_shared_structures_by_coordinates_not_names() -> None:
    a = synthetic.helix(20).numpy()
    b = synthetic.strand(20).numpy()
    first = [_structure("x", a), _structure("y", b)]
    second = [_structure("renamed_copy", a), _structure("x", a + 1.0)]  # same name, moved: not the same
    overlap = shared_structures(first, second)
    assert overlap.pairs == (("x", "renamed_copy"),) and overlap.n_shared == 1
    assert (overlap.n_first, overlap.n_second) == (2, 2)


def test_eval_warns_when_reference_overlaps_train(tmp_path: Path, cath_dir: Path, capsys) -> None:  # noqa: ANN001
    from proteinflow.cli import main

    samples, reference, train = tmp_path / "samples", tmp_path / "reference", tmp_path / "train"
    for folder in (samples, reference, train):
        folder.mkdir()
    val = _cath_files(cath_dir, "val", 6)
    for path in val[:2]:
        shutil.copy(path, samples / path.name)
    for path in val[2:6]:
        shutil.copy(path, reference / path.name)
    for path in _cath_files(cath_dir, "train", 5):
        shutil.copy(path, train / path.name)
    shutil.copy(val[3], train / "renamed.pdb.gz")  # a reference structure under another name
    shutil.copy(val[0], train / "sample_copy.pdb.gz")  # an evaluated structure

    args = ["eval", str(samples), "--reference", str(reference), "--train", str(train), "--no-progress"]
    assert main([*args, "--length-window", "off"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: 1 of 4 reference structures are also in the training set" in err
    assert "WARNING: 1 of 2 evaluated structures are also in the training set" in err
    summary = (samples / "eval" / "summary.md").read_text()
    assert "**WARNING: 1 of 4 reference structures are also in the training set**" in summary
    assert f"`{val[3].name.split('.')[0]}` = `renamed`" in summary
    with open(samples / "eval" / "per_structure.csv") as handle:
        novelty = {row["name"]: float(row["novelty_tm"]) for row in csv.DictReader(handle)}
    assert novelty[val[0].name.split(".")[0]] == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------------------- trajectories


def test_trajectory_paths_are_recognised(tmp_path: Path) -> None:
    root = tmp_path / "samples"
    assert is_trajectory_path(root / "len60_sample0_traj.pdb", root)
    assert is_trajectory_path(root / "x_TRAJ.cif.gz", root)
    assert is_trajectory_path(root / "trajectories" / "len60_sample0.pdb", root)
    assert not is_trajectory_path(root / "len60_sample0.pdb", root)
    assert not is_trajectory_path(root / "trajectory_sample.pdb", root)
    # a folder named 'trajectories' above the root does not make every file a trajectory
    inner = tmp_path / "trajectories" / "run"
    assert not is_trajectory_path(inner / "len60_sample0.pdb", inner)


def test_eval_skips_trajectory_files(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from proteinflow.cli import main

    samples = tmp_path / "samples"
    rng = np.random.default_rng(0)
    final = [synthetic.helix(30).numpy(), synthetic.hairpin(6).numpy()]
    for k, x in enumerate(final):
        write_pdb(samples / f"len{len(x)}_sample{k}.pdb", x)
        noise = rng.normal(scale=8.0, size=(len(x), 4, 3))
        traj = np.stack([noise, 0.5 * (noise + x), x])  # model 1 is the noise at t = 0
        write_trajectory_pdb(samples / f"len{len(x)}_sample{k}_traj.pdb", traj)  # as the old sampler did
        write_trajectory_pdb(samples / "trajectories" / f"len{len(x)}_sample{k}_traj.pdb", traj)
    assert main(["eval", str(samples), "--no-progress"]) == 0
    assert "skipped 4 trajectory file(s)" in capsys.readouterr().err
    with open(samples / "eval" / "per_structure.csv") as handle:
        names = sorted(row["name"] for row in csv.DictReader(handle))
    assert names == ["len14_sample1", "len30_sample0"]  # the samples, not their trajectories
    summary = (samples / "eval" / "summary.md").read_text()
    assert "| samples | 2 |" in summary and "trajectory files skipped: 4" in summary
    loaded = load_structure_set(samples, skip_trajectories=False)
    assert len(loaded.structures) == 6 and not loaded.trajectories
