// Bitwise convolution kernels for the abc-lab inference engine.
//
// Layout: activations are packed NHWC with bits along C_in, one bit plane per activation
// base n: in[n][b][y + pad][x + pad][cw] (uint64 words, Cw = ceil(C_in / 64), spatial
// border and unused channel bits are 0). Weights are packed per weight base m in groups of
// 8 output channels: w[m][g][(ky * KW + kx) * Cw + cw][8]. Bit 1 stands for -1, bit 0 for
// +1, so a·b summed over K bits is K - 2·popcount(a XOR b).
//
// Zero padding is exact: the border words are 0 (+1), so a tap outside the image adds
// popcount(w) for that tap; the epilogue subtracts it (per-tap weight popcounts, wpc) and
// counts only valid taps in K. Unused channel bits are 0 on both sides and add nothing.
//
// One translation unit, three instruction sets chosen at run time: AVX-512 VPOPCNTDQ,
// AVX2 (nibble-table popcount) and portable C++. The vector sections are compiled with
// GCC/Clang target pragmas, so the build itself needs no -march flag.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#define ABC_X86 1
#include <immintrin.h>
#else
#define ABC_X86 0
#endif

namespace {

constexpr int LANES = 8;  // output channels per weight group
constexpr int P = 4;      // output pixels per register tile

enum Isa : int { PORTABLE = 0, AVX2 = 1, AVX512 = 2 };

struct ConvArgs {
  const uint64_t* in;    // [N][B][Hp][Wp][Cw]
  const uint64_t* w;     // [M][G][T*Cw][8]
  const int32_t* wpc;    // [M][T][G*8]
  const float* alpha;    // [M][G*8] (0 for padding channels)
  const float* beta;     // [N]
  const float* bias;     // [C_out] or nullptr
  float* out;            // [B][OH][OW][C_out]
  int64_t B, H, W, Cin, Cout, G, Cw, KH, KW, stride, pad, OH, OW, Hp, Wp, M, N;
};

// --------------------------------------------------------------- popcount tiles (P x 8)

// Portable: counts[p][j] = Σ_k popcount(in_p[k] ^ w[k][j]) for the tile's first NP pixels
// (a row's last tile holds fewer than P when P does not divide its width).
template <int NP>
void tile_portable(const ConvArgs& a, const uint64_t* const* rows, const int64_t* xoff,
                   const uint64_t* wg, int64_t cnt[P][LANES]) {
  for (int p = 0; p < NP; ++p)
    for (int j = 0; j < LANES; ++j) cnt[p][j] = 0;
  const int64_t Cw = a.Cw;
  for (int64_t ky = 0; ky < a.KH; ++ky) {
    for (int64_t kx = 0; kx < a.KW; ++kx) {
      const uint64_t* wk = wg + (ky * a.KW + kx) * Cw * LANES;
      for (int p = 0; p < NP; ++p) {
        const uint64_t* ip = rows[ky] + (xoff[p] + kx) * Cw;
        for (int64_t c = 0; c < Cw; ++c) {
          const uint64_t v = ip[c];
          const uint64_t* wc = wk + c * LANES;
          for (int j = 0; j < LANES; ++j) cnt[p][j] += __builtin_popcountll(v ^ wc[j]);
        }
      }
    }
  }
}

#if ABC_X86
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")

__attribute__((target("avx2,popcnt"))) inline __m256i popcnt_epi64_avx2(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                       2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_sad_epu8(_mm256_add_epi8(lo, hi), _mm256_setzero_si256());
}

template <int NP>
__attribute__((target("avx2,popcnt"))) void tile_avx2(const ConvArgs& a,
                                                       const uint64_t* const* rows,
                                                       const int64_t* xoff, const uint64_t* wg,
                                                       int64_t cnt[P][LANES]) {
  __m256i acc[NP][2];
  for (int p = 0; p < NP; ++p) acc[p][0] = acc[p][1] = _mm256_setzero_si256();
  const int64_t Cw = a.Cw;
  for (int64_t ky = 0; ky < a.KH; ++ky) {
    for (int64_t kx = 0; kx < a.KW; ++kx) {
      const uint64_t* wk = wg + (ky * a.KW + kx) * Cw * LANES;
      const uint64_t* ip[NP];
      for (int p = 0; p < NP; ++p) ip[p] = rows[ky] + (xoff[p] + kx) * Cw;
      for (int64_t c = 0; c < Cw; ++c) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + c * LANES));
        const __m256i w1 =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + c * LANES + 4));
        for (int p = 0; p < NP; ++p) {
          const __m256i v = _mm256_set1_epi64x(static_cast<long long>(ip[p][c]));
          acc[p][0] = _mm256_add_epi64(acc[p][0], popcnt_epi64_avx2(_mm256_xor_si256(v, w0)));
          acc[p][1] = _mm256_add_epi64(acc[p][1], popcnt_epi64_avx2(_mm256_xor_si256(v, w1)));
        }
      }
    }
  }
  for (int p = 0; p < NP; ++p) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cnt[p]), acc[p][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cnt[p] + 4), acc[p][1]);
  }
}

// Packs one pixel's C channels for threshold t: bit = !(x >= t) (NaN counts as -1).
__attribute__((target("avx2,popcnt"))) void pack_pixel_avx2(const float* x, int64_t C,
                                                             float t, uint64_t* out,
                                                             int64_t Cw) {
  const __m256 tv = _mm256_set1_ps(t);
  for (int64_t cw = 0; cw < Cw; ++cw) {
    uint64_t word = 0;
    const int64_t c0 = cw * 64;
    const int64_t full = std::min<int64_t>(64, C - c0) / 8 * 8;
    int64_t c = 0;
    for (; c < full; c += 8) {
      const __m256 v = _mm256_loadu_ps(x + c0 + c);
      const uint64_t m = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, tv, _CMP_NGE_UQ)));
      word |= m << c;
    }
    for (; c0 + c < C && c < 64; ++c)
      if (!(x[c0 + c] >= t)) word |= uint64_t{1} << c;
    out[cw] = word;
  }
}

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vpopcntdq,avx2,popcnt")

template <int NP>
__attribute__((target("avx512f,avx512vpopcntdq,avx2,popcnt"))) void tile_avx512(
    const ConvArgs& a, const uint64_t* const* rows, const int64_t* xoff, const uint64_t* wg,
    int64_t cnt[P][LANES]) {
  __m512i acc[NP];
  for (int p = 0; p < NP; ++p) acc[p] = _mm512_setzero_si512();
  const int64_t Cw = a.Cw;
  for (int64_t ky = 0; ky < a.KH; ++ky) {
    for (int64_t kx = 0; kx < a.KW; ++kx) {
      const uint64_t* wk = wg + (ky * a.KW + kx) * Cw * LANES;
      const uint64_t* ip[NP];
      for (int p = 0; p < NP; ++p) ip[p] = rows[ky] + (xoff[p] + kx) * Cw;
      for (int64_t c = 0; c < Cw; ++c) {
        const __m512i wv = _mm512_loadu_si512(wk + c * LANES);
        for (int p = 0; p < NP; ++p) {
          const __m512i v = _mm512_set1_epi64(static_cast<long long>(ip[p][c]));
          acc[p] = _mm512_add_epi64(acc[p], _mm512_popcnt_epi64(_mm512_xor_si512(v, wv)));
        }
      }
    }
  }
  for (int p = 0; p < NP; ++p) _mm512_storeu_si512(cnt[p], acc[p]);
}

__attribute__((target("avx512f,avx512vpopcntdq,avx2,popcnt"))) void pack_pixel_avx512(
    const float* x, int64_t C, float t, uint64_t* out, int64_t Cw) {
  const __m512 tv = _mm512_set1_ps(t);
  for (int64_t cw = 0; cw < Cw; ++cw) {
    uint64_t word = 0;
    const int64_t c0 = cw * 64;
    const int64_t n = std::min<int64_t>(64, C - c0);
    for (int64_t c = 0; c < n; c += 16) {
      const int64_t k = std::min<int64_t>(16, n - c);
      const __mmask16 lm = static_cast<__mmask16>((k == 16) ? 0xffff : ((1u << k) - 1));
      const __m512 v = _mm512_maskz_loadu_ps(lm, x + c0 + c);
      const __mmask16 m = _mm512_mask_cmp_ps_mask(lm, v, tv, _CMP_NGE_UQ);
      word |= static_cast<uint64_t>(m) << c;
    }
    out[cw] = word;
  }
}

#pragma GCC pop_options
#endif  // ABC_X86

void pack_pixel_portable(const float* x, int64_t C, float t, uint64_t* out, int64_t Cw) {
  for (int64_t cw = 0; cw < Cw; ++cw) {
    uint64_t word = 0;
    const int64_t c0 = cw * 64;
    const int64_t n = std::min<int64_t>(64, C - c0);
    for (int64_t c = 0; c < n; ++c)
      if (!(x[c0 + c] >= t)) word |= uint64_t{1} << c;
    out[cw] = word;
  }
}

int best_isa() {
#if ABC_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"))
    return AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) return AVX2;
#endif
  return PORTABLE;
}

int checked_isa(int64_t isa) {
  const int best = best_isa();
  if (isa < 0) return best;
  TORCH_CHECK(isa <= best, "instruction set ", isa, " is not available on this CPU (best ",
              best, ")");
  return static_cast<int>(isa);
}

using TileFn = void (*)(const ConvArgs&, const uint64_t* const*, const int64_t*,
                        const uint64_t*, int64_t[P][LANES]);
using PackFn = void (*)(const float*, int64_t, float, uint64_t*, int64_t);

// The tile function for `np` (1..P) pixels: no popcounts for pixels past a row's end.
TileFn tile_fn(int isa, int np) {
  static_assert(P == 4, "one entry per tile width below");
#if ABC_X86
  static const TileFn avx512[P] = {tile_avx512<1>, tile_avx512<2>, tile_avx512<3>,
                                   tile_avx512<4>};
  static const TileFn avx2[P] = {tile_avx2<1>, tile_avx2<2>, tile_avx2<3>, tile_avx2<4>};
  if (isa == AVX512) return avx512[np - 1];
  if (isa == AVX2) return avx2[np - 1];
#endif
  static const TileFn portable[P] = {tile_portable<1>, tile_portable<2>, tile_portable<3>,
                                     tile_portable<4>};
  return portable[np - 1];
}

PackFn pack_fn(int isa) {
#if ABC_X86
  if (isa == AVX512) return pack_pixel_avx512;
  if (isa == AVX2) return pack_pixel_avx2;
#endif
  return pack_pixel_portable;
}

// ------------------------------------------------------------------------------ packing

// x: float [B][H][W][C] (channels-last data), thresholds [N] -> bits [N][B][H+2p][W+2p][Cw].
torch::Tensor pack_activations_impl(const torch::Tensor& x_nhwc, const torch::Tensor& thr,
                                    int64_t pad, int isa) {
  const int64_t B = x_nhwc.size(0), H = x_nhwc.size(1), W = x_nhwc.size(2),
                C = x_nhwc.size(3);
  const int64_t N = thr.size(0), Cw = (C + 63) / 64, Hp = H + 2 * pad, Wp = W + 2 * pad;
  auto bits = torch::zeros({N, B, Hp, Wp, Cw}, torch::kInt64);
  const float* xp = x_nhwc.data_ptr<float>();
  const float* tp = thr.data_ptr<float>();
  uint64_t* bp = reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>());
  const PackFn pack = pack_fn(isa);
  at::parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t b = r / H, y = r % H;
      for (int64_t n = 0; n < N; ++n) {
        uint64_t* row = bp + (((n * B + b) * Hp + y + pad) * Wp + pad) * Cw;
        const float* xr = xp + (b * H + y) * W * C;
        for (int64_t x = 0; x < W; ++x) pack(xr + x * C, C, tp[n], row + x * Cw, Cw);
      }
    }
  });
  return bits;
}

// --------------------------------------------------------------------------- conv core

// Runs `body(b, oy, g, ox0, counts, m, n, kvalid, corr)` style work: popcount tiles for
// every (m, n) and the float epilogue, written straight into `out`.
void conv_impl(const ConvArgs& a, int isa, int64_t* counts_out) {
  const int64_t T = a.KH * a.KW, C8 = a.G * LANES;
  const int64_t tasks = a.B * a.OH * a.G;
  at::parallel_for(0, tasks, 1, [&](int64_t lo, int64_t hi) {
    int64_t cnt[P][LANES];
    float acc[P][LANES];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t g = task % a.G;
      const int64_t oy = (task / a.G) % a.OH;
      const int64_t b = task / (a.G * a.OH);
      const int64_t iy0 = oy * a.stride - a.pad;  // top input row (unpadded coordinates)
      int64_t ky_lo = std::max<int64_t>(0, -iy0), ky_hi = std::min<int64_t>(a.KH, a.H - iy0);
      for (int64_t ox0 = 0; ox0 < a.OW; ox0 += P) {
        const int np = static_cast<int>(std::min<int64_t>(P, a.OW - ox0));
        const TileFn tile = tile_fn(isa, np);
        int64_t xoff[P], kvalid[P], kx_lo[P], kx_hi[P];
        bool border[P];
        for (int p = 0; p < P; ++p) {
          const int64_t ox = std::min<int64_t>(ox0 + p, a.OW - 1);
          xoff[p] = ox * a.stride;  // padded coordinates of the left tap
          const int64_t ix0 = ox * a.stride - a.pad;
          kx_lo[p] = std::max<int64_t>(0, -ix0);
          kx_hi[p] = std::min<int64_t>(a.KW, a.W - ix0);
          kvalid[p] = a.Cin * (ky_hi - ky_lo) * (kx_hi[p] - kx_lo[p]);
          border[p] = ky_lo > 0 || ky_hi < a.KH || kx_lo[p] > 0 || kx_hi[p] < a.KW;
        }
        for (int p = 0; p < P; ++p)
          for (int j = 0; j < LANES; ++j) acc[p][j] = 0.f;
        for (int64_t m = 0; m < a.M; ++m) {
          const uint64_t* wg = a.w + (m * a.G + g) * T * a.Cw * LANES;
          for (int64_t n = 0; n < a.N; ++n) {
            const uint64_t* rows[64];
            const uint64_t* plane = a.in + (n * a.B + b) * a.Hp * a.Wp * a.Cw;
            for (int64_t ky = 0; ky < a.KH; ++ky)
              rows[ky] = plane + (oy * a.stride + ky) * a.Wp * a.Cw;
            tile(a, rows, xoff, wg, cnt);
            for (int p = 0; p < np; ++p) {
              if (!border[p]) continue;
              for (int64_t ky = 0; ky < a.KH; ++ky)
                for (int64_t kx = 0; kx < a.KW; ++kx) {
                  if (ky >= ky_lo && ky < ky_hi && kx >= kx_lo[p] && kx < kx_hi[p]) continue;
                  const int32_t* wp = a.wpc + (m * T + ky * a.KW + kx) * C8 + g * LANES;
                  for (int j = 0; j < LANES; ++j) cnt[p][j] -= wp[j];
                }
            }
            // α_m(o) · (β_n · dot), summed over m then n: the float operations of the
            // reference Σ_m Σ_n α_m β_n conv(A_n, B_m) in their order, so the result is the
            // same float32 value to the last bit (acc starts at 0, and 0 + t = t)
            const float* al = a.alpha + m * C8 + g * LANES;
            const float bn = a.beta[n];
            for (int p = 0; p < np; ++p)
              for (int j = 0; j < LANES; ++j)
                acc[p][j] += al[j] * (bn * static_cast<float>(kvalid[p] - 2 * cnt[p][j]));
            if (counts_out != nullptr) {
              // [M][N][B][OH][OW][C_out]: the exact integer dot products
              for (int p = 0; p < np; ++p)
                for (int j = 0; j < LANES && g * LANES + j < a.Cout; ++j)
                  counts_out[((((m * a.N + n) * a.B + b) * a.OH + oy) * a.OW + ox0 + p) *
                                 a.Cout + g * LANES + j] = kvalid[p] - 2 * cnt[p][j];
            }
          }
        }
        for (int p = 0; p < np; ++p) {
          float* o = a.out + ((b * a.OH + oy) * a.OW + ox0 + p) * a.Cout + g * LANES;
          for (int j = 0; j < LANES && g * LANES + j < a.Cout; ++j)
            o[j] = acc[p][j] + (a.bias ? a.bias[g * LANES + j] : 0.f);
        }
      }
    }
  });
}

ConvArgs make_args(const torch::Tensor& bits, const torch::Tensor& w, const torch::Tensor& wpc,
                   const torch::Tensor& alpha, const torch::Tensor& beta, int64_t Cin, int64_t Cout, int64_t KH,
                   int64_t KW, int64_t stride, int64_t pad) {
  TORCH_CHECK(bits.dim() == 5 && bits.scalar_type() == torch::kInt64, "bits: int64 [N,B,Hp,Wp,Cw]");
  TORCH_CHECK(w.dim() == 4 && w.scalar_type() == torch::kInt64 && w.is_contiguous(),
              "weights: int64 [M,G,T*Cw,8]");
  TORCH_CHECK(KH * KW <= 64 && KH <= 64, "kernel too large");
  ConvArgs a{};
  a.N = bits.size(0);
  a.B = bits.size(1);
  a.Hp = bits.size(2);
  a.Wp = bits.size(3);
  a.Cw = bits.size(4);
  a.H = a.Hp - 2 * pad;
  a.W = a.Wp - 2 * pad;
  a.M = w.size(0);
  a.G = w.size(1);
  a.Cin = Cin;
  a.Cout = Cout;
  a.KH = KH;
  a.KW = KW;
  a.stride = stride;
  a.pad = pad;
  TORCH_CHECK(w.size(2) == KH * KW * a.Cw && w.size(3) == LANES, "weight layout mismatch");
  TORCH_CHECK(a.G * LANES >= Cout && (a.Cw - 1) * 64 < Cin && a.Cw * 64 >= Cin,
              "channel counts do not match the packed tensors");
  TORCH_CHECK(wpc.numel() == a.M * KH * KW * a.G * LANES && wpc.scalar_type() == torch::kInt32,
              "wpc: int32 [M,T,G*8]");
  TORCH_CHECK(alpha.numel() == a.M * a.G * LANES && alpha.scalar_type() == torch::kFloat &&
                  alpha.is_contiguous(),
              "alpha: float [M,G*8]");
  TORCH_CHECK(beta.numel() == a.N && beta.scalar_type() == torch::kFloat && beta.is_contiguous(),
              "beta: float [N]");
  a.OH = (a.H + 2 * pad - KH) / stride + 1;
  a.OW = (a.W + 2 * pad - KW) / stride + 1;
  TORCH_CHECK(a.OH > 0 && a.OW > 0, "input smaller than the kernel");
  a.in = reinterpret_cast<const uint64_t*>(bits.data_ptr<int64_t>());
  a.w = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  a.wpc = wpc.data_ptr<int32_t>();
  a.alpha = alpha.data_ptr<float>();
  a.beta = beta.data_ptr<float>();
  return a;
}

}  // namespace

// ------------------------------------------------------------------------------ bindings

int64_t cpu_isa() { return best_isa(); }

torch::Tensor pack_activations(torch::Tensor x, torch::Tensor thresholds, int64_t pad,
                               int64_t isa) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat, "x: float [B,C,H,W]");
  auto nhwc = x.permute({0, 2, 3, 1}).contiguous();
  auto thr = thresholds.to(torch::kFloat).contiguous();
  return pack_activations_impl(nhwc, thr, pad, checked_isa(isa));
}

// Binary convolution of float input x (NCHW, any memory format): binarise against the N
// thresholds, run the M·N bitwise convolutions, combine as Σ_m Σ_n α_m(o) (β_n dot_mn).
// Returns the float output (channels-last) and, when want_counts, the integer dot products
// [M][N][B][OH][OW][C_out].
std::vector<torch::Tensor> binary_conv2d(torch::Tensor x, torch::Tensor thresholds,
                                         torch::Tensor w, torch::Tensor wpc,
                                         torch::Tensor alpha, torch::Tensor beta,
                                         c10::optional<torch::Tensor> bias,
                                         int64_t Cin, int64_t Cout, int64_t KH, int64_t KW,
                                         int64_t stride, int64_t pad, int64_t isa,
                                         bool want_counts) {
  const int use = checked_isa(isa);
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.size(1) == Cin,
              "x: float [B,C_in,H,W]");
  auto nhwc = x.permute({0, 2, 3, 1}).contiguous();
  auto thr = thresholds.to(torch::kFloat).contiguous();
  auto bits = pack_activations_impl(nhwc, thr, pad, use);
  ConvArgs a = make_args(bits, w, wpc, alpha, beta, Cin, Cout, KH, KW, stride, pad);
  torch::Tensor bias_c;
  if (bias.has_value() && bias->defined()) {
    bias_c = bias->to(torch::kFloat).contiguous();
    TORCH_CHECK(bias_c.numel() == Cout, "bias size");
    a.bias = bias_c.data_ptr<float>();
  }
  auto out = torch::empty({a.B, a.OH, a.OW, Cout}, torch::kFloat);
  a.out = out.data_ptr<float>();
  torch::Tensor counts;
  int64_t* cp = nullptr;
  if (want_counts) {
    counts = torch::empty({a.M, a.N, a.B, a.OH, a.OW, Cout}, torch::kInt64);
    cp = counts.data_ptr<int64_t>();
  }
  conv_impl(a, use, cp);
  auto result = out.permute({0, 3, 1, 2});  // NCHW view of channels-last data
  if (want_counts) return {result, counts};
  return {result};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_isa", &cpu_isa, "best instruction set: 0 portable, 1 AVX2, 2 AVX-512 VPOPCNTDQ");
  m.def("pack_activations", &pack_activations, "binarise and pack NHWC bit planes");
  m.def("binary_conv2d", &binary_conv2d, "M·N bitwise convolution with zero padding");
}
