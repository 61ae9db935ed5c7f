#!/usr/bin/env bash
# The Ludwig peer reference on one mmcli split: text only, image only, concat.
#
#   bench/peers/run_ludwig.sh LUDWIG_VENV MANIFEST SPLITS_JSON OUT_DIR
#
# LUDWIG_VENV holds Ludwig (bin/ludwig); SPLITS_JSON is any run folder's splits.json of an
# mmcli `compare` (all its variants share the split). Each config in bench/peers/ludwig/
# runs once through `ludwig experiment` at Ludwig's defaults (its seed 42) under
# `nice -n $NICE` (default 10). The table prints, from test_statistics.json, the test
# accuracy (Ludwig's `accuracy_micro`: correct / all, what mmcli calls accuracy), Ludwig's
# `accuracy` (torchmetrics' default average, macro: the mean of per-class recalls), the
# epochs trained, the wall seconds and the CPU seconds (user + system, from /usr/bin/time;
# less sensitive than the wall to other jobs on the machine) of each run. TABLE_ONLY=1
# prints the table of runs already in OUT_DIR without running anything. VARIANTS="text concat" runs a subset;
# SEED=N trains with Ludwig's --random_seed N instead of its default 42 (seeds over one split).
set -euo pipefail

if [ $# -ne 4 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
venv=$1 manifest=$2 splits=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
variants=${VARIANTS:-text image concat}
mkdir -p "$out"
out=$(cd "$out" && pwd)

"$venv/bin/python" "$here/ludwig_split.py" "$manifest" "$splits" "$out/dataset.csv"
"$venv/bin/python" -c "import ludwig, torch; print('ludwig', ludwig.__version__, 'torch', torch.__version__)"

to_run=$variants
[ -z "${TABLE_ONLY:-}" ] || to_run=""
for v in $to_run; do
    rm -rf "$out/$v"
    start=$(date +%s.%N)
    # Skip the heavy by-products only; the best model is still saved, because Ludwig
    # evaluates the test split with the best checkpoint's weights.
    /usr/bin/time -v -o "$out/$v.time" nice -n "${NICE:-10}" "$venv/bin/ludwig" experiment \
        --config "$here/ludwig/$v.yaml" --dataset "$out/dataset.csv" \
        --output_directory "$out/$v" --random_seed "${SEED:-42}" \
        --skip_save_processed_input --skip_save_unprocessed_output \
        --skip_save_predictions --skip_save_log --skip_save_progress \
        >"$out/$v.log" 2>&1 || { echo "$v failed: see $out/$v.log" >&2; continue; }
    echo "$start $(date +%s.%N)" >"$out/$v.wall"
done

printf '%-8s %9s %9s %7s %7s %7s\n' variant accuracy macro_acc epochs wall_s cpu_s
for v in $variants; do
    stats=$(find "$out/$v" -name test_statistics.json 2>/dev/null | head -1 || true)
    [ -n "$stats" ] && [ -f "$out/$v.wall" ] || { printf '%-8s %9s\n' "$v" failed; continue; }
    "$venv/bin/python" - "$v" "$stats" "$out/$v.wall" "$out/$v.time" <<'PY'
import json, sys
from pathlib import Path
v, stats, wall, timing = sys.argv[1:]
label = json.loads(Path(stats).read_text())["label"]
start, end = map(float, Path(wall).read_text().split())
train = Path(stats).with_name("training_statistics.json")
epochs = len(json.loads(train.read_text())["validation"]["label"]["accuracy"]) if train.exists() else "?"
acc, macro = 100 * label["accuracy_micro"], 100 * label["accuracy"]
times = dict(line.strip().split(": ", 1) for line in Path(timing).read_text().splitlines() if ": " in line)
cpu = float(times["User time (seconds)"]) + float(times["System time (seconds)"])
print(f"{v:<8} {acc:8.1f}% {macro:8.1f}% {epochs:>7} {end - start:7.0f} {cpu:7.0f}")
PY
done
