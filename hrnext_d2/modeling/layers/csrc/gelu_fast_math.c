/*
 * Exact (erf) GELU in place, y = 0.5 x (1 + erf(x / sqrt(2))), for the epilogue of the depthwise
 * kernels. This file alone is compiled with -ffast-math so that the compiler calls glibc's
 * vectorised erff (libmvec); it is linked without -ffast-math, so the process's floating-point
 * mode (denormals) is left alone.
 */
#include <math.h>
#include <stdint.h>

void hrnext_gelu_inplace(float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float v = y[i];
        y[i] = 0.5f * v * (1.f + erff(v * 0.70710678118654752440f));
    }
}
