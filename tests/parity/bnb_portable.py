"""bitsandbytes as the tests' reference on any CPU: its portable 4-bit kernels (backends/default).

bitsandbytes 0.50.2 dequantises 4-bit weights on the CPU with native kernels. On CPUs with AVX-512
those take a vectorised path that reads the wrong block scale when a row is shorter than a block
(a 16-wide row of 64-element blocks: elements 64.. are scaled by the first block's absmax), and
with AVX512-BF16 its Linear4bit, in eval mode without gradients, repacks the weights for a fused
bfloat16 kernel; on AVX2 machines the native kernels compute what the portable definition does.
Importing this module (before any Linear4bit is made) turns the repacking off and removes
bitsandbytes' CPU registrations of dequantize_4bit and gemv_4bit, so its portable ("default")
kernels run and the tests compare against the same numbers on every machine.
"""
import torch
import torch.library
import bitsandbytes  # noqa: F401  (registers bitsandbytes' kernels first)
import bitsandbytes.nn.modules

bitsandbytes.nn.modules.has_avx512bf16 = lambda: False  # Linear4bit reads it when it is made

_NATIVE = {"bitsandbytes/dequantize_4bit/CPU", "bitsandbytes/gemv_4bit/CPU"}

for library in list(torch.library._keep_alive):
    if getattr(library, "ns", None) == "bitsandbytes" and getattr(library, "_op_impls", set()) & _NATIVE:
        library._destroy()
        torch.library._keep_alive.remove(library)
