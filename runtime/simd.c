/* simd.c - the portable half of the SIMD kernels (simd.h): choosing the path, packing
 * weights into the layouts of simd_impl.h, sizing scratch and model memory, and the
 * _isa entry points that dispatch to simd_avx2.c / simd_avx512.c or to kernels.c.
 *
 * Plain integer C under -mgeneral-regs-only like the rest of the library: only the two
 * kernel files use vector registers. Without QRT_SIMD_X86 (non-x86 builds, QRT_SIMD=OFF)
 * every size is 0 and every entry point runs the portable kernel.
 *
 * The correction bias' = bias - (128 + z_in) * sum(w) (docs/runtime-simd.md): the SIMD
 * paths multiply u = q_in + 128 in [0, 255] (padding: u = z_in + 128) by w, so
 *   bias' + sum u * w = bias - (128 + z_in) sum w + sum (q_in + 128) w
 *                     = bias + sum (q_in - z_in) w = acc            (mod 2^32).
 * The loader keeps |acc| <= 2^31 - 1, so the wrapped int32 sums give acc exactly. The
 * product (128 + z_in) * sum(w) is formed in int64 (|.| <= 255 * K * 127) and the
 * difference wrapped through uint32 (no signed overflow).
 */
#include <string.h>

#include "internal.h"
#include "simd_impl.h"

/* ---- paths ------------------------------------------------------------------------- */

static const char *const ISA_NAMES[] = {"portable", "avx2", "avx512vnni"};
QRT_STATIC_ASSERT(sizeof ISA_NAMES / sizeof ISA_NAMES[0] == QRT_ISA_COUNT, one_name_per_isa);

const char *qrt_isa_str(qrt_isa isa) {
    return (unsigned)isa < (unsigned)QRT_ISA_COUNT ? ISA_NAMES[isa] : "?";
}

bool qrt_isa_parse(const char *s, qrt_isa *isa) {
    for (int i = 0; s && i < QRT_ISA_COUNT; i++)
        if (!strcmp(s, ISA_NAMES[i])) {
            *isa = (qrt_isa)i;
            return true;
        }
    return false;
}

bool qrt_isa_supported(qrt_isa isa) {
    switch (isa) {
    case QRT_ISA_PORTABLE: return true;
    case QRT_ISA_AVX2:
#if defined(QRT_SIMD_X86)
        return __builtin_cpu_supports("avx2");
#else
        return false;
#endif
    case QRT_ISA_AVX512VNNI:
#if defined(QRT_SIMD_X86)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
        return false;
#endif
    case QRT_ISA_COUNT: return false;
    }
    return false; /* not a qrt_isa value */
}

/* The best supported path at or below isa (the paths are ordered by what they need). */
qrt_isa qrt_isa_resolve(qrt_isa isa) {
    int i = (int)isa;
    if (i < 0) return QRT_ISA_PORTABLE;
    if (i >= QRT_ISA_COUNT) i = QRT_ISA_COUNT - 1;
    while (i > 0 && !qrt_isa_supported((qrt_isa)i)) i--;
    return (qrt_isa)i;
}

qrt_isa qrt_isa_best(void) { return qrt_isa_resolve((qrt_isa)(QRT_ISA_COUNT - 1)); }

/* No environment variable is read here: a program that wants QRT_ISA maps it to
 * qrt_model_set_isa (the qat command and bench/ do). */
qrt_isa qrt_isa_default(void) { return qrt_isa_best(); }

const char *qrt_isa_name(void) { return qrt_isa_str(qrt_isa_default()); }

#if defined(QRT_SIMD_X86)

/* ---- packing ----------------------------------------------------------------------- */

static bool is_depthwise(const qrt_conv_params *p) { return p->groups == p->C && p->C == p->OC; }

/* A 1x1 conv over the plane as it is: a GEMM of (H*W, C) by (C, OC). (The pack size
 * does not see stride and pad: the size scan of the graph, qrt_simd_mem_bound, does not
 * read them, so the extra copy is counted for every k = 1 dense conv; pack() only fills
 * it for stride 1 and pad 0.) */
static bool is_pointwise_k(const qrt_conv_params *p) { return p->k == 1 && p->groups == 1 && !is_depthwise(p); }
static bool is_pointwise(const qrt_conv_params *p) { return is_pointwise_k(p) && p->stride == 1 && p->pad == 0; }

/* Blob: header, requantization records, weights; each part aligned, plus the slack to
 * align the caller's memory. */
static size_t conv_parts(const qrt_conv_params *p, size_t *rq_off, size_t *w_off, int *nob, int *nj) {
    const int G = p->groups, Cg = p->C / G, OCg = p->OC / G, k = p->k;
    size_t nrec, wbytes;
    if (is_depthwise(p)) {
        *nob = (p->C + 15) / 16;
        *nj = 0;
        nrec = (size_t)*nob;
        /* int32 [tap][Cp], then int16 pairs [pair][Cp][2] */
        wbytes = (size_t)k * k * (size_t)*nob * 16 * 4 + ((size_t)k * k + 1) / 2 * (size_t)*nob * 16 * 4;
    } else {
        *nob = (OCg + 15) / 16;
        *nj = (k * Cg + 3) / 4;
        nrec = (size_t)G * *nob;
        wbytes = (size_t)G * *nob * k * (size_t)*nj * 64;
        if (is_pointwise_k(p)) wbytes += (size_t)*nob * (((size_t)p->C + 1) / 2) * 32;
        wbytes += (size_t)G * ((OCg + 7) / 8) * k * (size_t)*nj * 64; /* the int16 copy, AVX2 */
    }
    *rq_off = qrt_round_up(sizeof(qrt_packed_conv), QRT_SIMD_ALIGN);
    *w_off = *rq_off + nrec * QRT_RQ_WORDS * 4;
    return QRT_SIMD_ALIGN + *w_off + wbytes;
}

size_t qrt_conv2d_pack_size(const qrt_conv_params *p) {
    size_t rq, wo;
    int nob, nj;
    return conv_parts(p, &rq, &wo, &nob, &nj);
}

/* One requantization record for the channels [c0, c0 + n) (n <= 16) of a layer. */
static void rq_record(int32_t *r, const int8_t *w, size_t K, const int32_t *bias, const int32_t *mult,
                      const int32_t *shift, int c0, int n, int32_t z_in) {
    memset(r, 0, QRT_RQ_WORDS * 4);
    for (int l = 0; l < n; l++) {
        const int c = c0 + l;
        int64_t sum = 0;
        for (size_t i = 0; i < K; i++) sum += w[(size_t)c * K + i];
        const int64_t corr = (int64_t)(128 + z_in) * sum;
        r[QRT_RQ_BIAS + l] = (int32_t)((uint32_t)bias[c] - (uint32_t)(uint64_t)corr);
        r[QRT_RQ_M0 + l] = mult[c];
        const int32_t s = shift[c];
        r[QRT_RQ_LEFT + l] = s > 0 ? s : 0;
        r[QRT_RQ_RIGHT + l] = s > 0 ? 0 : -s;
        r[QRT_RQ_MASK + l] = (int32_t)(((uint32_t)1 << r[QRT_RQ_RIGHT + l]) - 1u);
        r[QRT_RQ_HALF + l] = r[QRT_RQ_MASK + l] >> 1;
    }
}

const void *qrt_conv2d_pack(void *mem, const int8_t *w, const int32_t *bias, const int32_t *mult,
                            const int32_t *shift, const qrt_conv_params *p) {
    size_t rq_off, w_off;
    int nob, nj;
    const size_t size = conv_parts(p, &rq_off, &w_off, &nob, &nj);
    uint8_t *base = qrt_align_ptr(mem);
    memset(base, 0, size - QRT_SIMD_ALIGN);
    qrt_packed_conv *pk = (qrt_packed_conv *)(void *)base;
    const int G = p->groups, Cg = p->C / G, OCg = p->OC / G, k = p->k;
    const size_t K = (size_t)Cg * k * k;
    int32_t *rq = (int32_t *)(void *)(base + rq_off);
    pk->magic = QRT_PACKED_CONV;
    pk->depthwise = is_depthwise(p);
    pk->w = w, pk->bias = bias, pk->mult = mult, pk->shift = shift;
    pk->Cg = Cg, pk->OCg = OCg, pk->nj = nj, pk->nob = nob;
    pk->rq = rq;
    if (pk->depthwise) {
        int32_t *wd = (int32_t *)(void *)(base + w_off);
        const size_t Cp = (size_t)nob * 16;
        int16_t *wdp = (int16_t *)(void *)(wd + (size_t)k * k * Cp);
        for (int c = 0; c < p->C; c++)
            for (int t = 0; t < k * k; t++) {
                wd[(size_t)t * Cp + c] = w[(size_t)c * k * k + t];
                wdp[((size_t)(t / 2) * Cp + c) * 2 + t % 2] = w[(size_t)c * k * k + t];
            }
        pk->wdp = wdp;
        for (int b = 0; b < nob; b++)
            rq_record(rq + (size_t)b * QRT_RQ_WORDS, w, K, bias, mult, shift, b * 16,
                      p->C - b * 16 < 16 ? p->C - b * 16 : 16, p->z_in);
        pk->wd = wd;
        pk->ocs = (int)Cp;
        return pk;
    }
    int8_t *wp = (int8_t *)(base + w_off);
    pk->wgroup = (size_t)nob * k * nj * 64;
    /* Output rows of the HWC scratch: a group's last block stores 16 channels, up to 15
     * past the group; the next group overwrites them later, the last one spills into
     * this padding. */
    pk->ocs = (int)qrt_round_up((size_t)p->OC, 16) + (G > 1 && OCg % 16 ? 16 : 0);
    for (int g = 0; g < G; g++)
        for (int b = 0; b < nob; b++) {
            const int n = OCg - b * 16 < 16 ? OCg - b * 16 : 16;
            rq_record(rq + ((size_t)g * nob + b) * QRT_RQ_WORDS, w, K, bias, mult, shift,
                      g * OCg + b * 16, n, p->z_in);
            for (int l = 0; l < n; l++) {
                const int oc = g * OCg + b * 16 + l;
                for (int ky = 0; ky < k; ky++)
                    for (int t = 0; t < k * Cg; t++) {
                        const int kx = t / Cg, c = t % Cg, j = t / 4, byte = t % 4;
                        wp[(size_t)g * pk->wgroup + (((size_t)b * k + ky) * nj + j) * 64 + l * 4 + byte] =
                            w[(((size_t)oc * Cg + c) * k + ky) * k + kx];
                    }
            }
        }
    pk->wp = wp;
    /* the int16 copy [g][ob8][ky][j][8][4] for AVX2, after the dense weights and the space
     * conv_parts counts for the pointwise GEMM's copy */
    pk->nob8 = (OCg + 7) / 8;
    int16_t *w16 = (int16_t *)(void *)(wp + (size_t)G * pk->wgroup +
                                       (is_pointwise_k(p) ? (size_t)nob * (((size_t)p->C + 1) / 2) * 32 : 0));
    for (int g = 0; g < G; g++)
        for (int j8 = 0; j8 < OCg; j8++) {
            const int oc = g * OCg + j8, b8 = j8 / 8, l = j8 % 8;
            for (int ky = 0; ky < k; ky++)
                for (int t = 0; t < k * Cg; t++) {
                    const int kx = t / Cg, c = t % Cg, j = t / 4, byte = t % 4;
                    w16[((((size_t)g * pk->nob8 + b8) * k + ky) * nj + j) * 32 + (size_t)l * 4 + byte] =
                        w[(((size_t)oc * Cg + c) * k + ky) * k + kx];
                }
        }
    pk->wp16 = w16;
    if (is_pointwise(p)) { /* the GEMM copy after the dense weights: [ob][kp][16][2] */
        int8_t *wg = wp + pk->wgroup;
        pk->nkp = (p->C + 1) / 2;
        for (int oc = 0; oc < p->OC; oc++)
            for (int c = 0; c < p->C; c++)
                wg[((size_t)(oc / 16) * pk->nkp + c / 2) * 32 + (oc % 16) * 2 + c % 2] = w[(size_t)oc * p->C + c];
        pk->wg = wg;
    }
    return pk;
}

void qrt_conv_scratch_layout(const qrt_conv_params *p, qrt_conv_scratch *s) {
    s->Hp = p->H + 2 * p->pad;
    s->Wp = p->W + 2 * p->pad;
    const size_t plane = (size_t)s->Hp * s->Wp, npos = (size_t)p->OH * p->OW;
    size_t out_row;
    if (is_depthwise(p)) {
        out_row = qrt_round_up((size_t)p->C, 16);
        s->xb_bytes = plane * out_row;
    } else {
        const int G = p->groups, OCg = p->OC / G;
        out_row = qrt_round_up((size_t)p->OC, 16) + (G > 1 && OCg % 16 ? 16 : 0);
        s->xb_bytes = plane * (size_t)p->C;
    }
    /* AVX2's planar kernel (C == 1): the padded plane in rows of up to Wp + 32 bytes */
    if (p->C == 1) {
        const size_t planar = (size_t)s->Hp * ((size_t)s->Wp + 32);
        if (s->xb_bytes < planar) s->xb_bytes = planar;
    }
    s->u16_off = qrt_round_up(s->xb_bytes + QRT_SIMD_ALIGN, QRT_SIMD_ALIGN);
    s->ob_off = s->u16_off;
    if (is_pointwise(p)) s->ob_off += qrt_round_up(npos * qrt_round_up((size_t)p->C, 16) * 2, QRT_SIMD_ALIGN);
    s->total = s->ob_off + qrt_round_up(npos * out_row + QRT_SIMD_ALIGN, QRT_SIMD_ALIGN);
    s->x16_off = s->total;
    if (!is_depthwise(p)) /* pointwise too: with a fused max pool it takes the dense kernel */
        s->total += qrt_round_up(plane * (size_t)(p->C / p->groups) * 2 + QRT_SIMD_ALIGN, QRT_SIMD_ALIGN);
}

size_t qrt_conv2d_scratch_size(const qrt_conv_params *p) {
    qrt_conv_scratch s;
    qrt_conv_scratch_layout(p, &s);
    return s.total + QRT_SIMD_ALIGN;
}

/* Blob: header, records, the GEMV weights [nob][nj][16][4], the GEMM weights
 * [nob][nkp][16][2] (both zero-padded), plus the slack to align the caller's memory. */
static size_t linear_parts(const qrt_linear_params *p, size_t *rq_off, size_t *w_off, size_t *g_off) {
    const size_t nob = ((size_t)p->F_out + 15) / 16, nj = ((size_t)p->F_in + 3) / 4;
    const size_t nkp = ((size_t)p->F_in + 1) / 2;
    *rq_off = qrt_round_up(sizeof(qrt_packed_linear), QRT_SIMD_ALIGN);
    *w_off = *rq_off + nob * QRT_RQ_WORDS * 4;
    *g_off = *w_off + nob * nj * 64;
    return QRT_SIMD_ALIGN + *g_off + nob * nkp * 32;
}

size_t qrt_linear_pack_size(const qrt_linear_params *p) {
    size_t a, b, c;
    return linear_parts(p, &a, &b, &c);
}

const void *qrt_linear_pack(void *mem, const int8_t *w, const int32_t *bias, const int32_t *mult,
                            const int32_t *shift, const qrt_linear_params *p) {
    size_t rq_off, w_off, g_off;
    const size_t size = linear_parts(p, &rq_off, &w_off, &g_off);
    uint8_t *base = qrt_align_ptr(mem);
    memset(base, 0, size - QRT_SIMD_ALIGN);
    qrt_packed_linear *pk = (qrt_packed_linear *)(void *)base;
    pk->magic = QRT_PACKED_LINEAR;
    pk->w = w, pk->bias = bias, pk->mult = mult, pk->shift = shift;
    pk->nob = (p->F_out + 15) / 16;
    pk->nj = (p->F_in + 3) / 4;
    pk->nkp = (p->F_in + 1) / 2;
    int32_t *rq = (int32_t *)(void *)(base + rq_off);
    int8_t *wp = (int8_t *)(base + w_off), *wg = (int8_t *)(base + g_off);
    for (int b = 0; b < pk->nob; b++) {
        const int n = p->F_out - b * 16 < 16 ? p->F_out - b * 16 : 16;
        rq_record(rq + (size_t)b * QRT_RQ_WORDS, w, (size_t)p->F_in, bias, mult, shift, b * 16, n,
                  p->z_in);
        for (int l = 0; l < n; l++) {
            const int8_t *wo = w + (size_t)(b * 16 + l) * p->F_in;
            for (int i = 0; i < p->F_in; i++) {
                wp[((size_t)b * pk->nj + i / 4) * 64 + l * 4 + i % 4] = wo[i];
                wg[((size_t)b * pk->nkp + i / 2) * 32 + l * 2 + i % 2] = wo[i];
            }
        }
    }
    pk->rq = rq;
    pk->wp = wp;
    pk->wg = wg;
    return pk;
}

size_t qrt_linear_scratch_size(const qrt_linear_params *p) {
    return qrt_round_up((size_t)p->F_in + 4, QRT_SIMD_ALIGN) + 2 * QRT_SIMD_ALIGN;
}

size_t qrt_linear_batch_scratch_size(const qrt_linear_params *p, int n) {
    const size_t one = qrt_linear_scratch_size(p);
    const size_t gemm = (size_t)(n > 0 ? n : 1) * qrt_linear_batch_row(p) + QRT_SIMD_ALIGN;
    return one > gemm ? one : gemm;
}

#else /* no SIMD kernels in this build */

size_t qrt_conv2d_pack_size(const qrt_conv_params *p) { (void)p; return 0; }
const void *qrt_conv2d_pack(void *mem, const int8_t *w, const int32_t *bias, const int32_t *mult,
                            const int32_t *shift, const qrt_conv_params *p) {
    (void)mem, (void)w, (void)bias, (void)mult, (void)shift, (void)p;
    return NULL;
}
size_t qrt_conv2d_scratch_size(const qrt_conv_params *p) { (void)p; return 0; }
size_t qrt_linear_pack_size(const qrt_linear_params *p) { (void)p; return 0; }
const void *qrt_linear_pack(void *mem, const int8_t *w, const int32_t *bias, const int32_t *mult,
                            const int32_t *shift, const qrt_linear_params *p) {
    (void)mem, (void)w, (void)bias, (void)mult, (void)shift, (void)p;
    return NULL;
}
size_t qrt_linear_scratch_size(const qrt_linear_params *p) { (void)p; return 0; }
size_t qrt_linear_batch_scratch_size(const qrt_linear_params *p, int n) { (void)p, (void)n; return 0; }

#endif

/* ---- dispatch ---------------------------------------------------------------------- */

void qrt_conv2d_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed,
                       const qrt_conv_params *p, void *scratch) {
    const qrt_packed_conv *pk = packed;
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX512VNNI) {
        if (qrt_avx512_planar_ok(p) && __builtin_cpu_supports("avx512vbmi"))
            qrt_avx512_conv_planar(out, in, pk, p);
        else
            qrt_avx512_conv2d(out, in, pk, p, qrt_align_ptr(scratch));
        return;
    }
    if (isa == QRT_ISA_AVX2) {
        qrt_avx2_conv2d(out, in, pk, p, qrt_align_ptr(scratch));
        return;
    }
#else
    (void)scratch;
#endif
    qrt_conv2d_s8(out, in, pk->w, pk->bias, pk->mult, pk->shift, p);
}

bool qrt_conv2d_dw_pw_ok(const qrt_conv_params *p_dw, const qrt_conv_params *p_pw) {
    /* spelled out: the helpers above exist in SIMD builds only */
    const bool dw = p_dw->groups == p_dw->C && p_dw->C == p_dw->OC;
    const bool pw = p_pw->k == 1 && p_pw->groups == 1 && p_pw->stride == 1 && p_pw->pad == 0 &&
                    !(p_pw->C == 1 && p_pw->OC == 1);
    return dw && pw && p_pw->C == p_dw->OC && p_pw->H == p_dw->OH && p_pw->W == p_dw->OW;
}

#if defined(QRT_SIMD_X86)
size_t qrt_conv2d_dw_pw_scratch_size(const qrt_conv_params *p_dw, const qrt_conv_params *p_pw) {
    qrt_conv_scratch sd, sp;
    qrt_conv_scratch_layout(p_dw, &sd);
    qrt_conv_scratch_layout(p_pw, &sp);
    const size_t fused = qrt_round_up(sd.total, QRT_SIMD_ALIGN) + sp.total;
    const size_t mid = qrt_round_up((size_t)p_dw->OC * p_dw->OH * p_dw->OW, QRT_SIMD_ALIGN);
    const size_t apart = mid + (sd.total > sp.total ? sd.total : sp.total);
    return (fused > apart ? fused : apart) + 2 * QRT_SIMD_ALIGN;
}
#else
size_t qrt_conv2d_dw_pw_scratch_size(const qrt_conv_params *p_dw, const qrt_conv_params *p_pw) {
    (void)p_dw, (void)p_pw;
    return 0;
}
#endif

void qrt_conv2d_dw_pw_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed_dw,
                             const qrt_conv_params *p_dw, const void *packed_pw, const qrt_conv_params *p_pw,
                             void *scratch) {
    qrt_conv2d_dw_pw_layout(isa, out, in, packed_dw, p_dw, packed_pw, p_pw, scratch, false, false);
}

void qrt_conv2d_dw_pw_layout(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed_dw,
                             const qrt_conv_params *p_dw, const void *packed_pw, const qrt_conv_params *p_pw,
                             void *scratch, bool in_hwc, bool out_hwc) {
    isa = qrt_isa_resolve(isa);
    uint8_t *s = qrt_align_ptr(scratch);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX2) {
        qrt_avx2_conv2d_dw_pw(out, in, packed_dw, p_dw, packed_pw, p_pw, s, in_hwc, out_hwc);
        return;
    }
#endif
    (void)in_hwc, (void)out_hwc; /* AVX2 only (run.c asks for them on that path alone) */
    /* the two kernels, the depthwise output at the start of the scratch */
    const size_t mid = qrt_round_up((size_t)p_dw->OC * p_dw->OH * p_dw->OW, QRT_SIMD_ALIGN);
    qrt_conv2d_s8_isa(isa, (int8_t *)s, in, packed_dw, p_dw, s + mid);
    qrt_conv2d_s8_isa(isa, out, (const int8_t *)s, packed_pw, p_pw, s + mid);
}

void qrt_conv2d_maxpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed,
                               const qrt_conv_params *p, void *scratch) {
    const qrt_packed_conv *pk = packed;
    const qrt_pool_params pp = {.C = p->OC, .H = p->OH, .W = p->OW, .OH = p->OH / 2, .OW = p->OW / 2,
                                .k = 2, .stride = 2, .pad = 0, .z_in = p->z_out};
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX512VNNI && !pk->depthwise) {
        qrt_avx512_conv2d_maxpool(out, in, pk, p, qrt_align_ptr(scratch));
        return;
    }
    if (isa == QRT_ISA_AVX2 && !pk->depthwise) {
        qrt_avx2_conv2d_maxpool(out, in, pk, p, qrt_align_ptr(scratch));
        return;
    }
    /* depthwise, portable: the portable conv output in the scratch's output part
     * (npos * ocs >= OC * OH * OW bytes), then the pool */
    qrt_conv_scratch sl;
    qrt_conv_scratch_layout(p, &sl);
    int8_t *mid = (int8_t *)qrt_align_ptr(scratch) + sl.ob_off;
    qrt_conv2d_s8(mid, in, pk->w, pk->bias, pk->mult, pk->shift, p);
    qrt_maxpool_s8_isa(isa, out, mid, &pp);
#else
    /* unreachable: without SIMD kernels pack() gives no packed form to call this with */
    (void)scratch, (void)out, (void)in, (void)pk, (void)pp;
#endif
}

void qrt_linear_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed,
                       const qrt_linear_params *p, void *scratch) {
    const qrt_packed_linear *pk = packed;
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX512VNNI) {
        qrt_avx512_linear(out, in, pk, p, qrt_align_ptr(scratch));
        return;
    }
    if (isa == QRT_ISA_AVX2) {
        qrt_avx2_linear(out, in, pk, p, qrt_align_ptr(scratch));
        return;
    }
#else
    (void)scratch;
#endif
    qrt_linear_s8(out, in, pk->w, pk->bias, pk->mult, pk->shift, p);
}

void qrt_linear_batch_s8_isa(qrt_isa isa, int8_t *out, size_t out_stride, const int8_t *in,
                             size_t in_stride, int n, const void *packed, const qrt_linear_params *p,
                             void *scratch) {
    const qrt_packed_linear *pk = packed;
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX2) {
        qrt_avx2_linear_batch(out, out_stride, in, in_stride, n, pk, p, qrt_align_ptr(scratch));
        return;
    }
    if (isa == QRT_ISA_AVX512VNNI) {
        qrt_avx512_linear_batch(out, out_stride, in, in_stride, n, pk, p, qrt_align_ptr(scratch));
        return;
    }
#else
    (void)scratch;
#endif
    qrt_linear_batch_s8(out, out_stride, in, in_stride, n, pk->w, pk->bias, pk->mult, pk->shift, p);
}

void qrt_maxpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const qrt_pool_params *p) {
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX512VNNI && qrt_avx512_maxpool(out, in, p)) return;
    if (isa == QRT_ISA_AVX2 && qrt_avx2_maxpool(out, in, p)) return;
#endif
    qrt_maxpool_s8(out, in, p);
}

/* Windowed average pool: the portable kernel on every path (no profile showed it). */
void qrt_avgpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const qrt_pool_params *p) {
    (void)isa;
    qrt_avgpool_s8(out, in, p);
}

/* AVX2 and AVX-512 VNNI: the vpsadbw kernel of simd_avx2.c (its comment derives that it
 * computes the spec's formula exactly). */
void qrt_global_avgpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, int C, int HW, int32_t z) {
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa != QRT_ISA_PORTABLE) {
        qrt_avx2_global_avgpool(out, in, C, HW, z);
        return;
    }
#endif
    qrt_global_avgpool_s8(out, in, C, HW, z);
}

void qrt_add_s8_isa(qrt_isa isa, int8_t *out, const int8_t *a, const int8_t *b, size_t n,
                    const qrt_add_params *p) {
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX512VNNI) {
        qrt_avx512_add(out, a, b, n, p);
        return;
    }
    if (isa == QRT_ISA_AVX2) {
        qrt_avx2_add(out, a, b, n, p);
        return;
    }
#endif
    qrt_add_s8(out, a, b, n, p);
}

void qrt_input_u8_isa(qrt_isa isa, int8_t *out, const uint8_t *pixels, size_t n) {
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    if (isa == QRT_ISA_AVX512VNNI) {
        qrt_avx512_input(out, pixels, n);
        return;
    }
    if (isa == QRT_ISA_AVX2) {
        qrt_avx2_input(out, pixels, n);
        return;
    }
#endif
    qrt_input_u8(out, pixels, n);
}

void qrt_lut_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const int8_t table[256], size_t n) {
    isa = qrt_isa_resolve(isa);
#if defined(QRT_SIMD_X86)
    /* The AVX-512 path with VBMI's byte permutes (simd_vbmi.c). AVX2 has no 256-entry
     * byte lookup short of 16 vpshufb per vector, which measured slower than the
     * portable loop: AVX2 keeps the loop (docs/runtime-simd.md). */
    if (isa == QRT_ISA_AVX512VNNI && __builtin_cpu_supports("avx512vbmi")) {
        qrt_vbmi_lut(out, in, table, n);
        return;
    }
#endif
    qrt_lut_s8(out, in, table, n);
}

/* ---- model memory: the packed forms of a graph, from the header alone --------------- */

#if defined(QRT_SIMD_X86)

/* A cursor over the graph's JSON string that yields decoded lines. The header was
 * validated by qrt_st_parse, so escapes are well formed; \uXXXX (only ever in names and
 * s= texts, which this scan does not need) becomes '?'. Lines longer than the buffer are
 * cut: their fields after the cut are missing and the line sizes as nothing. */
typedef struct gline {
    const uint8_t *p, *end;
    char buf[2048];
} gline;

static int hexval(int c) { return c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0'; }

static bool next_line(gline *g) {
    size_t n = 0;
    if (g->p >= g->end || *g->p == '"') return false;
    while (g->p < g->end && *g->p != '"') {
        int c = *g->p++;
        if (c == '\\' && g->p < g->end) {
            c = *g->p++;
            if (c == 'n') c = '\n';
            else if (c == 't') c = '\t';
            else if (c == 'r') c = '\r';
            else if (c == 'b') c = '\b';
            else if (c == 'f') c = '\f';
            else if (c == 'u') {
                for (int i = 0; i < 4 && g->p < g->end; i++) (void)hexval(*g->p++);
                c = '?';
            }
        }
        if (c == '\n') break;
        if (n + 1 < sizeof g->buf) g->buf[n++] = (char)c;
    }
    g->buf[n] = '\0';
    return true;
}

/* The value of field key in a line (NULL if absent): " key=" up to the next space. */
static const char *field(const char *line, const char *key, char *out, size_t cap) {
    const size_t kl = strlen(key);
    for (const char *s = strchr(line, ' '); s; s = strchr(s + 1, ' ')) {
        if (strncmp(s + 1, key, kl) || s[1 + kl] != '=') continue;
        const char *v = s + 2 + kl;
        size_t n = 0;
        while (v[n] && v[n] != ' ' && n + 1 < cap) n++;
        memcpy(out, v, n);
        out[n] = '\0';
        return out;
    }
    return NULL;
}

/* Up to 3 comma-separated non-negative ints of a field; returns how many, 0 if absent or
 * malformed (the loader refuses those files anyway). */
static int ints(const char *line, const char *key, int64_t *v, int max) {
    char buf[64];
    if (!field(line, key, buf, sizeof buf)) return 0;
    int n = 0;
    for (const char *s = buf; n < max;) {
        int64_t x = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 12) x = x * 10 + (*s++ - '0'), digits++;
        if (!digits) return 0;
        v[n++] = x;
        if (*s != ',') return *s ? 0 : n;
        s++;
    }
    return n;
}

#define SCAN_VALUES 2048 /* values remembered; ops reading later ones run portable */

size_t qrt_simd_mem_bound(const uint8_t *graph_json, const uint8_t *header_end) {
    static const int64_t LIM = (int64_t)1 << 24;
    int32_t chans[SCAN_VALUES], numel[SCAN_VALUES];
    gline g;
    size_t total = 0, lines = 0;
    if (!graph_json || *graph_json != '"') return 0;
    g.p = graph_json + 1;
    g.end = header_end;
    for (int i = 0; i < SCAN_VALUES; i++) chans[i] = numel[i] = 0;
    while (next_line(&g)) {
        lines++;
        int64_t out, in, shape[3] = {0, 0, 0}, k, S, P, G;
        const int ns = ints(g.buf, "shape", shape, 3);
        if (ints(g.buf, "out", &out, 1) && out < SCAN_VALUES && ns) {
            int64_t e = 1;
            for (int i = 0; i < ns; i++) e = shape[i] > LIM ? LIM : e * shape[i] > (1 << 28) ? (1 << 28) : e * shape[i];
            chans[out] = (int32_t)(shape[0] > LIM ? LIM : shape[0]);
            numel[out] = (int32_t)e;
        }
        const bool conv = !strncmp(g.buf, "conv2d ", 7), lin = !strncmp(g.buf, "linear ", 7);
        if (!(conv || lin) || !ints(g.buf, "in", &in, 1) || in >= SCAN_VALUES || !ns || !shape[0] ||
            shape[0] > LIM)
            continue;
        size_t need = 0;
        if (lin && numel[in] > 0) {
            const qrt_linear_params lp = {.F_in = numel[in], .F_out = (int)shape[0]};
            need = qrt_linear_pack_size(&lp);
        } else if (conv && ns == 3 && chans[in] > 0 && ints(g.buf, "k", &k, 1) &&
                   ints(g.buf, "stride", &S, 1) && ints(g.buf, "pad", &P, 1) &&
                   ints(g.buf, "groups", &G, 1) && k >= 1 && k <= 1024 && G >= 1 &&
                   G <= chans[in] && chans[in] % G == 0 && shape[0] % G == 0) {
            const qrt_conv_params cp = {.C = chans[in], .OC = (int)shape[0], .k = (int)k, .groups = (int)G};
            need = qrt_conv2d_pack_size(&cp);
        }
        total += qrt_round_up(need, QRT_SIMD_ALIGN);
    }
    /* the per-op table first (an op per line at most), then the packed forms */
    return qrt_round_up(lines * sizeof(void *), QRT_SIMD_ALIGN) + total;
}

#else

size_t qrt_simd_mem_bound(const uint8_t *graph_json, const uint8_t *header_end) {
    (void)graph_json, (void)header_end;
    return 0;
}

#endif
