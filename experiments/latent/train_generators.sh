#!/bin/bash
# The two generators of experiments/latent (run from the repository root):
# in distribution: all ten digits of the training split; out of distribution: digits 0-4.
# `time` reports wall and CPU seconds (the machine is shared: CPU time is the honest cost).
set -e
PY=${PY:-/work/main/.venv/bin/python}
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
OUT=${OUT:-experiments/latent/generators}
{ time nice -n 10 $PY -m gradleak.cli generator train -d digits --image-size 32 --epochs 30 --device cpu \
    --no-progress --overwrite -o $OUT/digits-all ; } 2> $OUT-all.time
{ time nice -n 10 $PY -m gradleak.cli generator train -d digits --image-size 32 --epochs 30 --classes 0-4 \
    --device cpu --no-progress --overwrite -o $OUT/digits-0-4 ; } 2> $OUT-0-4.time
