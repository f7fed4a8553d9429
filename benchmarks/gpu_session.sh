#!/usr/bin/env bash
# Every GPU check and GPU figure of the project in one run, sized for one 15-minute lease.
#
# Here (once): copy the data into an ignored folder that travels with the working tree:
#   mkdir -p .devdata && cp -r ../shared/data/fashion-mnist .devdata/
#   grep -qx '/.devdata/' .git/info/exclude || echo /.devdata/ >> .git/info/exclude
# On the GPU machine (the device tool): command "bash benchmarks/gpu_session.sh",
#   carry [".devdata"], timeout_s 540. Each step has its own time limit (480 s together), so
#   one slow step cannot take the others' results with it.
# Afterwards: copy the returned files into benchmarks/results/gpu/ and run
#   python benchmarks/reproduce.py --report   (docs/RESULTS.md gets a GPU section from them).
#
# Uses the machine's own python3 and torch; the package runs from src/ (nothing to install).
# DEVICE=cpu runs the same steps on a machine without a GPU (a dry run of this script).
# Writes into $OUT (default: gpu-out): env.txt, pytest.txt, overhead.md, walltime.md,
# walltime-compile.md, walltime.json, walltime-compile.json.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
rm -f "$OUT"/{env.txt,pytest.txt,overhead.md,walltime.md,walltime-compile.md,walltime*.json}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DATAPRUNE_DATA_DIR=${DATAPRUNE_DATA_DIR:-$PWD/.devdata}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=$(mktemp -d)

step() {  # step SECONDS OUTFILE command...: run with a limit, keep the output, never abort
    local limit=$1 file=$2
    shift 2
    echo "== $* (limit ${limit}s)" | tee -a "$OUT/$file"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$file"
    echo "== exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$OUT/$file"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'numpy', numpy.__version__, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())"
    git log -1 --format='commit %H %s' 2>/dev/null
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. The CUDA tests (the rest of the suite runs in CI, on the CPU).
step 100 pytest.txt "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py

# 2. record() and selection cost, record's share of a cnn and a resnet18 training step.
step 180 overhead.md "$PY" benchmarks/overhead.py --device "$DEVICE"

# 3. The wall-time target: 8 epochs of Fashion-MNIST cnn, full against random at prune 0.5,
#    side by side in one process, evaluation included; then the same with --compile.
fmnist=(compare --dataset fashion-mnist --model cnn --methods full,random --prune 0.5
    --epochs 8 --device "$DEVICE" --no-progress)
step 80 walltime.md "$PY" -m dataprune "${fmnist[@]}" --seeds 0,1 --out "$RUNS/fmnist"
cp "$RUNS/fmnist/results.json" "$OUT/walltime.json"
step 120 walltime-compile.md "$PY" -m dataprune "${fmnist[@]}" --seeds 0 --compile \
    --out "$RUNS/fmnist-compile"
cp "$RUNS/fmnist-compile/results.json" "$OUT/walltime-compile.json"
ls -l "$OUT"
