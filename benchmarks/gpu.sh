#!/usr/bin/env bash
# GPU benchmark of demixers against the reference implementations (issue #22).
#
# For MossFormer (ModelScope reference) and HTDemucs (demucs' apply_model) at 60 s and 600 s of
# audio, in fp32, bf16 and fp16 (autocast on both sides), this runs benchmarks/bench_inference.py
# three ways for ours: eager, torch.compile (inductor) and torch.compile with CUDA graphs
# (mode reduce-overhead); the reference always runs eager. Every run writes its JSON (wall time,
# RTF, peak GPU memory, output difference, achieved TFLOP/s and fraction of the measured matmul
# throughput of that dtype: the bf16 runs give the fraction of the bf16 bound) under
# benchmarks/results/gpu/, and `--report` prints the tables at the end.
#
# Usage:
#   benchmarks/gpu.sh                       # everything (about 1 h on one H100)
#   benchmarks/gpu.sh --quick               # 60 s only, bf16 only
#   benchmarks/gpu.sh --dry-run             # print the commands, run nothing
#   benchmarks/gpu.sh --smoke               # run every command on the CPU with tiny models and 1 s
#                                           # of audio: checks the script end to end without a GPU
# Environment: PYTHON (default .venv/bin/python, else python3), DEVICE (default cuda),
#              OUT (default benchmarks/results/gpu), REPEATS (default 3), TIMEOUT (s per worker),
#              MODELS / DTYPES / MODES (space-separated subsets, e.g. DTYPES="bf16 fp16").
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results/gpu}
REPEATS=${REPEATS:-3}
TIMEOUT=${TIMEOUT:-3600}
MODELS_ENV=${MODELS:-} DTYPES_ENV=${DTYPES:-} MODES_ENV=${MODES:-}
LENGTHS=(60 600)
DTYPES=(fp32 bf16 fp16)
MODES=(eager default reduce-overhead)
MODELS=(mossformer htdemucs)
DRY_RUN=0
SMOKE=0
if [[ -n "$MODELS_ENV" ]]; then read -r -a MODELS <<< "$MODELS_ENV"; fi
if [[ -n "$DTYPES_ENV" ]]; then read -r -a DTYPES <<< "$DTYPES_ENV"; fi
if [[ -n "$MODES_ENV" ]]; then read -r -a MODES <<< "$MODES_ENV"; fi

for argument in "$@"; do
    case "$argument" in
        --dry-run) DRY_RUN=1 ;;
        --smoke) SMOKE=1 ;;
        --quick) LENGTHS=(60); DTYPES=(bf16) ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown option $argument (see --help)" >&2; exit 2 ;;
    esac
done

EXTRA=()
if [[ $SMOKE == 1 ]]; then
    DEVICE=cpu
    LENGTHS=(1)
    REPEATS=1
    if [[ -z "$MODES_ENV" ]]; then MODES=(eager default); fi  # CUDA graphs need a GPU
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_smoke.XXXXXX")
    EXTRA=(--tiny --no-flops --threads 1)
fi

if [[ $DRY_RUN == 0 && $SMOKE == 0 ]]; then
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu.sh: no CUDA device (use --smoke to check the script on the CPU)" >&2
        exit 1
    }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

mkdir -p "$OUT"
commands=()
for model in "${MODELS[@]}"; do
    for dtype in "${DTYPES[@]}"; do
        for mode in "${MODES[@]}"; do
            name="${model}_${dtype}_${mode}"
            command=("$PYTHON" benchmarks/bench_inference.py --models "$model" --device "$DEVICE"
                --dtype "$dtype" --lengths "${LENGTHS[@]}" --repeats "$REPEATS" --timeout "$TIMEOUT"
                --reference-max-seconds 600 --whole-file-max-seconds 600 --output "$OUT/$name.json")
            if [[ $mode == eager ]]; then
                command+=(--variants ours reference)  # the reference is timed once per dtype
            else
                command+=(--variants ours --compile-mode "$mode" --no-compare)
            fi
            command+=("${EXTRA[@]}")
            commands+=("$(printf '%q ' "${command[@]}")")
        done
    done
done

status=0
for command in "${commands[@]}"; do
    echo "+ $command"
    if [[ $DRY_RUN == 0 ]]; then
        eval "$command" || { status=$?; echo "gpu.sh: failed ($status): $command" >&2; }
    fi
done

if [[ $DRY_RUN == 0 ]]; then
    shopt -s nullglob
    results=("$OUT"/*.json)
    if (( ${#results[@]} )); then
        "$PYTHON" benchmarks/bench_inference.py --report "${results[@]}"
    fi
    if [[ $SMOKE == 1 ]]; then
        rm -rf "$OUT"
    fi
fi
exit "$status"
