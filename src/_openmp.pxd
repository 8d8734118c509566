# All OpenMP calls go through this wrapper (as scikit-learn's utils/_openmp_helpers.pxd):
# without OpenMP the extension still builds and runs, serially.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define LRFAST_OPENMP 1
    static int lrfast_omp_get_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define LRFAST_OPENMP 0
    static int lrfast_omp_get_max_threads(void) { return 1; }
    #endif
    """
    bint LRFAST_OPENMP
    int lrfast_omp_get_max_threads() noexcept nogil
