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
 * (sample, row) with OpenMP.
 *
 * Layouts: x (B, H, W, C); weight (taps, C) shared or (B, taps, C) per sample, taps = kh * kw in
 * row-major order; bias (C) or (B, C) or NULL; y (B, Ho, Wo, C) with Ho = H + 2 pad_h - dil_h (kh - 1),
 * likewise Wo. The input gradient of a stride-1 conv is the same conv of the output gradient with the
 * kernel flipped and padding dil (k - 1) - pad, so `hrnext_dw_forward` serves both directions.
 */
#include <stdint.h>
#include <string.h>

typedef int64_t i64;
typedef float v16 __attribute__((vector_size(64)));

#define VL 16 /* channels per vector */
#define PB 6  /* output pixels whose sums stay in registers */

void hrnext_gelu_inplace(float *y, i64 n); /* gelu_fast_math.c */

static inline v16 ld(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, v16 v) { memcpy(p, &v, sizeof v); }

struct dw_shape {
    i64 B, H, W, C, kh, kw, ph, pw, dh, dw, Ho, Wo;
};

static inline void fill_shape(struct dw_shape *s, const i64 *a) {
    s->B = a[0]; s->H = a[1]; s->W = a[2]; s->C = a[3]; s->kh = a[4]; s->kw = a[5];
    s->ph = a[6]; s->pw = a[7]; s->dh = a[8]; s->dw = a[9]; s->Ho = a[10]; s->Wo = a[11];
}

/* One output row (b, oh) for channels [c0, c0 + VL): C % VL == 0. */
static void row_vec(const struct dw_shape *s, const float *xb, const float *wb, const float *bb,
                    const float *ib, float *yrow, i64 oh, i64 c0) {
    const i64 C = s->C;
    const v16 bias = bb ? ld(bb + c0) : (v16){0};
    const v16 inb = ib ? ld(ib + c0) : (v16){0}; /* added to every input value the window reads */
    /* output columns whose taps all lie inside the input: [lo, hi) */
    i64 lo = (s->pw + 0) > 0 ? s->pw : 0;
    i64 hi = s->W + s->pw - (s->kw - 1) * s->dw;
    if (hi > s->Wo) hi = s->Wo;
    if (lo > hi) lo = hi;
    i64 ow = 0;
    for (; ow < s->Wo; ) {
        if (ow >= lo && ow + PB <= hi) {
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
            st(yrow + ow * C + c0, acc);
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
 * 1x1 conv that produced x, so that conv's output need not be written with it). */
void hrnext_dw_forward(const float *x, const float *w, const float *bias, const float *in_bias, float *y,
                       const i64 *shape, int w_per_sample, int bias_per_sample, int gelu) {
    struct dw_shape s;
    fill_shape(&s, shape);
    const i64 C = s.C, taps = s.kh * s.kw;
    #pragma omp parallel for schedule(static)
    for (i64 r = 0; r < s.B * s.Ho; ++r) {
        const i64 b = r / s.Ho, oh = r % s.Ho;
        const float *wb = w + (w_per_sample ? b * taps * C : 0);
        const float *bb = bias ? bias + (bias_per_sample ? b * C : 0) : NULL;
        const float *ib = in_bias ? in_bias + b * C : NULL;
        const float *xb = x + b * s.H * s.W * C;
        float *yrow = y + (b * s.Ho + oh) * s.Wo * C;
        if (C % VL == 0) {
            for (i64 c0 = 0; c0 < C; c0 += VL) row_vec(&s, xb, wb, bb, ib, yrow, oh, c0);
        } else {
            row_scalar(&s, xb, wb, bb, ib, yrow, oh);
        }
        if (gelu) hrnext_gelu_inplace(yrow, s.Wo * C); /* the row is still in cache */
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
