/* Vector helpers and the 6×16 AVX2 register tile of cpu_block.c (included there, compiled with it). */
#include <immintrin.h>
#include <math.h>

static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* C[MR][8·NV] = A[MR][K] · B[K][8·NV]; rows `lda`, `ldb`, `ldc` floats apart. Named accumulators: gcc
   kept an array of them on the stack. MR, NV and TAIL are constants at every call, so the ifs fold away.
   What the tile stores (TAIL), NV = 2 for the two SwiGLU ones:
     PLAIN     the products;
     SWIGLU    8 gate columns then the 8 up columns of the same units: C ← silu(gate)·up (8 floats a row),
               and where G is not NULL G[0:8] ← gate, G[up:up+8] ← up;
     SWIGLU_BW 16 columns of dh = d(silu(gate)·up) with G = gate_up [·, 2I]: C[0:16] ← d gate and
               C[up:up+16] ← d up. */
enum { PLAIN = 0, SWIGLU = 1, SWIGLU_BW = 2 };

static inline __m256 sigmoid8(__m256 g) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

static inline void swiglu_backward8(__m256 dh, const float *G, long up, float *C) {
    const __m256 g = _mm256_loadu_ps(G), u = _mm256_loadu_ps(G + up), s = sigmoid8(g);
    const __m256 one = _mm256_set1_ps(1.0f);
    /* d gate = dh·u·σ(g)·(1 + g·(1 − σ(g))), d up = dh·g·σ(g) */
    _mm256_storeu_ps(C, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dh, u), s),
                                      _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one)));
    _mm256_storeu_ps(C + up, _mm256_mul_ps(_mm256_mul_ps(dh, g), s));
}

#define ACC_DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
#define ACC_STEP(r) if (MR > r) { __m256 a = _mm256_broadcast_ss(A + r * lda + k); \
        c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0); if (NV == 2) c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1); }
#define ACC_STORE(r) if (MR > r) { \
        if (TAIL == SWIGLU) { \
            if (G) { _mm256_storeu_ps(G + r * ldg, c##r##0); _mm256_storeu_ps(G + r * ldg + up, c##r##1); } \
            _mm256_storeu_ps(C + r * ldc, _mm256_mul_ps(_mm256_mul_ps(c##r##0, sigmoid8(c##r##0)), c##r##1)); \
        } else if (TAIL == SWIGLU_BW) { \
            swiglu_backward8(c##r##0, G + r * ldg, up, C + r * ldc); \
            swiglu_backward8(c##r##1, G + r * ldg + 8, up, C + r * ldc + 8); \
        } else { \
            _mm256_storeu_ps(C + r * ldc, c##r##0); if (NV == 2) _mm256_storeu_ps(C + r * ldc + 8, c##r##1); } }

static inline __attribute__((always_inline)) void tile(const int MR, const int NV, const int TAIL, int K,
                                                       const float *A, long lda, const float *B, long ldb, float *C,
                                                       long ldc, float *G, long ldg, long up) {
    ACC_DECL(0) ACC_DECL(1) ACC_DECL(2) ACC_DECL(3) ACC_DECL(4) ACC_DECL(5)
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(B + k * ldb);
        __m256 b1 = NV == 2 ? _mm256_loadu_ps(B + k * ldb + 8) : b0;
        ACC_STEP(0) ACC_STEP(1) ACC_STEP(2) ACC_STEP(3) ACC_STEP(4) ACC_STEP(5)
    }
    ACC_STORE(0) ACC_STORE(1) ACC_STORE(2) ACC_STORE(3) ACC_STORE(4) ACC_STORE(5)
}

#define TILE_TAILS(MR) do { \
        if (tail == SWIGLU) tile(MR, 2, SWIGLU, K, A, lda, B, ldb, C, ldc, G, ldg, up); \
        else if (tail == SWIGLU_BW) tile(MR, 2, SWIGLU_BW, K, A, lda, B, ldb, C, ldc, G, ldg, up); \
        else if (nv == 2) tile(MR, 2, PLAIN, K, A, lda, B, ldb, C, ldc, 0, 0, 0); \
        else tile(MR, 1, PLAIN, K, A, lda, B, ldb, C, ldc, 0, 0, 0); } while (0)

static void tile_rows(int mr, int nv, int tail, int K, const float *A, long lda, const float *B, long ldb,
                      float *C, long ldc, float *G, long ldg, long up) {
    switch (mr) {
    case 6: TILE_TAILS(6); break;
    case 5: TILE_TAILS(5); break;
    case 4: TILE_TAILS(4); break;
    case 3: TILE_TAILS(3); break;
    case 2: TILE_TAILS(2); break;
    default: TILE_TAILS(1); break;
    }
}

/* C[M][N] = A[M][K] · B[K][N] for N a multiple of 8. */
static void gemm(int M, int N, int K, const float *A, long lda, const float *B, long ldb, float *C, long ldc) {
    for (int n0 = 0; n0 < N; n0 += 16) {
        int nv = N - n0 >= 16 ? 2 : 1;
        for (int i0 = 0; i0 < M; i0 += 6)
            tile_rows(M - i0 < 6 ? M - i0 : 6, nv, 0, K, A + i0 * lda, lda, B + n0, ldb, C + i0 * ldc + n0, ldc,
                      0, 0, 0);
    }
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

static inline float hsum8(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_add_ss(m, _mm_shuffle_ps(m, m, 1)));
}

/* row[0:n] ← softmax(scale·row[0:n]); the row has room for n rounded up to 8 (the tail lanes become 0). */
static void softmax_row(float *row, int n, float scale) {
    const int full = n & ~7, rest = n - full;
    const __m256 tail = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(rest),
                                                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 lowest = _mm256_set1_ps(-3.0e38f);
    __m256 mx = lowest;
    for (int j = 0; j < full; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(row + j));
    if (rest) mx = _mm256_max_ps(mx, _mm256_blendv_ps(lowest, _mm256_loadu_ps(row + full), tail));
    const __m256 m = _mm256_set1_ps(hmax8(mx)), s = _mm256_set1_ps(scale);
    __m256 total = _mm256_setzero_ps();
    for (int j = 0; j < full; j += 8) {
        __m256 e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + j), m), s));
        _mm256_storeu_ps(row + j, e);
        total = _mm256_add_ps(total, e);
    }
    if (rest) {
        __m256 e = _mm256_and_ps(exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + full), m), s)), tail);
        _mm256_storeu_ps(row + full, e);
        total = _mm256_add_ps(total, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum8(total));
    for (int j = 0; j < n; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inv));
}

/* dst[0:dim] ← src rotated (NeoX rotate-half, the sign folded into sin_signed: [−sin, sin] over the two
   halves), or with `inverse` rotated back (the transpose: the gradient of the rotation's input, which
   takes the other half of sin_signed), or copied when cos is NULL; dim a multiple of 16. */
static inline void rotate_row(const float *src, const float *cos, const float *sin_signed, int inverse, int dim,
                              float *dst) {
    const int half = dim / 2;
    const float *sin_lo = 0, *sin_hi = 0;
    if (cos) {
        sin_lo = inverse ? sin_signed + half : sin_signed;
        sin_hi = inverse ? sin_signed : sin_signed + half;
    }
    for (int j = 0; j < half; j += 8) {
        const __m256 x1 = _mm256_loadu_ps(src + j), x2 = _mm256_loadu_ps(src + half + j);
        if (cos) {
            _mm256_storeu_ps(dst + j, _mm256_fmadd_ps(x2, _mm256_loadu_ps(sin_lo + j),
                                                      _mm256_mul_ps(x1, _mm256_loadu_ps(cos + j))));
            _mm256_storeu_ps(dst + half + j, _mm256_fmadd_ps(x1, _mm256_loadu_ps(sin_hi + j),
                                                             _mm256_mul_ps(x2, _mm256_loadu_ps(cos + half + j))));
        } else {
            _mm256_storeu_ps(dst + j, x1);
            _mm256_storeu_ps(dst + half + j, x2);
        }
    }
}

/* out[c][0:8] ← in[0:8][c] for an 8×8 block; rows `ld_in` and `ld_out` floats apart. */
static inline void transpose8(const float *in, long ld_in, float *out, long ld_out) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(in + i * ld_in);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(out + i * ld_out, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(out + (i + 4) * ld_out, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

static long padded(long n, long to) { return (n + to - 1) / to * to; }

/* out[c][r] ← in[r][c] for a rows × cols block (rows `ld_in`, `ld_out` floats apart): 8×8 tiles, the
   edges one by one. */
static void transpose(const float *in, long ld_in, int rows, int cols, float *out, long ld_out) {
    const int r8 = rows & ~7, c8 = cols & ~7;
    for (int r = 0; r < r8; r += 8)
        for (int c = 0; c < c8; c += 8) transpose8(in + r * ld_in + c, ld_in, out + c * ld_out + r, ld_out);
    for (int r = 0; r < rows; r++)
        for (int c = r < r8 ? c8 : 0; c < cols; c++) out[c * ld_out + r] = in[r * ld_in + c];
}

