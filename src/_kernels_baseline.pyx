# Portable x86-64 (SSE2) / any-architecture build of the kernels. The body is shared.
include "_kernels.pxi"
include "_linalg.pxi"
include "_factored.pxi"
