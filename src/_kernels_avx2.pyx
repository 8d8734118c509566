# x86-64-v3 (AVX2, FMA, BMI2) build of the same kernels, chosen at import when the CPU supports it.
include "_kernels.pxi"
include "_linalg.pxi"
include "_factored.pxi"
