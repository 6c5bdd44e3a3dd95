"""Build mamba-ssm's selective-scan CUDA kernel (float32 forward only) as the module ``selective_scan_cuda``.

For the GPU parity check on a machine without internet, where ``pip install mamba-ssm`` cannot fetch its
prebuilt wheel and a full source build (nine kernels for eight architectures) takes too long. Only the fp32
forward kernel is compiled for the local GPU's architecture; the other entry points raise if called.

    python build_selective_scan.py MAMBA_SSM_SOURCE BUILD_DIR
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

ONLY_FP32_FORWARD = r"""
#include <stdexcept>
#include "selective_scan_fwd_kernel.cuh"

template void selective_scan_fwd_cuda<float, float>(SSMParamsBase &params, cudaStream_t stream);

template <typename input_t, typename weight_t>
void selective_scan_bwd_cuda(SSMParamsBwd &params, cudaStream_t stream);

#define NOT_BUILT(FN, PARAMS, IN, W) \
    template <> void FN<IN, W>(PARAMS &, cudaStream_t) { \
        throw std::runtime_error("only the float32 forward selective scan was built for this check"); }
NOT_BUILT(selective_scan_fwd_cuda, SSMParamsBase, float, complex_t)
NOT_BUILT(selective_scan_fwd_cuda, SSMParamsBase, at::Half, float)
NOT_BUILT(selective_scan_fwd_cuda, SSMParamsBase, at::Half, complex_t)
NOT_BUILT(selective_scan_fwd_cuda, SSMParamsBase, at::BFloat16, float)
NOT_BUILT(selective_scan_fwd_cuda, SSMParamsBase, at::BFloat16, complex_t)
NOT_BUILT(selective_scan_bwd_cuda, SSMParamsBwd, float, float)
NOT_BUILT(selective_scan_bwd_cuda, SSMParamsBwd, float, complex_t)
NOT_BUILT(selective_scan_bwd_cuda, SSMParamsBwd, at::Half, float)
NOT_BUILT(selective_scan_bwd_cuda, SSMParamsBwd, at::Half, complex_t)
NOT_BUILT(selective_scan_bwd_cuda, SSMParamsBwd, at::BFloat16, float)
NOT_BUILT(selective_scan_bwd_cuda, SSMParamsBwd, at::BFloat16, complex_t)
"""


def main():
    source, build = Path(sys.argv[1]) / "csrc" / "selective_scan", Path(sys.argv[2])
    build.mkdir(parents=True, exist_ok=True)
    kernel_file = build / "selective_scan_fp32_forward_only.cu"
    kernel_file.write_text(ONLY_FP32_FORWARD)
    major, minor = torch.cuda.get_device_capability()
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    start = time.time()
    load(name="selective_scan_cuda", sources=[str(source / "selective_scan.cpp"), str(kernel_file)],
         extra_include_paths=[str(source)], build_directory=str(build), verbose=False,
         extra_cflags=["-O3", "-std=c++17"],
         extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr", "--expt-extended-lambda",
                            "--use_fast_math", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
                            "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__"])
    print(f"built selective_scan_cuda for sm_{major}{minor} in {time.time() - start:.0f} s -> {build}")


if __name__ == "__main__":
    main()
