#!/usr/bin/env bash
# GPU checks on a machine with an NVIDIA GPU and no internet (the device tool): mamba-ssm parity, then GPU
# timings of the scan back ends and the networks. Needs, under $GPU_ASSETS (default .device/): mamba_ssm-*/ (the
# unpacked mamba-ssm sdist from PyPI) and wheels/*.whl (dynamic-network-architectures, the benchmark baseline).
# Logs go to ${OUT:-/tmp/nnmamba-gpu}. About 8 minutes on an H100/H200, most of it compiling the kernel.
source "$(dirname "$0")/prepare_machine.sh"

# mamba-ssm's package __init__ also imports Mamba2/Mamba3 and the LM head (tilelang, transformers): not needed.
src=$(ls -d "$assets"/mamba_ssm-*/ | head -1)
mkdir -p /tmp/mamba_pkg && cp -r "$src/mamba_ssm" /tmp/mamba_pkg/
echo '__version__ = "parity-check"' > /tmp/mamba_pkg/mamba_ssm/__init__.py
echo "== building mamba-ssm's fp32 forward kernel in the background"
(MAX_JOBS=16 timeout 330 $py Testing/gpu/build_selective_scan.py "$src" /tmp/ssbuild > "$out/build.txt" 2>&1; \
 echo "build exit $?" >> "$out/build.txt") &
build=$!

echo "== GPU tests and timings without mamba-ssm (while the kernel compiles)"
$py -m nnmamba info | tee "$out/info_torch.txt"
timeout 120 $py -m pytest -q -p no:cacheprovider Testing/python/test_gpu.py 2>&1 | tail -4 | tee "$out/pytest_gpu_torch.txt"
timeout 150 $py Testing/benchmarks/bench_network.py --device cuda --backends torch 2>&1 | tee "$out/bench_network_torch.txt"

wait $build
tail -3 "$out/build.txt"
export PYTHONPATH="/tmp/ssbuild:/tmp/mamba_pkg:$PYTHONPATH"
echo "== with mamba-ssm's kernel: parity tests, then timings"
$py -m nnmamba info | tee "$out/info_cuda.txt"
timeout 150 $py -m pytest -q -p no:cacheprovider Testing/python/test_gpu.py Testing/python/test_mamba_block.py \
  Testing/python/test_scan.py 2>&1 | tail -6 | tee "$out/pytest_gpu_cuda.txt"
timeout 120 $py Testing/benchmarks/bench_scan.py --device cuda 2>/dev/null | tee "$out/bench_scan_cuda.txt"
timeout 120 $py Testing/benchmarks/bench_network.py --device cuda --backends cuda 2>&1 | tee "$out/bench_network_cuda.txt"
