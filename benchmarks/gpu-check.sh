#!/usr/bin/env bash
# The GPU path in one command (issue 27; docs/performance.md, "GPU").
#
#   benchmarks/gpu-check.sh --prepare
#       On a machine with PyPI (and Debian's dataset-fashion-mnist): fill the git-ignored
#       folder benchmarks/gpu-carry/ with the wheels of benchmarks/gpu-requirements.txt
#       (for the GPU machine's Python, GPU_PYTHON, default 3.12) and the Fashion-MNIST files.
#   benchmarks/gpu-check.sh [--cpu] [--stages LIST] [--tests EXPR] OUT_DIR
#       On a CUDA machine whose Python already has torch (it is never replaced) and no
#       network: install the carried wheels and this package into a folder on PYTHONPATH,
#       then run the stages and write into OUT_DIR (at most 8 files, flat):
#         gpu-check.log   every stage's output         summary.json  machine, stages, rc, s
#         gpu-tests.xml   pytest -m gpu (JUnit, with the measured figures as properties)
#         bench.json/md   make bench's measurement (bf16 on CUDA)
#         demo-verdicts.json  the demo sweep trained on the GPU, then its verdicts
#       --cpu is the dry mode: the same stages on this CPU at tiny shapes
#       (PERCEIVER_GPU_DRY=1 runs the gpu tests on the CPU), with this checkout's Python.
#       --stages: a comma list of install,tests,bench,demo (default: all of them).
#       --tests: a pytest -k expression selecting among the gpu tests.
# Exit status: 0 when every stage passed, 1 otherwise (summary.json says which); 2 for
# bad arguments or a machine that cannot run it.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARRY=$REPO/benchmarks/gpu-carry
REQUIREMENTS=$REPO/benchmarks/gpu-requirements.txt
FASHION_MNIST=/usr/share/datasets/fashion-mnist
GPU_PYTHON=${GPU_PYTHON:-3.12}
# Stage time limits (s): the whole check ends within 8 minutes, so that it fits one
# 10-minute device command with room to spare.
LIMIT_INSTALL=40 LIMIT_TESTS=170 LIMIT_BENCH=170 LIMIT_DEMO=90

usage() { sed -n '3,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "gpu-check.sh: $*" >&2; exit 2; }

prepare() {
    local pip=${PIP:-python3 -m pip} wheels=$CARRY/wheels
    mkdir -p "$wheels" "$CARRY/fashion-mnist" || exit 2
    rm -f "$wheels"/*.whl
    # Wheels for the GPU machine's Python; the few packages PyPI has only as sources
    # (marked "# source only") are pure Python, built here into a wheel any Python takes.
    grep -v -e '^#' -e '^$' -e '# source only' "$REQUIREMENTS" | $pip download -q --no-deps \
        --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$wheels" -r /dev/stdin || exit 1
    grep -e '# source only' "$REQUIREMENTS" | sed 's/ *#.*//' | $pip wheel -q --no-deps \
        -w "$wheels" -r /dev/stdin || exit 1
    cp "$FASHION_MNIST"/*-ubyte.gz "$CARRY/fashion-mnist/" || die "no $FASHION_MNIST: apt-get install dataset-fashion-mnist"
    du -sh "$CARRY"
    exit 0
}

CPU=0 STAGES=install,tests,bench,demo TESTS= OUT=
while [ $# -gt 0 ]; do
    case $1 in
        --prepare) prepare ;;
        --cpu) CPU=1 ;;
        --stages) STAGES=${2:?--stages needs a list}; shift ;;
        --tests) TESTS=${2:?--tests needs an expression}; shift ;;
        -h|--help) usage ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$OUT" ] || die "one OUT_DIR only (got $OUT and $1)"; OUT=$1 ;;
    esac
    shift
done
[ -n "$OUT" ] || die "missing OUT_DIR (see --help)"
for stage in ${STAGES//,/ }; do
    case $stage in install|tests|bench|demo) ;; *) die "unknown stage $stage: choose from install,tests,bench,demo" ;; esac
done
wants() { [[ ",$STAGES," == *",$1,"* ]]; }

if [ "$CPU" = 1 ]; then
    PY=${PYTHON:-$REPO/.venv/bin/python}
    export PERCEIVER_GPU_DRY=1 CUDA_VISIBLE_DEVICES=
    # No 10-minute command to fit on a CPU, whose training and compiling are slower.
    LIMIT_TESTS=900 LIMIT_BENCH=600 LIMIT_DEMO=600
else
    PY=${PYTHON:-python3}
fi
"$PY" -c "import torch" 2>/dev/null || die "$PY has no torch: on the GPU machine use its python3 (PYTHON=...), here run make setup"
if [ "$CPU" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    die "no CUDA device visible to $PY's torch: run on a GPU machine, or --cpu for the dry mode"
fi

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu-check.log STAGE_TABLE=$OUT/.stages
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
: >"$LOG"; : >"$STAGE_TABLE"
cd "$REPO" || exit 2

# One stage: its output into the log, its status and duration into the table.
stage() {
    local name=$1 start=$SECONDS rc
    shift
    echo "== $name: $*" | tee -a "$LOG"
    "$@" >>"$LOG" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$STAGE_TABLE"
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}

install() {
    # The carried wheels and this package (with its CLI's entry points) into one folder
    # that PYTHONPATH puts first; torch and everything else stay the machine's own.
    local site=$SCRATCH/site wheels=("$CARRY"/wheels/*.whl)
    # The dry mode's Python is this checkout's, not GPU_PYTHON: only the pure-Python wheels.
    [ "$CPU" = 1 ] && wheels=("$CARRY"/wheels/*-none-any.whl)
    timeout "$LIMIT_INSTALL" "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --target "$site" "${wheels[@]}" || return 1
    # Built from a copy: pip builds in the source tree and would leave build/ in the checkout.
    mkdir -p "$SCRATCH/src" && cp -r "$REPO"/{pyproject.toml,README.md,perceiver_core,experiments,analysis} \
        "$SCRATCH/src/" || return 1
    timeout "$LIMIT_INSTALL" "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
        --no-cache-dir --target "$site" "$SCRATCH/src" || return 1
    if [ ! -d "$FASHION_MNIST" ] && [ -d "$CARRY/fashion-mnist" ]; then
        mkdir -p "$FASHION_MNIST" && cp "$CARRY"/fashion-mnist/*.gz "$FASHION_MNIST"/ || return 1
    fi
    PYTHONPATH=$REPO:$site "$PY" -c "import experiments.train, experiments.bench, analysis.verdicts.summary, submitit, fvcore, pytorch_optimizer, optuna; print('imports ok')"
}
if wants install; then
    if [ -d "$CARRY/wheels" ]; then
        stage install install
        export PYTHONPATH=$REPO:$SCRATCH/site
    elif [ "$CPU" = 1 ]; then
        echo "== install: skipped (no $CARRY/wheels; the dry mode uses $PY as it is)" | tee -a "$LOG"
    else
        die "no $CARRY/wheels: run benchmarks/gpu-check.sh --prepare where PyPI is reachable, and carry benchmarks/gpu-carry"
    fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$([ "$CPU" = 1 ] && echo 1 || echo 4)}

if wants tests; then
    # SIGINT first: pytest then still writes the JUnit file of the tests that ran.
    stage tests timeout -s INT -k 10 "$LIMIT_TESTS" "$PY" -m pytest -m gpu tests/test_gpu.py \
        -p no:cacheprovider -rs -v --junitxml="$OUT/gpu-tests.xml" ${TESTS:+-k "$TESTS"}
fi

if wants bench; then
    if [ "$CPU" = 1 ]; then  # tiny: the Fashion-MNIST shape, a step or two
        stage bench timeout -k 10 "$LIMIT_BENCH" "$PY" benchmarks/run.py --out "$OUT" \
            --scaling no --shapes fashion-mnist --warmup 1 --steps 2
    else
        # The targets' shape first: rows are saved as they come, if the limit cuts it short.
        stage bench timeout -k 10 "$LIMIT_BENCH" "$PY" benchmarks/run.py --out "$OUT" \
            --scaling no --shapes paper-imagenet mid fashion-mnist
    fi
fi

tiny_fashion_mnist() {
    # The dry mode's data: the first 512 training and 256 test images, as IDX files again
    # (the demo tests every run on all test images, which on a CPU takes longest).
    "$PY" - "$1" <<'PY'
import gzip, sys
from pathlib import Path

from experiments.data import FASHION_MNIST_FILES, FASHION_MNIST_ROOT

out = Path(sys.argv[1])
out.mkdir(parents=True)
for part, names in FASHION_MNIST_FILES.items():
    for name in names:
        raw = gzip.decompress((Path(FASHION_MNIST_ROOT) / name).read_bytes())
        dims, count = raw[3], 512 if part == "train" else 256
        item = 1 if dims == 1 else int.from_bytes(raw[8:12], "big") * int.from_bytes(raw[12:16], "big")
        body = raw[4 + 4 * dims:][:count * item]
        (out / name).write_bytes(gzip.compress(raw[:4] + count.to_bytes(4, "big")
                                               + raw[8:4 + 4 * dims] + body, compresslevel=1))
PY
}

demo() {
    # The demo's sweep trained on this machine (the local executor: one job per core, all
    # on the one GPU), then its verdicts, to compare with the CPU run's (README).
    local runs=$SCRATCH/demo extra=() pid rc
    if [ "$CPU" = 1 ]; then
        tiny_fashion_mnist "$SCRATCH/fashion-mnist" || return 1
        extra=(data.root="$SCRATCH/fashion-mnist" data.train_subset=256 data.val_size=64
               train.max_steps=2 train.eval_every=2)
    fi
    # In a process group of its own: submitit's local jobs ignore SIGTERM, so after a time-out
    # they would train on; the group is killed whatever happened.
    setsid timeout -k 10 "$LIMIT_DEMO" "$PY" -m experiments sweep experiments/sweeps/demo.yaml \
        --executor local --out "$runs" --wait "${extra[@]}" &
    pid=$!
    wait "$pid"
    rc=$?
    kill -KILL -- "-$pid" 2>/dev/null
    [ "$rc" = 0 ] || return "$rc"
    "$PY" -m experiments verdicts "$runs" --json >"$OUT/demo-verdicts.json"
}
if wants demo; then
    stage demo demo
fi

"$PY" - "$OUT" "$CPU" <<'EOF' || exit 1
import json, os, subprocess, sys, time
from pathlib import Path

import torch

out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
stages = [dict(zip(("stage", "exit", "seconds"), line.split("\t"))) for line in
          (out / ".stages").read_text().splitlines()]
for s in stages:
    s["exit"], s["seconds"] = int(s["exit"]), int(s["seconds"])
cuda = torch.cuda.is_available()
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError:
    smi = None
machine = {"dry_run_on_cpu": dry, "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name() if cuda else None,
           "capability": list(torch.cuda.get_device_capability()) if cuda else None,
           "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False) if cuda
           else None, "nvidia_smi": smi, "cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
summary = {"machine": machine, "stages": stages, "passed": all(s["exit"] == 0 for s in stages)}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
(out / ".stages").unlink()
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["passed"] else 1)
EOF
status=$?
rm -rf "$SCRATCH"
exit $status
