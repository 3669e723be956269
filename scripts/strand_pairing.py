"""Do a model's strands form sheets? Strand-pairing geometry of sample folders against real domains.

P-SEA calls strands from the CA trace alone; DSSP needs the N-H...O=C hydrogen bonds of a sheet. A model
whose samples have P-SEA strands but almost no DSSP strand makes extended segments that do not pair. This
script says how they fail (:func:`proteinflow.protein.metrics.strand_pairing`): for each P-SEA strand
residue, is there a CA partner within 5.5 A, does it lie in the sheet plane (across the pleat) or stacked
along the pleat, and is any backbone N within 3.5 A of an O (a hydrogen-bond candidate)?

    python scripts/strand_pairing.py outputs/samples_a outputs/samples_b --reference data/prepared/cath_val

Prints a markdown table (one row per folder, the reference first) and writes it to ``--out`` if given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_text
from proteinflow.protein.metrics import (
    PSEA_CODES,
    label_fractions,
    psea_labels,
    strand_pairing,
    strand_pairing_summary,
)
from proteinflow.protein.structure_set import load_structure_set

COLUMNS = (
    ("psea_strand", "P-SEA strand"),
    ("paired", "paired (CA < 5.5 A)"),
    ("pleat_cos_median", "median abs cos to pleat"),
    ("in_plane", "paired in the sheet plane"),
    ("no_within", "N-O < 3.5 A"),
)


def folder_row(path: str, max_structures: int | None) -> dict[str, float]:
    """Pooled strand-pairing summary of the structures under ``path`` plus their P-SEA strand fraction."""
    structures = load_structure_set(path, max_structures=max_structures, seed=0).structures
    if not structures:
        raise SystemExit(f"{path}: no readable structures")
    labels = [psea_labels(s.ca) for s in structures]
    pairings = [strand_pairing(s.coords, lab) for s, lab in zip(structures, labels, strict=True)]
    row = strand_pairing_summary(pairings)
    row["psea_strand"] = label_fractions(np.concatenate(labels), PSEA_CODES)["strand"]
    row["structures"] = float(len(structures))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", help="sample folders (or prepared datasets)")
    parser.add_argument("--reference", default="data/prepared/cath_val", help="real structures")
    parser.add_argument("--reference-max", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = parser.parse_args()

    rows = [(f"reference: {args.reference}", folder_row(args.reference, args.reference_max))]
    rows += [(folder, folder_row(folder, None)) for folder in args.folders]
    lines = [
        "| structures | n | strand residues | " + " | ".join(name for _, name in COLUMNS) + " |",
        "|" + "---|" * (3 + len(COLUMNS)),
    ]
    for name, row in rows:
        cells = [f"{row[key]:.3f}" if key in row else "n/a" for key, _ in COLUMNS]
        lines.append(
            f"| {name} | {row['structures']:.0f} | {row['strand_residues']:.0f} | " + " | ".join(cells) + " |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out is not None:
        atomic_write_text(args.out, table)


if __name__ == "__main__":
    main()
