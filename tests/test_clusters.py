"""Cluster-aware sampling: cluster files (RCSB's ENTRY_CHAIN lines), identical-sequence clusters, and the
length-budget sampler drawing every cluster once per epoch with a uniformly drawn member."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from proteinflow.protein.batching import LengthBudgetBatchSampler
from proteinflow.protein.clusters import (
    cluster_labels_from_file,
    example_cluster_keys,
    read_cluster_file,
    sequence_cluster_labels,
)
from proteinflow.protein.dataset import PreparedDataset
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepare import prepare_dataset
from proteinflow.train.backbone_config import backbone_config_from_dict
from proteinflow.train.config import ConfigError


def test_cluster_file_lines_blank_lines_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "clusters-by-chain-30.txt"
    good.write_text("1ABC_A 2XYZ_B\n\n  3PQR_C\t4LMN_D 5EFG_A  \n")
    assert read_cluster_file(good) == [["1ABC_A", "2XYZ_B"], ["3PQR_C", "4LMN_D", "5EFG_A"]]
    twice = tmp_path / "twice.txt"
    twice.write_text("1ABC_A 2XYZ_B\n3PQR_C 1ABC_A\n")
    with pytest.raises(ValueError, match=r"twice.txt:2: id '1ABC_A' is already in the cluster of line 1"):
        read_cluster_file(twice)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="empty.txt: no cluster"):
        read_cluster_file(empty)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_cluster_file(tmp_path / "missing.txt")


def test_example_keys_cover_chain_examples_and_whole_files() -> None:
    assert example_cluster_keys("1abc:B", "B") == ["1abc:B", "1ABC_B"]
    assert example_cluster_keys("1abc", "A,B") == ["1abc", "1ABC_A", "1ABC_B"]
    assert example_cluster_keys("1abc:A,B", "A,B") == ["1abc:A,B", "1ABC_A", "1ABC_B"]
    assert example_cluster_keys("1afiA00", "") == ["1afiA00"]
    assert example_cluster_keys("7xyz:a", "a") == ["7xyz:a", "7XYZ_a"]  # chain ids keep their case


def test_file_clusters_match_chains_case_insensitively_and_add_singletons() -> None:
    names = ["1abc:A", "1abc:B", "2xyz", "3pqr:A", "1afiA00", "9zzz:A", "4hhb:a"]
    chains = ["A", "B", "C", "A", "", "A", "a"]
    clusters = [["1ABC_A", "2XYZ_C"], ["1abc_B", "4HHB_A"], ["1afiA00", "7KKK_A"], ["8AAA_A"], ["4HHB_a"]]
    got = cluster_labels_from_file(names, chains, clusters, source="c.txt")
    labels = got.labels.tolist()
    assert labels[0] == labels[2]  # 1abc:A and 2xyz (its chain C) together
    assert len({labels[0], labels[1], labels[4], labels[3], labels[5], labels[6]}) == 6
    assert got.matched == 5  # 3pqr:A and 9zzz:A are not listed: singletons
    assert got.num_clusters == 6 and sorted(set(labels)) == list(range(6))  # unlisted clusters dropped
    assert labels[6] != labels[1]  # chain 'a' is not chain 'A'
    assert "6 clusters over 7 examples from c.txt (5 matched, 2 singletons added" in got.summary()


def test_a_file_matching_nothing_names_both_id_styles() -> None:
    with pytest.raises(ValueError, match=r"c.txt: none of the 2 examples .* '1ABC_1 1ABC_2'.*'2xyz:A'"):
        cluster_labels_from_file(["2xyz:A", "3pqr:B"], ["A", "B"], [["1ABC_1", "1ABC_2"]], source="c.txt")


@pytest.fixture(scope="module")
def duplicated_set(cath_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared set of four real domains where two files hold the same structure (same sequence)."""
    src = tmp_path_factory.mktemp("dup_src")
    for name, domain in (("a", "1afiA00"), ("b", "1afiA00"), ("c", "1aihA00"), ("d", "1ahlA00")):
        shutil.copy(cath_dir / "val" / f"{domain}.pdb.gz", src / f"{name}.pdb.gz")
    out = tmp_path_factory.mktemp("dup_prepared")
    prepare_dataset(src, out, FilterConfig(min_len=10, max_len=400, max_breaks=None), workers=1)
    return out


def test_identical_sequences_form_one_cluster(duplicated_set: Path) -> None:
    data = PreparedDataset(duplicated_set)
    names = data.arrays.names.tolist()
    got = sequence_cluster_labels(data.arrays, data.structure_indices)
    by_name = dict(zip(names, got.labels.tolist(), strict=True))
    assert by_name["a"] == by_name["b"] and len({by_name["a"], by_name["c"], by_name["d"]}) == 3
    assert got.num_clusters == 3 and got.matched == 4


def _random_clusters(rng: np.random.Generator, count: int = 60) -> tuple[np.ndarray, np.ndarray]:
    sizes = rng.integers(1, 8, size=count)
    labels = rng.permutation(np.repeat(np.arange(count) * 7 + 3, sizes))  # arbitrary integers, shuffled
    lengths = rng.integers(20, 120, size=labels.size)
    return labels, lengths


def test_every_epoch_takes_each_cluster_once_within_budget() -> None:
    labels, lengths = _random_clusters(np.random.default_rng(0))
    sampler = LengthBudgetBatchSampler(lengths, max_residues_sq=4 * 120**2, seed=5, clusters=labels)
    assert sampler.num_clusters == 60
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        items = [i for b in batches for i in b]
        assert sorted(Counter(labels[items].tolist()).values()) == [1] * 60  # one member per cluster
        assert all(len(b) * int(lengths[b].max()) ** 2 <= 4 * 120**2 for b in batches)


def test_members_are_drawn_uniformly_and_reproducibly() -> None:
    labels = np.array([0, 0, 0, 0, 1, 2, 2])  # a cluster of 4, a singleton, a pair
    lengths = np.full(7, 50)
    sampler = LengthBudgetBatchSampler(lengths, max_residues_sq=10 * 50**2, seed=1, clusters=labels)
    epochs = 4000
    counts = Counter(i for e in range(epochs) for b in sampler.epoch_batches(e) for i in b)
    assert counts[4] == epochs  # the singleton every epoch, like each whole cluster
    for members in ([0, 1, 2, 3], [5, 6]):
        assert sum(counts[m] for m in members) == epochs
        expected = epochs / len(members)
        chi2 = sum((counts[m] - expected) ** 2 / expected for m in members)
        assert chi2 < 16.3  # chi-square, 3 dof, p = 0.001
    again = LengthBudgetBatchSampler(lengths, max_residues_sq=10 * 50**2, seed=1, clusters=labels)
    assert [again.epoch_batches(e) for e in range(20)] == [sampler.epoch_batches(e) for e in range(20)]
    other = LengthBudgetBatchSampler(lengths, max_residues_sq=10 * 50**2, seed=2, clusters=labels)
    assert [other.epoch_batches(e) for e in range(20)] != [sampler.epoch_batches(e) for e in range(20)]


@pytest.mark.parametrize("replicas", [2, 3])
def test_ranks_split_one_cluster_draw(replicas: int) -> None:
    labels, lengths = _random_clusters(np.random.default_rng(1))
    ranks = [
        LengthBudgetBatchSampler(
            lengths, 3 * 120**2, seed=4, num_replicas=replicas, rank=r, clusters=labels, drop_last=True
        )
        for r in range(replicas)
    ]
    for epoch in range(4):
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [[i for b in s for i in b] for s in ranks]
        assert len({len(list(s)) for s in ranks}) == 1  # equal batch counts: DDP cannot hang
        flat = [i for items in per_rank for i in items]
        assert len(flat) == len(set(flat))  # disjoint
        assert len(set(labels[flat].tolist())) == len(flat)  # still at most one member per cluster
        dealt = [i for b in ranks[0].epoch_batches(epoch) for i in b]
        assert sorted(flat) == sorted(dealt)  # the ranks share out the one draw of the epoch


def test_bad_cluster_labels_are_named() -> None:
    with pytest.raises(ValueError, match="clusters must be 3 integer labels"):
        LengthBudgetBatchSampler([5, 6, 7], 100, clusters=[0, 1])
    with pytest.raises(ValueError, match="clusters must be 3 integer labels"):
        LengthBudgetBatchSampler([5, 6, 7], 100, clusters=[0.0, 1.0, 1.0])


def _cfg(path: Path, **data: object) -> dict:
    return {
        "kind": "frames",
        "data": {"path": str(path), "crop_len": 32, "max_residues_sq": 4 * 32 * 32, **data},
        "model": {"c_s": 16, "c_z": 8, "c_hidden": 8, "num_heads": 2, "num_blocks": 1},
        "train": {"accelerator": "cpu", "val_lengths": [12]},
    }


def test_data_module_samples_clusters(duplicated_set: Path, tmp_path: Path) -> None:
    from proteinflow.train.backbone_module import BackboneDataModule

    cluster_file = tmp_path / "clusters.txt"
    data = PreparedDataset(duplicated_set)
    chains = dict(zip(data.arrays.names.tolist(), data.arrays.chain_ids.tolist(), strict=True))
    cluster_file.write_text(f"C_{chains['c']} A_{chains['a']}\n")  # a with c; b and d are singletons
    for extra, clusters in (({"cluster_by_sequence": True}, 3), ({"cluster_file": str(cluster_file)}, 3)):
        module = BackboneDataModule(backbone_config_from_dict(_cfg(duplicated_set, **extra)))
        module.setup("fit")
        loader = module.train_dataloader()
        assert loader.batch_sampler.num_clusters == clusters
        names = [n for batch in loader for n in batch.names]
        assert len(names) == clusters
    plain = BackboneDataModule(backbone_config_from_dict(_cfg(duplicated_set)))
    plain.setup("fit")
    assert plain.train_dataloader().batch_sampler.num_clusters is None
    with pytest.raises(ConfigError, match="cluster_file and data.cluster_by_sequence exclude each other"):
        backbone_config_from_dict(_cfg(duplicated_set, cluster_file="x", cluster_by_sequence=True))
