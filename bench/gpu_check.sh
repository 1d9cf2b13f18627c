#!/usr/bin/env bash
# GPU check of the meta-iteration, under 8 minutes on one GPU: the CUDA tests, then the
# paper-setting benchmark (bench/gpu_check.py). Writes into OUT_DIR:
#   pytest_cuda.xml / pytest_cuda.log   the CUDA tests (pytest -m cuda)
#   gpu_check.json                      s/iter, images/s, peak memory, ratios, bf16 agreement
#   gpu_leases.json                     two grid points on the GPU(s): each leases its own GPU,
#                                       so on one GPU they run one after the other
# Usage: bench/gpu_check.sh OUT_DIR [--dry-run]
#   --dry-run (or GPU_CHECK_DRY_RUN=1): the same code on the CPU at tiny sizes.
# Run from the repository root; PYTHON (default: .venv/bin/python, else python3) runs it.
set -euo pipefail
out=${1:?usage: bench/gpu_check.sh OUT_DIR [--dry-run]}
dry=${GPU_CHECK_DRY_RUN:-0}
[[ "${2:-}" == "--dry-run" ]] && dry=1
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
[[ -x "$py" ]] || py=python3
mkdir -p "$out"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
start=$(date +%s)
# CUDA tests: they skip cleanly without a device (exit code 5 = none collected/run is fine)
set +e
"$py" -m pytest -m cuda -q -p no:cacheprovider --junitxml "$out/pytest_cuda.xml" \
  tests/meta tests/training tests/selection tests/evaluation tests/models tests/distributed/test_cuda.py > "$out/pytest_cuda.log" 2>&1
rc=$?
set -e
tail -3 "$out/pytest_cuda.log"
if [[ $rc -ne 0 && $rc -ne 5 ]]; then
  echo "CUDA tests failed (exit $rc): see $out/pytest_cuda.log" >&2
  exit "$rc"
fi
args=(--out "$out")
[[ "$dry" == 1 ]] && args+=(--dry-run)
"$py" bench/gpu_check.py "${args[@]}"
"$py" bench/gpu_leases.py "${args[@]}"
echo "gpu_check: $(( $(date +%s) - start )) s, results in $out"
