#!/usr/bin/env bash
# GPU checks, for a machine with an NVIDIA GPU and no internet (the device tool): GPU timings of our scan and
# networks, then mamba-ssm parity. Needs, under $GPU_ASSETS (default .device/): mamba_ssm-*/ (the unpacked
# mamba-ssm sdist from PyPI) and optionally wheels/*.whl (dynamic-network-architectures for the baseline).
# Writes logs under ${OUT:-/tmp/nnmamba-gpu}.
set -uo pipefail
cd "$(dirname "$0")/../.."
assets=${GPU_ASSETS:-.device}
out=${OUT:-/tmp/nnmamba-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/NNMambaSlicer:/tmp/site:${PYTHONPATH:-}"
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
ls "$assets"/wheels/*.whl >/dev/null 2>&1 && $py -m pip install -q --no-index --no-deps --target /tmp/site "$assets"/wheels/*.whl

echo "== 1. environment and GPU timings without mamba-ssm"
$py -m nnmamba info | tee "$out/info_torch.txt"
timeout 150 $py Testing/benchmarks/bench_scan.py --device cuda 2>/dev/null | tee "$out/bench_scan_torch.txt"
timeout 150 $py Testing/benchmarks/bench_network.py --device cuda --backends torch 2>&1 | tee "$out/bench_network_torch.txt"

echo "== 2. build mamba-ssm's fp32 forward kernel"
src=$(ls -d "$assets"/mamba_ssm-*/ | head -1)
mkdir -p /tmp/mamba_pkg && cp -r "$src/mamba_ssm" /tmp/mamba_pkg/
# The package __init__ also imports Mamba2/Mamba3 and the LM head (tilelang, transformers); the block needs none.
echo '__version__ = "parity-check"' > /tmp/mamba_pkg/mamba_ssm/__init__.py
MAX_JOBS=16 timeout 420 $py Testing/gpu/build_selective_scan.py "$src" /tmp/ssbuild 2>&1 | tail -5 | tee "$out/build.txt"
export PYTHONPATH="/tmp/ssbuild:/tmp/mamba_pkg:$PYTHONPATH"

echo "== 3. tests on the GPU, parity with mamba-ssm included"
$py -m nnmamba info | tee "$out/info_cuda.txt"
timeout 240 $py -m pytest -q -p no:cacheprovider Testing/python -k "mamba_ssm or cuda or gpu or scan or block or networks" \
  2>&1 | tail -15 | tee "$out/pytest_gpu.txt"
timeout 120 $py Testing/benchmarks/bench_scan.py --device cuda --quick 2>/dev/null | tee "$out/bench_scan_cuda.txt"
timeout 120 $py Testing/benchmarks/bench_network.py --device cuda --backends cuda,torch 2>&1 | tee "$out/bench_network_cuda.txt"
