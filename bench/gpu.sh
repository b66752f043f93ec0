#!/usr/bin/env bash
# The GPU check of issue #16, on one 80-140 GB CUDA GPU with only torch, transformers and peft
# installed: bench/gpu_checks.py (the evaluator against the stock forward in fp32 and bf16 on
# cut-down Qwen2.5, Llama-3.1 and Gemma-2, its sliding window and soft-caps included, and bf16
# against fp32), then bench/scale.py on Qwen2.5-7B, Llama-3.1-8B and Gemma-2-9B at full depth in
# bf16, random weights (with steerfront's memory estimate beside the measured peak). One JSON
# line per step goes to the results file (default $OUT/gpu.json, else ./gpu.json); each runs
# under its own time limit, the whole under 8 minutes.
#
#     bash bench/gpu.sh [RESULTS] [PEAK_FLOPS]     # PEAK_FLOPS: default 989e12 (H100/H200 bf16 dense)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
results="${1:-${OUT:-.}/gpu.json}"
peak="${2:-989e12}"
python="${PYTHON:-python}"
per_model="${PER_MODEL_S:-140}"
mkdir -p "$(dirname "$results")"
: > "$results"

echo "gpu.sh: $("$python" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')"
"$python" -c 'import transformers; print("gpu.sh: transformers", transformers.__version__)'
echo "gpu.sh: correctness checks (limit 40 s) ..."
status=0
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" timeout 40 "$python" "$here/bench/gpu_checks.py" \
    --device cuda > "$results.checks" || status=$?
if [ "$status" -eq 0 ]; then
    tail -n 1 "$results.checks" | tee -a "$results"
else
    echo "{\"check\": \"correctness\", \"error\": \"exit status $status\"}" | tee -a "$results"
fi
rm -f "$results.checks"
for name in qwen2.5-7b llama3.1-8b gemma2-9b; do
    echo "gpu.sh: $name, full depth, bf16 (limit ${per_model} s) ..."
    started=$SECONDS
    status=0
    PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" timeout "$per_model" "$python" \
        "$here/bench/scale.py" --config "$name" --device cuda --dtype bfloat16 \
        --peak-flops "$peak" > "$results.$name" || status=$?
    if [ "$status" -eq 0 ]; then
        tail -n 1 "$results.$name" | tee -a "$results"
    else
        echo "{\"config\": \"$name\", \"error\": \"exit status $status\"}" | tee -a "$results"
    fi
    rm -f "$results.$name"
    echo "gpu.sh: $name done in $((SECONDS - started)) s"
done
echo "gpu.sh: results in $results"
