/*
 * Stride-1 depthwise 2-D convolution on channels-last (NHWC) float32 tensors, forward and backward,
 * with the weights shared by the batch (a static depthwise conv) or given per sample (HRNeXt's
 * dynamic depthwise conv, whose kernel is an attention-weighted sum of a kernel bank).
 *
 * Why: oneDNN has no fast path for dilated depthwise convs, runs a per-sample kernel only as a
 * batch-1 grouped conv with B*C groups (several times slower than the static conv), and its
 * depthwise backward is slow on the CPU. Here an output pixel is a sum over the kernel taps of
 * 16-channel vectors (GCC vector extensions: one AVX-512 register, or two AVX2 ones); groups of PB
 * output pixels keep their sums in registers while the taps are visited; work is split over
 * (sample, group of rows) with OpenMP; GELU, when asked for, is applied to the sums in registers.
 *
 * Layouts: x (B, H, W, C); weight (taps, C) shared or (B, taps, C) per sample, taps = kh * kw in
 * row-major order; bias (C) or (B, C) or NULL; y (B, Ho, Wo, C) with Ho = H + 2 pad_h - dil_h (kh - 1),
 * likewise Wo. The input gradient of a stride-1 conv is the same conv of the output gradient with the
 * kernel flipped and padding dil (k - 1) - pad, so `hrnext_dw_forward` serves both directions.
 */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;
typedef float v16 __attribute__((vector_size(64)));

#define VL 16 /* channels per vector */
#define PB 6  /* output pixels whose sums stay in registers */

typedef int32_t v16i __attribute__((vector_size(64)));

static inline v16 ld(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/*
 * Exact (erf) GELU, 0.5 x (1 + erf(x / sqrt(2))), applied to the sums while they are in registers.
 * erf(z) = z P(z^2) / Q(z^2) on z clamped to [-4, 4] (the rational approximation of Eigen and
 * TensorFlow; |error| < 4.3e-7 against double-precision erf in float32 arithmetic, where erf(4) =
 * 1 - 1.5e-8; the GELU within 9.3e-7 of the exact one).
 */
#define ERF_P(z2) ((((((-2.72614225801306e-10f * (z2) + 2.77068142495902e-08f) * (z2) - 2.10102402082508e-06f) \
                     * (z2) - 5.69250639462346e-05f) * (z2) - 7.34990630326855e-04f) * (z2) - 2.95459980854025e-03f) \
                   * (z2) - 1.60960333262415e-02f)
#define ERF_Q(z2) ((((-1.45660718464996e-05f * (z2) - 2.13374055278905e-04f) * (z2) - 1.68282697438203e-03f) \
                    * (z2) - 7.37332916720468e-03f) * (z2) - 1.42647390514189e-02f)

static inline v16 vsel(v16i m, v16 a, v16 b) { return (v16)(((v16i)a & m) | ((v16i)b & ~m)); }

static inline v16 gelu_v(v16 x) {
    const v16 lim = (v16){0} + 4.f;
    v16 z = x * 0.70710678118654752440f;
    z = vsel(z > lim, lim, z);
    z = vsel(z < -lim, -lim, z);
    const v16 z2 = z * z;
    return 0.5f * x * (1.f + z * ERF_P(z2) / ERF_Q(z2));
}

static inline float gelu_s(float x) {
    float z = x * 0.70710678118654752440f;
    z = z > 4.f ? 4.f : (z < -4.f ? -4.f : z);
    const float z2 = z * z;
    return 0.5f * x * (1.f + z * ERF_P(z2) / ERF_Q(z2));
}

struct dw_shape {
    i64 B, H, W, C, kh, kw, ph, pw, dh, dw, Ho, Wo;
};

static inline void fill_shape(struct dw_shape *s, const i64 *a) {
    s->B = a[0]; s->H = a[1]; s->W = a[2]; s->C = a[3]; s->kh = a[4]; s->kw = a[5];
    s->ph = a[6]; s->pw = a[7]; s->dh = a[8]; s->dw = a[9]; s->Ho = a[10]; s->Wo = a[11];
}

/* PBK output pixels of a K x K, dilation-1 kernel, channels [c0, c0 + VL), all taps inside the
 * input: each input vector of a kernel row is loaded once and used by every tap that reads it
 * (PBK + K - 1 loads for K * PBK multiply-adds), the kernel size a compile-time constant. */
#define PBK 8
static inline __attribute__((always_inline)) void group_dense(
        const struct dw_shape *s, const float *xb, const float *wb, v16 bias, v16 inb, int has_ib,
        float *yrow, i64 oh, i64 ow, i64 c0, int gelu, const int K) {
    const i64 C = s->C;
    v16 acc[PBK];
    for (int p = 0; p < PBK; ++p) acc[p] = bias;
    for (int i = 0; i < K; ++i) {
        const i64 ih = oh - s->ph + i;
        if (ih < 0 || ih >= s->H) continue;
        const float *xr = xb + (ih * s->W + ow - s->pw) * C + c0;
        v16 xv[PBK + K - 1], wv[K];
        for (int q = 0; q < PBK + K - 1; ++q) xv[q] = has_ib ? ld(xr + q * C) + inb : ld(xr + q * C);
        for (int j = 0; j < K; ++j) wv[j] = ld(wb + (i * K + j) * C + c0);
        for (int j = 0; j < K; ++j)
            for (int p = 0; p < PBK; ++p) acc[p] += wv[j] * xv[p + j];
    }
    if (gelu)
        for (int p = 0; p < PBK; ++p) acc[p] = gelu_v(acc[p]);
    for (int p = 0; p < PBK; ++p) st(yrow + (ow + p) * C + c0, acc[p]);
}

/* One output row (b, oh) for channels [c0, c0 + VL): C % VL == 0. */
static void row_vec(const struct dw_shape *s, const float *xb, const float *wb, const float *bb,
                    const float *ib, float *yrow, i64 oh, i64 c0, int gelu) {
    const i64 C = s->C;
    const v16 bias = bb ? ld(bb + c0) : (v16){0};
    const v16 inb = ib ? ld(ib + c0) : (v16){0}; /* added to every input value the window reads */
    /* output columns whose taps all lie inside the input: [lo, hi) */
    i64 lo = (s->pw + 0) > 0 ? s->pw : 0;
    i64 hi = s->W + s->pw - (s->kw - 1) * s->dw;
    if (hi > s->Wo) hi = s->Wo;
    if (lo > hi) lo = hi;
    const int dense = s->kh == s->kw && s->dh == 1 && s->dw == 1 && (s->kh == 3 || s->kh == 5);
    i64 ow = 0;
    for (; ow < s->Wo; ) {
        /* the last interior group overlaps the one before it (recomputing a few pixels) rather than
         * leaving the row's end to the pixel-by-pixel path */
        if (ow >= lo && ow < hi && ow + (dense ? PBK : PB) > hi && hi - lo >= (dense ? PBK : PB))
            ow = hi - (dense ? PBK : PB);
        if (dense && ow >= lo && ow + PBK <= hi) {
            if (s->kh == 3)
                group_dense(s, xb, wb, bias, inb, ib != NULL, yrow, oh, ow, c0, gelu, 3);
            else
                group_dense(s, xb, wb, bias, inb, ib != NULL, yrow, oh, ow, c0, gelu, 5);
            ow += PBK;
        } else if (!dense && ow >= lo && ow + PB <= hi) {
            v16 acc[PB];
            for (int p = 0; p < PB; ++p) acc[p] = bias;
            for (i64 i = 0; i < s->kh; ++i) {
                const i64 ih = oh - s->ph + i * s->dh;
                if (ih < 0 || ih >= s->H) continue;
                const float *xr = xb + (ih * s->W + ow - s->pw) * C + c0;
                const float *wr = wb + i * s->kw * C + c0;
                for (i64 j = 0; j < s->kw; ++j) {
                    const v16 wv = ld(wr + j * C);
                    const float *xv = xr + j * s->dw * C;
                    if (ib) {
                        for (int p = 0; p < PB; ++p) acc[p] += wv * (ld(xv + p * C) + inb);
                    } else {
                        for (int p = 0; p < PB; ++p) acc[p] += wv * ld(xv + p * C);
                    }
                }
            }
            if (gelu)
                for (int p = 0; p < PB; ++p) acc[p] = gelu_v(acc[p]);
            for (int p = 0; p < PB; ++p) st(yrow + (ow + p) * C + c0, acc[p]);
            ow += PB;
        } else {
            v16 acc = bias;
            for (i64 i = 0; i < s->kh; ++i) {
                const i64 ih = oh - s->ph + i * s->dh;
                if (ih < 0 || ih >= s->H) continue;
                for (i64 j = 0; j < s->kw; ++j) {
                    const i64 iw = ow - s->pw + j * s->dw;
                    if (iw < 0 || iw >= s->W) continue;
                    acc += ld(wb + (i * s->kw + j) * C + c0) * (ld(xb + (ih * s->W + iw) * C + c0) + inb);
                }
            }
            st(yrow + ow * C + c0, gelu ? gelu_v(acc) : acc);
            ow += 1;
        }
    }
}

/* One output row, any C (scalar over channels): the rare widths that are not a multiple of VL. */
static void row_scalar(const struct dw_shape *s, const float *xb, const float *wb, const float *bb,
                       const float *ib, float *yrow, i64 oh) {
    const i64 C = s->C;
    for (i64 ow = 0; ow < s->Wo; ++ow) {
        float *acc = yrow + ow * C;
        for (i64 c = 0; c < C; ++c) acc[c] = bb ? bb[c] : 0.f;
        for (i64 i = 0; i < s->kh; ++i) {
            const i64 ih = oh - s->ph + i * s->dh;
            if (ih < 0 || ih >= s->H) continue;
            for (i64 j = 0; j < s->kw; ++j) {
                const i64 iw = ow - s->pw + j * s->dw;
                if (iw < 0 || iw >= s->W) continue;
                const float *xv = xb + (ih * s->W + iw) * C;
                const float *wv = wb + (i * s->kw + j) * C;
                for (i64 c = 0; c < C; ++c) acc[c] += wv[c] * (ib ? xv[c] + ib[c] : xv[c]);
            }
        }
    }
}

/* y = conv(x + in_bias, w) + bias (stride 1; zero padding applies to x + in_bias), then GELU when
 * `gelu` is set. in_bias: NULL or (B, C), a per-sample channel offset of the input (the bias of the
 * 1x1 conv that produced x, so that conv's output need not be written with it).
 * Work: tasks of (sample, group of ROWS output rows). Where the input rows under the kernel are too
 * wide for the L1 cache (e.g. 3 rows of 48 pixels x 128 channels), a task visits its rows once per
 * 16-channel block, so those rows' slices stay in L1 from one output row to the next (20-25% faster
 * there); otherwise row by row, all channels at once. */
#define ROWS 8
#define L1_ROWS_BYTES 49152
void hrnext_dw_forward(const float *x, const float *w, const float *bias, const float *in_bias, float *y,
                       const i64 *shape, int w_per_sample, int bias_per_sample, int gelu) {
    struct dw_shape s;
    fill_shape(&s, shape);
    const i64 C = s.C, taps = s.kh * s.kw;
    i64 groups = (s.Ho + ROWS - 1) / ROWS;
    const i64 want = (4 * (i64)omp_get_max_threads() + s.B - 1) / s.B; /* enough tasks for the threads */
    if (groups < want) groups = want;
    if (groups > s.Ho) groups = s.Ho;
    if (groups < 1) groups = 1;
    /* the input rows under the kernel too wide for L1: visit the rows once per channel block */
    const int channel_blocks_outer = s.kh * s.W * C * (i64)sizeof(float) > L1_ROWS_BYTES;
    #pragma omp parallel for schedule(static)
    for (i64 t = 0; t < s.B * groups; ++t) {
        const i64 b = t / groups, g = t % groups;
        const i64 oh0 = g * s.Ho / groups, oh1 = (g + 1) * s.Ho / groups;
        const float *wb = w + (w_per_sample ? b * taps * C : 0);
        const float *bb = bias ? bias + (bias_per_sample ? b * C : 0) : NULL;
        const float *ib = in_bias ? in_bias + b * C : NULL;
        const float *xb = x + b * s.H * s.W * C;
        float *yb = y + b * s.Ho * s.Wo * C;
        if (C % VL == 0 && channel_blocks_outer) {
            for (i64 c0 = 0; c0 < C; c0 += VL)
                for (i64 oh = oh0; oh < oh1; ++oh) row_vec(&s, xb, wb, bb, ib, yb + oh * s.Wo * C, oh, c0, gelu);
        } else if (C % VL == 0) {
            for (i64 oh = oh0; oh < oh1; ++oh)
                for (i64 c0 = 0; c0 < C; c0 += VL) row_vec(&s, xb, wb, bb, ib, yb + oh * s.Wo * C, oh, c0, gelu);
        } else {
            for (i64 oh = oh0; oh < oh1; ++oh) {
                float *yrow = yb + oh * s.Wo * C;
                row_scalar(&s, xb, wb, bb, ib, yrow, oh);
                if (gelu)
                    for (i64 i = 0; i < s.Wo * C; ++i) yrow[i] = gelu_s(yrow[i]);
            }
        }
    }
}

/* Partial weight gradients: gw (B, chunks, taps, C) where chunk k of sample b sums over output rows
 * [k * Ho / chunks, (k + 1) * Ho / chunks). The caller sums over chunks (and over the batch for
 * shared weights). `acc` holds one VL-channel sum per tap while a chunk's pixels are visited. */
void hrnext_dw_backward_weight(const float *gy, const float *x, float *gw, const i64 *shape, i64 chunks) {
    struct dw_shape s;
    fill_shape(&s, shape);
    const i64 C = s.C, taps = s.kh * s.kw;
    #pragma omp parallel for schedule(static)
    for (i64 t = 0; t < s.B * chunks; ++t) {
        const i64 b = t / chunks, k = t % chunks;
        const i64 oh0 = k * s.Ho / chunks, oh1 = (k + 1) * s.Ho / chunks;
        const float *gyb = gy + b * s.Ho * s.Wo * C;
        const float *xb = x + b * s.H * s.W * C;
        float *out = gw + t * taps * C;
        if (C % VL == 0) {
            v16 acc[taps];
            for (i64 c0 = 0; c0 < C; c0 += VL) {
                for (i64 q = 0; q < taps; ++q) acc[q] = (v16){0};
                for (i64 oh = oh0; oh < oh1; ++oh) {
                    for (i64 i = 0; i < s.kh; ++i) {
                        const i64 ih = oh - s.ph + i * s.dh;
                        if (ih < 0 || ih >= s.H) continue;
                        const float *xr = xb + ih * s.W * C + c0;
                        const float *gr = gyb + oh * s.Wo * C + c0;
                        for (i64 j = 0; j < s.kw; ++j) {
                            /* output columns whose tap j lies inside the input */
                            i64 a = s.pw - j * s.dw, e = s.W + s.pw - j * s.dw;
                            if (a < 0) a = 0;
                            if (e > s.Wo) e = s.Wo;
                            /* four independent sums hide the FMA latency */
                            v16 s0 = acc[i * s.kw + j], s1 = {0}, s2 = {0}, s3 = {0};
                            const float *xs = xr + (j * s.dw - s.pw) * C;
                            i64 ow = a;
                            for (; ow + 4 <= e; ow += 4) {
                                s0 += ld(gr + ow * C) * ld(xs + ow * C);
                                s1 += ld(gr + (ow + 1) * C) * ld(xs + (ow + 1) * C);
                                s2 += ld(gr + (ow + 2) * C) * ld(xs + (ow + 2) * C);
                                s3 += ld(gr + (ow + 3) * C) * ld(xs + (ow + 3) * C);
                            }
                            for (; ow < e; ++ow) s0 += ld(gr + ow * C) * ld(xs + ow * C);
                            acc[i * s.kw + j] = (s0 + s1) + (s2 + s3);
                        }
                    }
                }
                for (i64 q = 0; q < taps; ++q) st(out + q * C + c0, acc[q]);
            }
        } else {
            memset(out, 0, sizeof(float) * taps * C);
            for (i64 oh = oh0; oh < oh1; ++oh)
                for (i64 ow = 0; ow < s.Wo; ++ow) {
                    const float *gv = gyb + (oh * s.Wo + ow) * C;
                    for (i64 i = 0; i < s.kh; ++i) {
                        const i64 ih = oh - s.ph + i * s.dh;
                        if (ih < 0 || ih >= s.H) continue;
                        for (i64 j = 0; j < s.kw; ++j) {
                            const i64 iw = ow - s.pw + j * s.dw;
                            if (iw < 0 || iw >= s.W) continue;
                            const float *xv = xb + (ih * s.W + iw) * C;
                            float *a = out + (i * s.kw + j) * C;
                            for (i64 c = 0; c < C; ++c) a[c] += gv[c] * xv[c];
                        }
                    }
                }
        }
    }
}

/*
 * Training-mode BatchNorm backward on NHWC tensors: given gy, x and the batch statistics (mean,
 * invstd per channel), the per-channel sums sum(gy) and sum(gy * xhat) are gathered in double
 * precision (one pass over rows split among threads, then reduced), then
 * gx = (gy - sum(gy) / N - xhat * sum(gy xhat) / N) * invstd * weight (a second pass).
 * sums: (2, C) double output (sum gy, sum gy*xhat) = the bias and weight gradients.
 */
void hrnext_bn_backward_nhwc(const float *gy, const float *x, const float *mean, const float *invstd,
                             const float *weight, float *gx, double *sums, i64 rows, i64 C, i64 parts) {
    double *part = sums + 2 * C; /* scratch: parts x 2 x C, after the result */
    #pragma omp parallel for schedule(static)
    for (i64 p = 0; p < parts; ++p) {
        double *sg = part + p * 2 * C, *sgx = sg + C;
        for (i64 c = 0; c < C; ++c) { sg[c] = 0.0; sgx[c] = 0.0; }
        const i64 r0 = p * rows / parts, r1 = (p + 1) * rows / parts;
        for (i64 r = r0; r < r1; ++r) {
            const float *g = gy + r * C, *xv = x + r * C;
            for (i64 c = 0; c < C; ++c) {
                const float xh = (xv[c] - mean[c]) * invstd[c];
                sg[c] += g[c];
                sgx[c] += (double)(g[c] * xh);
            }
        }
    }
    for (i64 c = 0; c < 2 * C; ++c) sums[c] = 0.0;
    for (i64 p = 0; p < parts; ++p)
        for (i64 c = 0; c < 2 * C; ++c) sums[c] += part[p * 2 * C + c];
    if (!gx) return;
    float *a = (float *)(part + parts * 2 * C); /* C floats: invstd * weight */
    float *m1 = a + C, *m2 = m1 + C;            /* mean(gy), mean(gy xhat) */
    for (i64 c = 0; c < C; ++c) {
        a[c] = invstd[c] * (weight ? weight[c] : 1.f);
        m1[c] = (float)(sums[c] / (double)rows);
        m2[c] = (float)(sums[C + c] / (double)rows);
    }
    #pragma omp parallel for schedule(static)
    for (i64 p = 0; p < parts; ++p) {
        const i64 r0 = p * rows / parts, r1 = (p + 1) * rows / parts;
        for (i64 r = r0; r < r1; ++r) {
            const float *g = gy + r * C, *xv = x + r * C;
            float *o = gx + r * C;
            for (i64 c = 0; c < C; ++c) {
                const float xh = (xv[c] - mean[c]) * invstd[c];
                o[c] = (g[c] - m1[c] - xh * m2[c]) * a[c];
            }
        }
    }
}

/*
 * The first half of HRNeXt's dynamic FFN at inference, fused: h = GELU(dw3x3(K1 x + b1) + b2), per
 * sample K1 (1x1, Cin -> Cout), b1, dw3x3 (pad 1) and b2, without writing the 1x1 conv's output: each
 * task keeps the three rows of it under the 3x3 window in a ring buffer (in L2) and computes one new
 * row per output row. Also the per-channel sums of h (for the next conv's attention).
 * Layouts: x (B, H, W, Cin); k1t (B, Cin, Cout) (the 1x1 kernel transposed); b1, b2 (B, Cout);
 * w2 (B, 9, Cout); h (B, H, W, Cout); sums (B, groups, Cout). Cout % 32 == 0. `shared`: k1t and w2
 * hold one kernel for the whole batch (a static FFN).
 */
#define PX 6 /* pixels of a 1x1-conv register block (6 x 32 outputs in 12 vectors) */

/* n pixels (PX, or 1 for a row's tail) x 32 outputs [o0, o0 + 32) of a 1x1 conv: y[p] = bias (+ res[p])
 * + sum over c of x[p][c] * kt[c]; x rows Cin apart, res and y rows Cout apart (y may be res). */
static inline __attribute__((always_inline)) void pointwise_block(
        const float *xp, i64 Cin, const float *kt, i64 Cout, i64 o0, const float *bias, const float *res,
        float *yp, const int n) {
    v16 a0[PX], a1[PX];
    for (int p = 0; p < n; ++p) {
        a0[p] = ld(bias + o0);
        a1[p] = ld(bias + o0 + VL);
        if (res) {
            a0[p] += ld(res + p * Cout + o0);
            a1[p] += ld(res + p * Cout + o0 + VL);
        }
    }
    for (i64 c = 0; c < Cin; ++c) {
        const v16 w0 = ld(kt + c * Cout + o0), w1 = ld(kt + c * Cout + o0 + VL);
        for (int p = 0; p < n; ++p) {
            const float v = xp[p * Cin + c];
            a0[p] += v * w0;
            a1[p] += v * w1;
        }
    }
    for (int p = 0; p < n; ++p) {
        st(yp + p * Cout + o0, a0[p]);
        st(yp + p * Cout + o0 + VL, a1[p]);
    }
}

/* One row of a 1x1 conv: hr (W, Cout) = xr (W, Cin) . kt (Cin, Cout) + bias. */
static void pointwise_row(const float *xr, const float *kt, const float *bias, float *hr, i64 W, i64 Cin,
                          i64 Cout) {
    for (i64 o0 = 0; o0 < Cout; o0 += 2 * VL) {
        i64 px = 0;
        for (; px + PX <= W; px += PX) pointwise_block(xr + px * Cin, Cin, kt, Cout, o0, bias, NULL, hr + px * Cout, PX);
        for (; px < W; ++px) pointwise_block(xr + px * Cin, Cin, kt, Cout, o0, bias, NULL, hr + px * Cout, 1);
    }
}

/* Output pixels [px, px + PBK) of the 3x3 depthwise conv (pad 1) over three rows (NULL: outside the
 * map), all columns inside the row, + bias, GELU; the values of pixels >= count_from added to *total. */
static inline void depthwise3_gelu_group(const float *const rows[3], const v16 *wv, v16 bias, float *yrow,
                                         i64 C, i64 c0, i64 px, i64 count_from, v16 *total) {
    v16 acc[PBK];
    for (int p = 0; p < PBK; ++p) acc[p] = bias;
    for (int i = 0; i < 3; ++i) {
        if (!rows[i]) continue;
        const float *r = rows[i] + (px - 1) * C + c0;
        v16 xv[PBK + 2];
        for (int q = 0; q < PBK + 2; ++q) xv[q] = ld(r + q * C);
        for (int j = 0; j < 3; ++j)
            for (int p = 0; p < PBK; ++p) acc[p] += wv[i * 3 + j] * xv[p + j];
    }
    for (int p = 0; p < PBK; ++p) {
        acc[p] = gelu_v(acc[p]);
        st(yrow + (px + p) * C + c0, acc[p]);
        if (px + p >= count_from) *total += acc[p];
    }
}

static inline v16 depthwise3_gelu_pixel(const float *const rows[3], const v16 *wv, v16 bias, i64 W, i64 C,
                                        i64 c0, i64 px) {
    v16 acc = bias;
    for (int i = 0; i < 3; ++i) {
        if (!rows[i]) continue;
        for (int j = 0; j < 3; ++j) {
            const i64 iw = px - 1 + j;
            if (iw >= 0 && iw < W) acc += wv[i * 3 + j] * ld(rows[i] + iw * C + c0);
        }
    }
    return gelu_v(acc);
}

/* One output row for channels [c0, c0 + VL); adds the written values to *sum. Interior pixels
 * [1, W - 1) in groups of PBK, the last group overlapping the one before it; the rest one by one. */
static void depthwise3_gelu_row(const float *const rows[3], const float *wb, const float *bb, float *yrow,
                                i64 W, i64 C, i64 c0, v16 *sum) {
    v16 wv[9];
    for (int q = 0; q < 9; ++q) wv[q] = ld(wb + q * C + c0);
    const v16 bias = ld(bb + c0);
    v16 total = {0};
    i64 px = 1;
    if (W - 2 >= PBK) {
        for (; px + PBK + 1 <= W; px += PBK) depthwise3_gelu_group(rows, wv, bias, yrow, C, c0, px, px, &total);
        if (px < W - 1) depthwise3_gelu_group(rows, wv, bias, yrow, C, c0, W - 1 - PBK, px, &total);
        px = W - 1;
    }
    for (i64 q = 0; q < W; ++q) {
        if (q >= 1 && q < px) continue; /* done above */
        const v16 v = depthwise3_gelu_pixel(rows, wv, bias, W, C, c0, q);
        st(yrow + q * C + c0, v);
        total += v;
    }
    *sum += total;
}

void hrnext_pw_dw_gelu(const float *x, const float *k1t, const float *b1, const float *w2, const float *b2,
                       float *h, float *sums, i64 B, i64 H, i64 W, i64 Cin, i64 Cout, i64 groups, int shared) {
    #pragma omp parallel for schedule(static)
    for (i64 t = 0; t < B * groups; ++t) {
        const i64 b = t / groups, g = t % groups;
        const i64 oh0 = g * H / groups, oh1 = (g + 1) * H / groups;
        const float *xb = x + b * H * W * Cin, *bb1 = b1 + b * Cout, *bb2 = b2 + b * Cout;
        const float *kt = k1t + (shared ? 0 : b * Cin * Cout), *wb = w2 + (shared ? 0 : b * 9 * Cout);
        float *hb = h + b * H * W * Cout;
        float *ring = (float *)malloc(sizeof(float) * 3 * W * Cout);
        const i64 nb = Cout / VL;
        v16 acc[nb];
        for (i64 k = 0; k < nb; ++k) acc[k] = (v16){0};
        i64 have = oh0 - 2; /* the last 1x1-conv row computed */
        for (i64 oh = oh0; oh < oh1; ++oh) {
            i64 r = have + 1 > oh - 1 ? have + 1 : oh - 1;
            if (r < 0) r = 0;
            for (; r <= oh + 1 && r < H; ++r) {
                pointwise_row(xb + r * W * Cin, kt, bb1, ring + (r % 3) * W * Cout, W, Cin, Cout);
                have = r;
            }
            const float *rows[3];
            for (int i = 0; i < 3; ++i) {
                const i64 ih = oh - 1 + i;
                rows[i] = (ih >= 0 && ih < H) ? ring + (ih % 3) * W * Cout : NULL;
            }
            for (i64 c0 = 0; c0 < Cout; c0 += VL)
                depthwise3_gelu_row(rows, wb, bb2, hb + oh * W * Cout, W, Cout, c0, &acc[c0 / VL]);
        }
        free(ring);
        float *ts = sums + t * Cout;
        for (i64 k = 0; k < nb; ++k) st(ts + k * VL, acc[k]);
    }
}

/*
 * y = x + (per-sample 1x1 conv of h) + bias at inference: the last conv of HRNeXt's dynamic FFN with
 * the block's residual, in one pass (no separate add over the output).
 * Layouts: h (B, P, Cin) with P = H * W; kt (B, Cin, Cout) (the kernel transposed); bias (B, Cout);
 * x, y (B, P, Cout), y may be x. Cout % 32 == 0. Work: tasks of (sample, pixel chunk); a register
 * block of PX pixels x 32 outputs, the PX input pixels reused from L1 for every 32 outputs.
 */
void hrnext_pw_residual(const float *h, const float *kt, const float *bias, const float *x, float *y,
                        i64 B, i64 P, i64 Cin, i64 Cout, i64 chunks) {
    #pragma omp parallel for schedule(static)
    for (i64 t = 0; t < B * chunks; ++t) {
        const i64 b = t / chunks, k = t % chunks;
        const i64 p0 = k * P / chunks, p1 = (k + 1) * P / chunks;
        const float *hb = h + b * P * Cin, *kb = kt + b * Cin * Cout, *bb = bias + b * Cout;
        const float *xb = x + b * P * Cout;
        float *yb = y + b * P * Cout;
        i64 px = p0;
        for (; px + PX <= p1; px += PX)
            for (i64 o0 = 0; o0 < Cout; o0 += 2 * VL)
                pointwise_block(hb + px * Cin, Cin, kb, Cout, o0, bb, xb + px * Cout, yb + px * Cout, PX);
        for (; px < p1; ++px)
            for (i64 o0 = 0; o0 < Cout; o0 += 2 * VL)
                pointwise_block(hb + px * Cin, Cin, kb, Cout, o0, bb, xb + px * Cout, yb + px * Cout, 1);
    }
}
