/* The post-norm block on CPU float32 past the qkv projection, and most of its backward (built and loaded by
   hrm/model/c_kernels.py; AVX2 + FMA, OpenMP):

   * attention_forward: RoPE on q and k, softmax(scale·q·kᵀ)·v for every (sequence, head) pair, one pair
     at a time per thread so that its q, kᵀ and scores stay in the core's own cache;
   * linear: x·Wᵀ (or x·W in the backward) against weights packed by pack_weight, with the work that
     follows each matmul done while its rows are still in cache: residual add + RMSNorm (o and down
     projections) or silu(gate)·up (gate_up, whose gate and up columns are packed side by side); in the
     backward the SwiGLU and RMSNorm gradients, and the residual add;
   * rms_norm_backward: the gradient through the block's last RMSNorm (the first step of the backward).

   Every matmul is a broadcast-FMA register tile of 6 rows × 16 columns (12 accumulators), the BLIS shape
   for AVX2; the exponential is the Cephes-style polynomial of cpu_tile.h (exp8, ≤ 2 ulp against float64,
   tests/test_c_kernels.py). Each output row is computed by one thread in a fixed order: results do not
   depend on the thread count. */
#include <omp.h>

#include "cpu_tile.h"

/* Floats of per-thread scratch: q [S][D], v [S][D], 8 rotated k rows [8][D], kᵀ [D][S↑16], scores
   [S][S↑16] (rows 64-byte aligned). */
long attention_scratch_floats(int seq, int dim) {
    const long sp = padded(seq, 16);
    return 2 * padded((long)seq * dim, 16) + 8L * dim + (long)dim * sp + (long)seq * sp;
}

/* qkv [B, S, 3H, D] → att [B, S, H, D]. Where q_out, k_out, v_out [B, H, S, D] and probs_out [B·H, S, S]
   are not NULL (a block that will be differentiated) the rotated q and k, v and the probabilities are
   also written there. `scratch`: `threads` × attention_scratch_floats(S, D) floats. D is a multiple of 16. */
void attention_forward(const float *qkv, const float *cos, const float *sin_signed, int rotate, int batch,
                       int seq, int heads, int dim, float scale, float *att, float *q_out, float *k_out,
                       float *v_out, float *probs_out, float *scratch, int threads) {
    const long sp = padded(seq, 16), n_cols = padded(seq, 8), ld_qkv = 3L * heads * dim, ld_att = (long)heads * dim;
    const long per_thread = attention_scratch_floats(seq, dim), per_pair = (long)seq * dim;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int pair = 0; pair < batch * heads; pair++) {
        const int b = pair / heads, h = pair % heads;
        float *own = scratch + omp_get_thread_num() * per_thread;
        float *Q = q_out ? q_out + pair * per_pair : own;
        float *V = v_out ? v_out + pair * per_pair : own + padded(per_pair, 16);
        float *Krows = own + 2 * padded(per_pair, 16), *KT = Krows + 8L * dim, *P = KT + dim * sp;
        const float *rows = qkv + (long)b * seq * ld_qkv;
        /* the next pair's q, k, v rows are fetched into L2 while this one runs (strided rows: the hardware
           prefetcher alone left the RoPE pass waiting on memory) */
        const int next = pair + 1 < batch * heads ? pair + 1 : pair;
        const float *next_rows = qkv + (long)(next / heads) * seq * ld_qkv + (next % heads) * dim;
        /* q and v rows into their own arrays; k by blocks of 8 rows, each rotated, then transposed into
           kᵀ (rows past the sequence are zero: they become kᵀ's padding columns) */
        for (int s0 = 0; s0 < n_cols; s0 += 8) {
            for (int r = 0; r < 8; r++) {
                const int s = s0 + r;
                if (s >= seq) {
                    for (int j = 0; j < dim; j++) Krows[r * dim + j] = 0.0f;
                    continue;
                }
                const float *q = rows + s * ld_qkv + h * dim, *k = q + (long)heads * dim, *v = k + (long)heads * dim;
                for (int part = 0; part < 3; part++)
                    for (int j = 0; j < dim; j += 16)
                        _mm_prefetch((const char *)(next_rows + s * ld_qkv + (long)part * heads * dim + j),
                                     _MM_HINT_T1);
                const float *c = rotate ? cos + s * dim : 0, *sn = rotate ? sin_signed + s * dim : 0;
                rotate_row(q, c, sn, 0, dim, Q + s * dim);
                rotate_row(k, c, sn, 0, dim, Krows + r * dim);
                if (k_out) rotate_row(Krows + r * dim, 0, 0, 0, dim, k_out + pair * per_pair + s * dim);
                rotate_row(v, 0, 0, 0, dim, V + s * dim);
            }
            for (int j0 = 0; j0 < dim; j0 += 8) transpose8(Krows + j0, dim, KT + j0 * sp + s0, sp);
        }
        gemm(seq, (int)n_cols, dim, Q, dim, KT, sp, P, sp);
        for (int i = 0; i < seq; i++) {
            softmax_row(P + i * sp, seq, scale);
            if (probs_out)
                for (int j = 0; j < seq; j++) probs_out[((long)pair * seq + i) * seq + j] = P[i * sp + j];
        }
        gemm(seq, dim, seq, P, sp, V, dim, att + (long)b * seq * ld_att + h * dim, ld_att);
    }
}

/* Floats of per-thread scratch for attention_backward: probsᵀ, dscores, dscoresᵀ [S][S↑16], vᵀ
   [D][S↑16], dq, dk [S][D]. */
long attention_backward_scratch_floats(int seq, int dim) {
    const long sp = padded(seq, 16);
    return 3L * seq * sp + (long)dim * sp + 2 * padded((long)seq * dim, 16);
}

/* The gradient of attention_forward: from d att [B, S, H, D] and what the forward kept (rotated q, k and v
   [B, H, S, D], probs [B·H, S, S]) to dqkv [B, S, 3H, D], one (sequence, head) pair per thread:
   dv = pᵀ·datt, dp = datt·vᵀ, ds = scale·p⊙(dp − Σ p⊙dp), dq = ds·k, dk = dsᵀ·q, then RoPE undone. */
void attention_backward(const float *datt, const float *q, const float *k, const float *v, const float *probs,
                        const float *cos, const float *sin_signed, int rotate, int batch, int seq, int heads,
                        int dim, float scale, float *dqkv, float *scratch, int threads) {
    const long sp = padded(seq, 16), n_cols = padded(seq, 8), ld_qkv = 3L * heads * dim, ld_att = (long)heads * dim;
    const long per_thread = attention_backward_scratch_floats(seq, dim), per_pair = (long)seq * dim;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int pair = 0; pair < batch * heads; pair++) {
        const int b = pair / heads, h = pair % heads;
        float *PT = scratch + omp_get_thread_num() * per_thread, *dS = PT + seq * sp, *dST = dS + seq * sp;
        float *VT = dST + seq * sp, *dQ = VT + dim * sp, *dK = dQ + padded(per_pair, 16);
        const float *P = probs + (long)pair * seq * seq, *dO = datt + (long)b * seq * ld_att + h * dim;
        const float *Q = q + pair * per_pair, *Kr = k + pair * per_pair, *V = v + pair * per_pair;
        float *rows = dqkv + (long)b * seq * ld_qkv;
        transpose(P, seq, seq, seq, PT, sp);
        transpose(V, dim, seq, dim, VT, sp);
        for (int j = 0; j < dim; j++)
            for (long c = seq; c < n_cols; c++) VT[j * sp + c] = 0.0f;
        /* dv straight into dqkv's v rows */
        gemm(seq, dim, seq, PT, sp, dO, ld_att, rows + 2L * heads * dim + h * dim, ld_qkv);
        gemm(seq, (int)n_cols, dim, dO, ld_att, VT, sp, dS, sp);
        for (int i = 0; i < seq; i++) {
            const float *p = P + (long)i * seq;
            float *ds = dS + i * sp, t = 0.0f;
            for (int j = 0; j < seq; j++) t += p[j] * ds[j];
            for (int j = 0; j < seq; j++) ds[j] = scale * p[j] * (ds[j] - t);
        }
        transpose(dS, sp, seq, seq, dST, sp);
        gemm(seq, dim, seq, dS, sp, Kr, dim, dQ, dim);
        gemm(seq, dim, seq, dST, sp, Q, dim, dK, dim);
        for (int s = 0; s < seq; s++) {
            const float *c = rotate ? cos + s * dim : 0, *sn = rotate ? sin_signed + s * dim : 0;
            rotate_row(dQ + s * dim, c, sn, 1, dim, rows + s * ld_qkv + h * dim);
            rotate_row(dK + s * dim, c, sn, 1, dim, rows + s * ld_qkv + (long)(heads + h) * dim);
        }
    }
}

/* Bp ← the weight as N/16 panels of [K][16] (16 output columns at a time), for x·Wᵀ or x·W:
     layout 0: W [N, K] (x·Wᵀ);
     layout 1: W [N, K] with N = 2·I, gate rows then up rows (x·Wᵀ): panel p holds gate units 8p..8p+7,
               then up units 8p..8p+7, for the SWIGLU tile;
     layout 2: W [K, N] (x·W, the backward's input gradients). */
void pack_weight(const float *W, int N, int K, int layout, float *Bp, int threads) {
    const int half = N / 2;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int p = 0; p < N / 16; p++) {
        if (layout == 2) {
            for (int k = 0; k < K; k++)
                for (int c = 0; c < 16; c++) Bp[((long)p * K + k) * 16 + c] = W[(long)k * N + 16 * p + c];
            continue;
        }
        for (int c = 0; c < 16; c++) {
            const int row = layout == 1 ? (c < 8 ? 8 * p + c : half + 8 * p + c - 8) : 16 * p + c;
            for (int k = 0; k < K; k++) Bp[((long)p * K + k) * 16 + c] = W[(long)row * K + k];
        }
    }
}

/* What linear() does with a block of complete rows `out` [rows, d] (`residual`, `normed` the same rows):
     ADD_NORM     out ← (residual + out)·rstd, rstd = (mean((residual + out)²) + eps)^(-1/2) (stored);
     ADD          out ← out + residual;
     ADD_NORM_BW  g = out + residual is the gradient at the output y = normed of an RMSNorm:
                  out ← rstd·(g − y·mean(g·y)). */
enum { ROWS_AS_IS = 0, ADD_NORM = 1, ADD = 2, ADD_NORM_BW = 3 };

static void finish_rows(int ending, const float *residual, const float *normed, float *out, float *rstd, int rows,
                        int d, float eps) {
    for (int r = 0; r < rows; r++) {
        const float *h = residual + (long)r * d, *y = normed ? normed + (long)r * d : 0;
        float *o = out + (long)r * d;
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < d; j += 8) {
            const __m256 v = _mm256_add_ps(_mm256_loadu_ps(h + j), _mm256_loadu_ps(o + j));
            _mm256_storeu_ps(o + j, v);
            if (ending == ADD_NORM) acc = _mm256_fmadd_ps(v, v, acc);
            else if (ending == ADD_NORM_BW) acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(y + j), acc);
        }
        if (ending == ADD_NORM) {
            const float inv = 1.0f / sqrtf(hsum8(acc) / d + eps);
            rstd[r] = inv;
            const __m256 iv = _mm256_set1_ps(inv);
            for (int j = 0; j < d; j += 8) _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_loadu_ps(o + j), iv));
        } else if (ending == ADD_NORM_BW) {
            const __m256 t = _mm256_set1_ps(hsum8(acc) / d), rs = _mm256_set1_ps(rstd[r]);
            for (int j = 0; j < d; j += 8)
                _mm256_storeu_ps(o + j, _mm256_mul_ps(rs, _mm256_fnmadd_ps(_mm256_loadu_ps(y + j), t,
                                                                          _mm256_loadu_ps(o + j))));
        }
    }
}

/* x [M, K] times the packed weight (N output columns; N a multiple of 16, K any), then:
     tail PLAIN      out [M, N], then `ending` on each block of complete rows (residual, normed, rstd [M]);
     tail SWIGLU     out [M, N/2] = silu(gate)·up; gu [M, N] ← gate | up where gu is not NULL;
     tail SWIGLU_BW  the products are dh [M, N]; with gu [M, 2N] (gate | up) out [M, 2N] ← d gate | d up.
   Rows go in blocks (up to 96) to threads; a block's ending runs as soon as its rows are complete. */
void linear(const float *x, int M, int K, const float *Bp, int N, int tail, int ending, float *out, float *gu,
            const float *residual, const float *normed, float *rstd, float eps, int threads) {
    int block = (M + threads - 1) / threads;
    block = block > 96 ? 96 : (block + 5) / 6 * 6;
    const int blocks = (M + block - 1) / block;
    const long ld_out = tail == SWIGLU ? N / 2 : tail == SWIGLU_BW ? 2L * N : N;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        const int lo = blk * block, hi = lo + block < M ? lo + block : M;
        for (int p = 0; p < N / 16; p++) {
            const float *B = Bp + (long)p * K * 16;
            for (int i0 = lo; i0 < hi; i0 += 6) {
                const int mr = hi - i0 < 6 ? hi - i0 : 6;
                const float *A = x + (long)i0 * K;
                if (tail == SWIGLU)
                    tile_rows(mr, 2, SWIGLU, K, A, K, B, 16, out + i0 * ld_out + 8 * p, ld_out,
                              gu ? gu + (long)i0 * N + 8 * p : 0, N, N / 2);
                else if (tail == SWIGLU_BW)
                    tile_rows(mr, 2, SWIGLU_BW, K, A, K, B, 16, out + i0 * ld_out + 16 * p, ld_out,
                              gu + i0 * ld_out + 16 * p, ld_out, N);
                else
                    tile_rows(mr, 2, PLAIN, K, A, K, B, 16, out + i0 * ld_out + 16 * p, ld_out, 0, 0, 0);
            }
        }
        if (tail == PLAIN && ending != ROWS_AS_IS)
            finish_rows(ending, residual + (long)lo * N, normed ? normed + (long)lo * N : 0, out + (long)lo * N,
                        rstd ? rstd + lo : 0, hi - lo, N, eps);
    }
}

/* g ← rstd·(g − y·mean(g·y)) per row: the gradient through an RMSNorm whose output was y [M, d] (rstd [M]
   its inverse root mean squares), in place on the incoming gradient g [M, d]; d a multiple of 8. */
void rms_norm_backward(const float *y, const float *rstd, float *g, int M, int d, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int r = 0; r < M; r++) {
        const float *yr = y + (long)r * d;
        float *gr = g + (long)r * d;
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < d; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(gr + j), _mm256_loadu_ps(yr + j), acc);
        const __m256 t = _mm256_set1_ps(hsum8(acc) / d), rs = _mm256_set1_ps(rstd[r]);
        for (int j = 0; j < d; j += 8)
            _mm256_storeu_ps(gr + j, _mm256_mul_ps(rs, _mm256_fnmadd_ps(_mm256_loadu_ps(yr + j), t,
                                                                       _mm256_loadu_ps(gr + j))));
    }
}

/* out ← e^x over n floats (n a multiple of 8): the kernels' exponential, exposed for its accuracy test. */
void exp_floats(const float *x, float *out, long n) {
    for (long i = 0; i < n; i += 8) _mm256_storeu_ps(out + i, exp8(_mm256_loadu_ps(x + i)));
}
