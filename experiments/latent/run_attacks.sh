#!/bin/bash
# The attack tables of experiments/latent/README.md (run from the repository root after
# train_generators.sh). 20 s wall-clock per attack, 2 trials, batches 1 and 4.
set -e
PY=${PY:-/work/main/.venv/bin/python}
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
A="nice -n 10 $PY experiments/latent/attacks.py --trials 2 --seconds 20"
$A --setting in --batch 1 4
$A --setting ood-faces --batch 1 4
$A --setting in --batch 1 --defense qsgd:bits=2 --attacks ggl ig bayes
$A --setting in --batch 1 --defense topk:keep=0.1 --attacks ggl ig bayes
while [ ! -f experiments/latent/generators/digits-0-4/generator.pt ]; do sleep 20; done
$A --setting ood-digits --batch 1 4
$A --setting in-0-4 --batch 1 4 --attacks gias ggl
# added after the first pass: batch 8 in distribution, and signSGD
$A --setting in --batch 8
$A --setting in --batch 1 --defense signsgd --attacks ggl ig bayes
