// CoA's window product on the CPU (paper Eq. 12, A_s W(X) before the inverse sort), fused with
// the gather of each window's keys.
//
//   out[i] = weights[i] @ rows[index[i, 0..3w)]      weights [n, w, 3w], out [n, w, C]
//
// The same product as Gather + MatMul, without materialising the gathered keys (3x the values)
// and with the two memory streams prefetched: the weights (the large operand, read once per
// group) a row block ahead, and the next window's new key rows during the current window's
// first row block. The register tile is R rows x C columns of 16-float vectors; GCC vector
// extensions compile it to AVX-512 where the build machine has it, and to AVX2 pairs otherwise.
// Plain C ABI: no PyTorch or ONNX Runtime headers.
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

typedef float v16 __attribute__((vector_size(64), aligned(4)));

template <int NV, int R>
inline void row_block(const float* a, int k3, const float* const* keys, float* out, int c,
                      const float* const* upcoming, int n_upcoming) {
  v16 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = v16{};
  for (int k = 0; k < k3; ++k) {
    if ((k & 15) == 0)  // the next row block's weights, one cache line per row
      for (int r = 0; r < R; ++r) __builtin_prefetch(a + (R + r) * k3 + k, 0, 0);
    if (k < n_upcoming)
      for (int v = 0; v < NV; ++v) __builtin_prefetch(upcoming[k] + 16 * v, 0, 1);
    const v16* key = reinterpret_cast<const v16*>(keys[k]);
    v16 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = key[v];
    for (int r = 0; r < R; ++r) {
      const float s = a[r * k3 + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += s * b[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    v16* o = reinterpret_cast<v16*>(out + r * c);
    for (int v = 0; v < NV; ++v) o[v] = acc[r][v];
  }
}

template <int NV>
void windows(const float* weights, const float* rows, const int64_t* index, float* out,
             int64_t first, int64_t last, int w) {
  constexpr int R = 24 / NV;  // 24 accumulators of 16 floats, the rest of the 32 registers for keys
  const int c = 16 * NV, k3 = 3 * w;
  std::vector<const float*> keys(k3), upcoming(w);
  for (int64_t i = first; i < last; ++i) {
    const float* a = weights + i * w * k3;
    const int64_t* idx = index + i * k3;
    for (int k = 0; k < k3; ++k) keys[k] = rows + idx[k] * c;
    // Windows usually overlap: the next one's last w keys are the ones most likely not yet in cache.
    const int n_upcoming = i + 1 < last ? w : 0;
    for (int k = 0; k < n_upcoming; ++k) upcoming[k] = rows + index[(i + 1) * k3 + 2 * w + k] * c;
    float* o = out + i * w * c;
    int j = 0;
    for (; j + R <= w; j += R)
      row_block<NV, R>(a + j * k3, k3, keys.data(), o + j * c, c, upcoming.data(), j == 0 ? n_upcoming : 0);
    for (; j < w; ++j) row_block<NV, 1>(a + j * k3, k3, keys.data(), o + j * c, c, upcoming.data(), 0);
  }
}

// Threads come from OpenMP: loaded into a PyTorch process, that is PyTorch's own libgomp and
// thread pool, so the kernels never compete with idle intra-op workers for the cores.
template <int NV>
void run(const float* weights, const float* rows, const int64_t* index, float* out, int64_t n, int w,
         int threads) {
  if (threads <= 1 || n < 2 * threads) {
    windows<NV>(weights, rows, index, out, 0, n, w);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    windows<NV>(weights, rows, index, out, n * t / nt, n * (t + 1) / nt, w);
  }
#else
  windows<NV>(weights, rows, index, out, 0, n, w);
#endif
}

#ifdef __AVX512F__
// v[j][i] <- v[i][j] for a 16 x 16 block of floats.
inline void transpose16(__m512* v) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    v[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    v[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    v[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    v[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    v[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}
#endif

void gather_add_span(const float* x, const float* rows, const int64_t* index, float* out, int64_t length,
                     int64_t first, int64_t last, int c, float alpha, bool nchw) {
  if (!nchw) {  // rows of x and out are contiguous: one vector loop per position
    for (int64_t p = first; p < last; ++p) {
      if (p + 32 < last)  // a few rows ahead: random rows of a large array
        for (int cb = 0; cb < c; cb += 16) __builtin_prefetch(rows + index[p + 32] * c + cb, 0, 0);
      const float* r = rows + index[p] * c;
      const float* xi = x + p * c;
      float* o = out + p * c;
      for (int ch = 0; ch < c; ++ch) o[ch] = xi[ch] + alpha * r[ch];
    }
    return;
  }
  int64_t p0 = first;
#ifdef __AVX512F__
  // NCHW: 64 positions at a time; each 16 x 16 block (16 rows, 16 channels) is transposed in
  // registers, so every channel plane is read and written in runs of 64 floats.
  if (c % 16 == 0) {
    const __m512 a = _mm512_set1_ps(alpha);
    for (; p0 + 64 <= last; p0 += 64) {
      if (p0 + 128 <= last) {  // the next chunk: its random rows, and x in every channel plane
        for (int t = 64; t < 128; ++t)
          for (int cb = 0; cb < c; cb += 16) __builtin_prefetch(rows + index[p0 + t] * c + cb, 0, 0);
        for (int ch = 0; ch < c; ++ch)
          for (int t = 64; t < 128; t += 16) __builtin_prefetch(x + ch * length + p0 + t, 0, 0);
      }
      for (int cb = 0; cb < c; cb += 16)
        for (int sub = 0; sub < 64; sub += 16) {
          __m512 v[16];
          for (int t = 0; t < 16; ++t) v[t] = _mm512_loadu_ps(rows + index[p0 + sub + t] * c + cb);
          transpose16(v);
          for (int j = 0; j < 16; ++j) {
            const int64_t at = (cb + j) * length + p0 + sub;
            _mm512_storeu_ps(out + at, _mm512_fmadd_ps(a, v[j], _mm512_loadu_ps(x + at)));
          }
        }
    }
  }
#endif
  // the rest: one position at a time across the channel planes
  constexpr int TILE = 256;
  const float* r[TILE];
  for (; p0 < last; p0 += TILE) {
    const int n = static_cast<int>(last - p0 < TILE ? last - p0 : TILE);
    for (int t = 0; t < n; ++t) r[t] = rows + index[p0 + t] * c;
    for (int ch = 0; ch < c; ++ch) {
      const float* xi = x + ch * length + p0;
      float* o = out + ch * length + p0;
      for (int t = 0; t < n; ++t) o[t] = xi[t] + alpha * r[t][ch];
    }
  }
}

}  // namespace

extern "C" {

// out = x + alpha * rows[index] laid out as x, for one image: x and out [L, C] (NHWC) or [C, L]
// (NCHW), rows [M, C], index [L] row ids. The inverse sort and the residual add of Eq. 12 in one pass.
void lcoan_gather_add(const float* x, const float* rows, const int64_t* index, float* out, int64_t length,
                      int32_t channels, float alpha, int32_t nchw, int32_t threads) {
  if (threads <= 1 || length < 4096 * threads) {
    gather_add_span(x, rows, index, out, length, 0, length, channels, alpha, nchw != 0);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t first = (length * t / nt) & ~int64_t{63};  // whole 64-position chunks per thread
    const int64_t last = t + 1 == nt ? length : (length * (t + 1) / nt) & ~int64_t{63};
    gather_add_span(x, rows, index, out, length, first, last, channels, alpha, nchw != 0);
  }
#else
  gather_add_span(x, rows, index, out, length, 0, length, channels, alpha, nchw != 0);
#endif
}

// 0 on success, 1 if the channel count has no kernel (callers fall back to Gather + MatMul).
int lcoan_window_apply(const float* weights, const float* rows, const int64_t* index, float* out,
                       int64_t n_windows, int32_t window, int32_t channels, int32_t threads) {
  switch (channels) {
    case 16: run<1>(weights, rows, index, out, n_windows, window, threads); return 0;
    case 32: run<2>(weights, rows, index, out, n_windows, window, threads); return 0;
    case 64: run<4>(weights, rows, index, out, n_windows, window, threads); return 0;
    case 128: run<8>(weights, rows, index, out, n_windows, window, threads); return 0;
    default: return 1;
  }
}

int lcoan_window_apply_channels(int32_t channels) {
  return channels == 16 || channels == 32 || channels == 64 || channels == 128;
}

}  // extern "C"
