# Sourced by the GPU check scripts: repository root, paths, and the carried wheels installed into /tmp/site.
# Sets: assets (${GPU_ASSETS:-.device}), out (${OUT:-/tmp/nnmamba-gpu}), py.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
assets=${GPU_ASSETS:-.device}
out=${OUT:-/tmp/nnmamba-gpu}
mkdir -p "$out" /tmp/site
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/NNMambaSlicer:$PWD/Testing/python:/tmp/site:${PYTHONPATH:-}"
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -m pip install -q --no-index --no-deps --target /tmp/site "$assets"/wheels/*.whl 2>&1 | tail -2
