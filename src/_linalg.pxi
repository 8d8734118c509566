# Vector operations over all params as one flat vector (L-BFGS two-loop
# recursion, line search): deterministic reductions (fixed blocks, double
# accumulators, fixed combine order). Included by both ISA builds.
