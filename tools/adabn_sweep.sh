#!/usr/bin/env bash
# usage: tools/adabn_sweep.sh NAME [--set k=v ...]
# One AdaBN-only refresh (--steps 0) of the shipped model on a collection, evaluated with ctrnet-eval on the
# labelled validation window (docs/results/refresh_experiment.md says how it was recorded). Prints one line.
#   COLLECTION: default the live collection of `make refresh-experiment EXPERIMENT_ARGS="--out build/refresh_s8_default"`
#   VAL:        default build/exp/cell_val
# e.g. tools/adabn_sweep.sh full --set adapt_bn_mix=1.0
set -e
name=$1; shift
o=build/adabn_sweep/$name
rm -rf $o; mkdir -p $o
.venv/bin/ctrnet-train refresh --data ${COLLECTION:-build/refresh_s8_default/collection} --init models/panda_ctrnet.pt --out $o/refresh \
   --steps 0 --export $o/m.onnx --quiet "$@" > $o/refresh.log 2>&1
.venv/bin/ctrnet-eval ${VAL:-build/exp/cell_val} --model $o/m.onnx --out $o/eval_val --no-plots --no-progress --threads 2 > $o/eval.log 2>&1
python3 -c "
import json; m=json.load(open('$o/eval_val/metrics.json'))
print('$name', '$*', 'auc %.2f' % m['add_auc'], 'add_med %.0f mm' % (m['add_median_m']*1e3), 'est', m['frames_with_estimate'], 'trans %.2f m rot %.1f' % (m['trans_err_median_m'], m['rot_err_median_deg']))"
