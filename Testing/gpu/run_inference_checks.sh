#!/usr/bin/env bash
# GPU checks of the inference engine (the device tool; no internet there): GPU tests (autocast segmentation
# against the CPU, the out-of-memory fallback), then end-to-end segmentation and click-to-segment timings with
# the official width (C=32) and the pure-PyTorch scan. Needs the wheels nnmamba depends on (SimpleITK,
# jsonschema and its helpers, slicerio, pynrrd) for Python 3.12 under $GPU_ASSETS/wheels (default .device/).
# Logs go to ${OUT:-/tmp/nnmamba-gpu}. About 4 minutes on an H100.
source "$(dirname "$0")/prepare_machine.sh"
$py -m nnmamba info | tee "$out/info.txt"
timeout 150 $py -m pytest -q -p no:cacheprovider Testing/python/test_gpu.py 2>&1 | tail -15 | tee "$out/pytest_gpu.txt"
timeout 180 $py Testing/benchmarks/bench_segment.py --device cuda --channels 32 2>&1 | tee "$out/bench_segment_cuda.txt"
timeout 150 $py Testing/benchmarks/bench_click.py --device cuda --rounds 5 2>&1 | tee "$out/bench_click_cuda.txt"
