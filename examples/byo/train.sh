#!/usr/bin/env bash
# A shell-only trainer: the worker protocol spoken through `vitcube trial …` and nothing else.
#
#   vitcube worker --server URL --token WORKER_TOKEN --command shell='bash examples/byo/train.sh'
#
# A TOY. A shell has no GPU training: the "metric" below is made up, a deterministic function
# of the trial's effective factors and the epoch (bigger networks and later epochs score higher),
# so that a search has something to rank. What the file shows is the protocol, which any
# language can speak: read the trial (`vitcube trial show --field NAME`, JSON), train epochs
# from_epoch+1 … to_epoch, report the search's metric after each (`vitcube trial report`), hand
# the worker a checkpoint to resume from (`vitcube trial checkpoint`), and exit 0 when told to
# stop (`vitcube trial should-stop`, or SIGTERM). A real trainer in another language would also
# announce its final weights (`vitcube trial weights FILE`); a toy has none.
#
# VITCUBE_EXAMPLE_EPOCH_S: the seconds one "epoch" takes (default 1); VITCUBE: the vitcube
# command (default: the one on PATH).
set -euo pipefail

vitcube=${VITCUBE:-vitcube}
field() { "$vitcube" trial show --field "$1"; }  # one field of the trial file, as JSON

from_epoch=$(field from_epoch)
to_epoch=$(field to_epoch)
metric_json=$(field metric)  # {"name": "val_top1", "goal": "maximize"}
metric=$(sed -E 's/.*"name": *"([^"]*)".*/\1/' <<<"$metric_json")
goal=$(sed -E 's/.*"goal": *"([^"]*)".*/\1/' <<<"$metric_json")
# {"r": 1.2, "d_i": 1.0, "d_m": 0.9, "w": 0.8} -> "r:1.2 d_i:1.0 d_m:0.9 w:0.8"
factors=$(field effective_factors | tr -d '{} "' | tr ',' ' ')
checkpoint=$(field checkpoint | sed -e 's/^"//' -e 's/"$//')  # a path, or null

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
stop=0
trap 'stop=1' TERM  # the worker sends SIGTERM as well as creating the stop file

should_stop() {  # should-stop exits 0 (stop), 1 (go on) or 2 (refused: outside a worker)
    local rc=0
    [ "$stop" = 0 ] || return 0
    "$vitcube" trial should-stop || rc=$?
    [ "$rc" -le 1 ] || exit "$rc"
    [ "$rc" = 0 ]
}

toy_metric() {  # epoch -> "VALUE TRAIN_LOSS", the made-up learning curve
    awk -v epoch="$1" -v factors="$factors" -v goal="$goal" 'BEGIN {
        n = split(factors, pairs, " ")
        for (i = 1; i <= n; i++) { split(pairs[i], kv, ":"); f[kv[1]] = kv[2] }
        size = f["r"] * f["w"] * (f["d_i"] + f["d_m"]) / 2
        accuracy = (0.9 - 0.4 * exp(-1.5 * size)) * (1 - exp(-epoch / 2))
        printf "%.6f %.6f\n", (goal == "minimize" ? 1 - accuracy : accuracy), 2.3 * exp(-epoch / 2)
    }'
}

# Resuming: the checkpoint is the state file an earlier segment announced (on any box).
if [ "$checkpoint" != null ]; then
    saved=$(sed -n 's/^epoch=//p' "$checkpoint")
    if [ "$saved" != "$from_epoch" ]; then
        echo "the checkpoint is after epoch $saved, but this segment starts after epoch $from_epoch" >&2
        exit 1
    fi
fi

for ((epoch = from_epoch + 1; epoch <= to_epoch; epoch++)); do
    if should_stop; then
        exit 0  # the last epoch's checkpoint is announced already: the worker resumes from it
    fi
    sleep "${VITCUBE_EXAMPLE_EPOCH_S:-1}" &  # "training"; wait returns at once on SIGTERM
    training=$!
    [ "$stop" = 1 ] || wait "$training" || true
    if [ "$stop" = 1 ]; then
        kill "$training" 2>/dev/null || true
        exit 0  # an epoch cut short is not reported
    fi
    read -r value loss < <(toy_metric "$epoch")
    "$vitcube" trial report --epoch "$epoch" --metric "$metric=$value" --metric "train_loss=$loss"
    printf 'epoch=%s\n%s=%s\n' "$epoch" "$metric" "$value" >"$scratch/state"
    "$vitcube" trial checkpoint --epoch "$epoch" "$scratch/state"  # copied, then announced
done
