// BatchNorm followed by a binarised input, one pass per direction over NCHW float32 data:
//
//   y   = x·scale_c + shift_c                       (BatchNorm, batch or running statistics)
//   out = Σ_k β_k·s_k(y),  s_k(y) = y ≥ mid_k ? +1 : −1
//
// with the straight-through window lo_k ≤ y ≤ hi_k of each base. The BatchNorm output y is
// never stored: the backward recomputes it from x with the same scale and shift.
//
//   gy  = g·Σ_k β_k·1[lo_k ≤ y ≤ hi_k]
//   per channel: Σ gy and Σ gy·(x − mean_c)         (BatchNorm's two reductions)
//   per base:    Σ g·1[window_k] and Σ g·s_k(y)      (the gradients of v_k and β_k)
//   gx  = a_c·gy + b_c·(x − mean_c) + d_c            (a second pass; b = d = 0 for running
//                                                      statistics)
//
// The loops use GCC/Clang vector types, so comparisons become lane masks and selects
// instead of branches (branches on random signs cost ten times the arithmetic).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <cstring>
#include <vector>

namespace {

#ifdef __AVX__
constexpr int kW = 8;  // float lanes per vector
#else
constexpr int kW = 4;
#endif
typedef float vf __attribute__((vector_size(kW * sizeof(float))));
typedef int vi __attribute__((vector_size(kW * sizeof(int))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float a) { return vf{} + a; }
inline vf where(vi mask, vf a) { return (vf)((vi)a & mask); }  // a where mask, else 0
inline float lane_sum(vf v) {
  float s = 0.f;
  for (int l = 0; l < kW; ++l) s += v[l];
  return s;
}

constexpr int kMaxK = 8;  // bases per input (ABC's N); more are refused

struct Bases {
  float lo[kMaxK], mid[kMaxK], hi[kMaxK], beta[kMaxK];
  int count = 0;
};

// The bases of an ABC input (v, β: lo = −v, mid = 0.5 − v, hi = 1 − v, as the separate
// float32 operations compute them) or, without v, the sign: +1 at y ≥ 0, window |y| ≤ 1.
Bases read_bases(const std::optional<at::Tensor>& v, const std::optional<at::Tensor>& beta) {
  Bases b;
  if (!v.has_value()) {
    b.count = 1;
    b.lo[0] = -1.f, b.mid[0] = 0.f, b.hi[0] = 1.f, b.beta[0] = 1.f;
    return b;
  }
  TORCH_CHECK(beta.has_value() && v->numel() == beta->numel() && v->numel() >= 1 &&
                  v->numel() <= kMaxK,
              "bn_binarize: v and beta hold one value per base, 1 to ", kMaxK);
  TORCH_CHECK(v->scalar_type() == at::kFloat && beta->scalar_type() == at::kFloat &&
                  v->is_contiguous() && beta->is_contiguous(),
              "bn_binarize: float32 v and beta expected");
  b.count = static_cast<int>(v->numel());
  const float* vp = v->data_ptr<float>();
  const float* bp = beta->data_ptr<float>();
  for (int k = 0; k < b.count; ++k) {
    b.lo[k] = -vp[k], b.mid[k] = 0.5f - vp[k], b.hi[k] = 1.0f - vp[k], b.beta[k] = bp[k];
  }
  return b;
}

struct Layout {
  int64_t batch, channels, plane;
};

Layout layout(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() >= 2 &&
                  x.is_contiguous(),
              "bn_binarize: contiguous float32 CPU tensor of shape (N, C, ...) expected");
  const int64_t batch = x.size(0), channels = x.size(1);
  return {batch, channels, batch * channels ? x.numel() / (batch * channels) : 0};
}

// A per-channel float32 vector (BatchNorm's γ, b or running statistics), or `fill` without.
std::vector<double> per_channel(const std::optional<at::Tensor>& t, int64_t channels,
                                double fill) {
  if (!t.has_value() || !t->defined()) return std::vector<double>(channels, fill);
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == channels,
              "bn_binarize: float32 per-channel BatchNorm parameters expected");
  const float* p = t->data_ptr<float>();
  return std::vector<double>(p, p + channels);
}

// Per-channel constants of one plane (one image, one channel).
struct Plane {
  const float* x;
  const float* g;
  float* out;
  int64_t n;
  float scale, shift, mean;
};

template <int K>
void forward_plane(const Plane& p, const Bases& b) {
  vf mid[K], beta[K];
  for (int k = 0; k < K; ++k) mid[k] = splat(b.mid[k]), beta[k] = splat(b.beta[k]);
  const vf s = splat(p.scale), t = splat(p.shift);
  int64_t i = 0;
  for (; i + kW <= p.n; i += kW) {
    const vf y = load(p.x + i) * s + t;
    vf acc = vf{};
    for (int k = 0; k < K; ++k) acc += where(y >= mid[k], beta[k] + beta[k]) - beta[k];
    store(p.out + i, acc);
  }
  for (; i < p.n; ++i) {
    const float y = p.x[i] * p.scale + p.shift;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) acc += (y >= b.mid[k] ? b.beta[k] + b.beta[k] : 0.f) - b.beta[k];
    p.out[i] = acc;
  }
}

// Adds this plane's Σ gy, Σ gy·(x − mean) to chan[0..1] and its per-base sums to win, sgn.
template <int K>
void sums_plane(const Plane& p, const Bases& b, double* chan, double* win_out,
                double* sgn_out) {
  vf lo[K], mid[K], hi[K], beta[K], win[K], sgn[K];
  for (int k = 0; k < K; ++k) {
    lo[k] = splat(b.lo[k]), mid[k] = splat(b.mid[k]), hi[k] = splat(b.hi[k]);
    beta[k] = splat(b.beta[k]), win[k] = vf{}, sgn[k] = vf{};
  }
  const vf s = splat(p.scale), t = splat(p.shift), mu = splat(p.mean);
  vf sum_gy = vf{}, sum_gyx = vf{};
  int64_t i = 0;
  for (; i + kW <= p.n; i += kW) {
    const vf x = load(p.x + i), g = load(p.g + i), y = x * s + t;
    vf ws = vf{};
    for (int k = 0; k < K; ++k) {
      const vi in = (y >= lo[k]) & (y <= hi[k]);
      ws += where(in, beta[k]);
      win[k] += where(in, g);
      sgn[k] += where(y >= mid[k], g + g) - g;
    }
    const vf gy = g * ws;
    sum_gy += gy;
    sum_gyx += gy * (x - mu);
  }
  float tail_gy = 0.f, tail_gyx = 0.f, tail_win[K] = {}, tail_sgn[K] = {};
  for (; i < p.n; ++i) {
    const float x = p.x[i], g = p.g[i], y = x * p.scale + p.shift;
    float ws = 0.f;
    for (int k = 0; k < K; ++k) {
      const bool in = y >= b.lo[k] && y <= b.hi[k];
      ws += in ? b.beta[k] : 0.f;
      tail_win[k] += in ? g : 0.f;
      tail_sgn[k] += y >= b.mid[k] ? g : -g;
    }
    tail_gy += g * ws;
    tail_gyx += g * ws * (x - p.mean);
  }
  chan[0] += static_cast<double>(lane_sum(sum_gy)) + tail_gy;
  chan[1] += static_cast<double>(lane_sum(sum_gyx)) + tail_gyx;
  for (int k = 0; k < K; ++k) {
    win_out[k] += static_cast<double>(lane_sum(win[k])) + tail_win[k];
    sgn_out[k] += static_cast<double>(lane_sum(sgn[k])) + tail_sgn[k];
  }
}

template <int K>
void input_plane(const Plane& p, const Bases& b, float a, float bb, float d) {
  vf lo[K], hi[K], beta[K];
  for (int k = 0; k < K; ++k) lo[k] = splat(b.lo[k]), hi[k] = splat(b.hi[k]), beta[k] = splat(b.beta[k]);
  const vf s = splat(p.scale), t = splat(p.shift), mu = splat(p.mean);
  const vf va = splat(a), vb = splat(bb), vd = splat(d);
  int64_t i = 0;
  for (; i + kW <= p.n; i += kW) {
    const vf x = load(p.x + i), y = x * s + t;
    vf ws = vf{};
    for (int k = 0; k < K; ++k) ws += where((y >= lo[k]) & (y <= hi[k]), beta[k]);
    store(p.out + i, va * (load(p.g + i) * ws) + vb * (x - mu) + vd);
  }
  for (; i < p.n; ++i) {
    const float x = p.x[i], y = x * p.scale + p.shift;
    float ws = 0.f;
    for (int k = 0; k < K; ++k) ws += y >= b.lo[k] && y <= b.hi[k] ? b.beta[k] : 0.f;
    p.out[i] = a * (p.g[i] * ws) + bb * (x - p.mean) + d;
  }
}

// Calls Fn<K>::run(args...) with K = the number of bases as a compile-time constant.
template <template <int> class Fn, typename... Args>
void with_bases(int K, Args&&... args) {
  switch (K) {
    case 1: return Fn<1>::run(args...);
    case 2: return Fn<2>::run(args...);
    case 3: return Fn<3>::run(args...);
    case 4: return Fn<4>::run(args...);
    case 5: return Fn<5>::run(args...);
    case 6: return Fn<6>::run(args...);
    case 7: return Fn<7>::run(args...);
    default: return Fn<8>::run(args...);
  }
}
template <int K> struct Forward {
  template <typename... A> static void run(A&... a) { forward_plane<K>(a...); }
};
template <int K> struct Sums {
  template <typename... A> static void run(A&... a) { sums_plane<K>(a...); }
};
template <int K> struct Input {
  template <typename... A> static void run(A&... a) { input_plane<K>(a...); }
};

// BatchNorm as y = x·scale_c + shift_c, the same float32 constants for the forward and for
// the backward's recomputation of y (which must reproduce the forward's y exactly).
struct Affine {
  std::vector<float> scale, shift;
};

Affine batchnorm_affine(const std::vector<double>& gamma, const std::vector<double>& bias,
                        const double* mean, const double* invstd, int64_t channels) {
  Affine a{std::vector<float>(channels), std::vector<float>(channels)};
  for (int64_t c = 0; c < channels; ++c) {
    const double sc = gamma[c] * invstd[c];
    a.scale[c] = static_cast<float>(sc);
    a.shift[c] = static_cast<float>(bias[c] - mean[c] * sc);
  }
  return a;
}

// Mean and biased variance of each channel in one read of x. Each channel's sums are taken
// around its first value, which keeps Σ(x − x0)² accurate when |mean| ≫ std.
void channel_stats(const float* xp, const Layout& L, double* mean, double* var) {
  const double count = static_cast<double>(L.batch * L.plane);
  at::parallel_for(0, L.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float x0 = xp[c * L.plane];
      const vf v0 = splat(x0);
      double s1 = 0, s2 = 0;
      for (int64_t n = 0; n < L.batch; ++n) {
        const float* xs = xp + (n * L.channels + c) * L.plane;
        vf a1 = vf{}, a2 = vf{};
        int64_t i = 0;
        for (; i + kW <= L.plane; i += kW) {
          const vf d = load(xs + i) - v0;
          a1 += d;
          a2 += d * d;
        }
        float t1 = 0.f, t2 = 0.f;
        for (; i < L.plane; ++i) {
          const float d = xs[i] - x0;
          t1 += d;
          t2 += d * d;
        }
        s1 += static_cast<double>(lane_sum(a1)) + t1;
        s2 += static_cast<double>(lane_sum(a2)) + t2;
      }
      const double m = s1 / count;
      mean[c] = x0 + m;
      var[c] = std::max(s2 / count - m * m, 0.0);
    }
  });
}

}  // namespace

// Training forward: batch statistics, the running statistics updated in place as
// nn.BatchNorm2d updates them (momentum < 0: cumulative average), and the binarised output.
// Returns {out, saved}: saved is (2, C) float64, the batch mean and 1/√(var + eps).
std::vector<at::Tensor> forward(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& running_mean,
                                const std::optional<at::Tensor>& running_var,
                                const std::optional<at::Tensor>& batches_tracked,
                                double momentum, double eps, const std::optional<at::Tensor>& v,
                                const std::optional<at::Tensor>& beta) {
  const Layout L = layout(x);
  TORCH_CHECK(L.batch * L.plane > 1, "bn_binarize: BatchNorm needs more than one value per channel");
  const Bases b = read_bases(v, beta);
  const auto gamma = per_channel(weight, L.channels, 1.0);
  const auto shift_b = per_channel(bias, L.channels, 0.0);
  auto saved = at::empty({2, L.channels}, x.options().dtype(at::kDouble));
  double* mean = saved.data_ptr<double>();
  double* invstd = mean + L.channels;
  std::vector<double> var(L.channels);
  channel_stats(x.data_ptr<float>(), L, mean, var.data());
  for (int64_t c = 0; c < L.channels; ++c) invstd[c] = 1.0 / std::sqrt(var[c] + eps);
  const Affine bn = batchnorm_affine(gamma, shift_b, mean, invstd, L.channels);
  if (running_mean.has_value() && running_mean->defined()) {
    TORCH_CHECK(running_var.has_value() && running_var->defined(), "bn_binarize: running_var missing");
    per_channel(running_mean, L.channels, 0.0);  // checks dtype and size
    per_channel(running_var, L.channels, 0.0);
    double factor = momentum;
    if (batches_tracked.has_value() && batches_tracked->defined()) {
      TORCH_CHECK(batches_tracked->scalar_type() == at::kLong && batches_tracked->numel() == 1,
                  "bn_binarize: num_batches_tracked must be one int64");
      int64_t& tracked = *batches_tracked->data_ptr<int64_t>();
      tracked += 1;
      if (momentum < 0) factor = 1.0 / static_cast<double>(tracked);
    }
    const double count = static_cast<double>(L.batch * L.plane);
    float* rm = running_mean->data_ptr<float>();
    float* rv = running_var->data_ptr<float>();
    for (int64_t c = 0; c < L.channels; ++c) {
      rm[c] = static_cast<float>((1 - factor) * rm[c] + factor * mean[c]);
      rv[c] = static_cast<float>((1 - factor) * rv[c] + factor * var[c] * count / (count - 1));
    }
  }
  auto out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, L.batch * L.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t c = q % L.channels;
      const Plane p{xp + q * L.plane, nullptr, op + q * L.plane, L.plane, bn.scale[c], bn.shift[c], 0.f};
      with_bases<Forward>(b.count, p, b);
    }
  });
  return {out, saved};
}

// Training backward: {gx, gγ, gb, gv, gβ}; gγ, gb without weight/bias and gv, gβ without v
// are undefined (None in Python).
std::vector<at::Tensor> backward(const at::Tensor& x, const at::Tensor& g_in,
                                 const at::Tensor& saved, const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& v,
                                 const std::optional<at::Tensor>& beta) {
  const Layout L = layout(x);
  const at::Tensor g = g_in.contiguous();
  layout(g);
  TORCH_CHECK(g.sizes() == x.sizes(), "bn_binarize: gradient and input shapes differ");
  TORCH_CHECK(saved.scalar_type() == at::kDouble && saved.numel() == 2 * L.channels,
              "bn_binarize: saved statistics of another shape");
  const Bases b = read_bases(v, beta);
  const int K = b.count;
  const auto gamma = per_channel(weight, L.channels, 1.0);
  const auto shift_b = per_channel(bias, L.channels, 0.0);
  const double* mean = saved.data_ptr<double>();
  const double* invstd = mean + L.channels;
  const Affine bn = batchnorm_affine(gamma, shift_b, mean, invstd, L.channels);
  std::vector<float> meanf(mean, mean + L.channels);
  // pass 1: per-channel and per-base sums
  std::vector<double> chan(2 * L.channels, 0.0), per_base(L.channels * 2 * K, 0.0);
  const float* xp = x.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  at::parallel_for(0, L.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double* win_c = per_base.data() + c * 2 * K;
      for (int64_t n = 0; n < L.batch; ++n) {
        const int64_t off = (n * L.channels + c) * L.plane;
        const Plane p{xp + off, gp + off, nullptr, L.plane, bn.scale[c], bn.shift[c], meanf[c]};
        with_bases<Sums>(K, p, b, chan.data() + 2 * c, win_c, win_c + K);
      }
    }
  });
  // pass 2: the input gradient
  const double count = static_cast<double>(L.batch * L.plane);
  std::vector<float> ca(L.channels), cb(L.channels), cd(L.channels);
  for (int64_t c = 0; c < L.channels; ++c) {
    const double a = gamma[c] * invstd[c];
    ca[c] = static_cast<float>(a);
    cb[c] = static_cast<float>(-a * invstd[c] * invstd[c] * chan[2 * c + 1] / count);
    cd[c] = static_cast<float>(-a * chan[2 * c] / count);
  }
  auto gx = at::empty_like(x);
  float* op = gx.data_ptr<float>();
  at::parallel_for(0, L.batch * L.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t c = q % L.channels, off = q * L.plane;
      const Plane p{xp + off, gp + off, op + off, L.plane, bn.scale[c], bn.shift[c], meanf[c]};
      with_bases<Input>(b.count, p, b, ca[c], cb[c], cd[c]);
    }
  });
  at::Tensor g_weight, g_bias, g_v, g_beta;
  const auto opts = x.options();
  if (weight.has_value() && weight->defined()) {
    g_weight = at::empty({L.channels}, opts);
    float* p = g_weight.data_ptr<float>();
    for (int64_t c = 0; c < L.channels; ++c) p[c] = static_cast<float>(chan[2 * c + 1] * invstd[c]);
  }
  if (bias.has_value() && bias->defined()) {
    g_bias = at::empty({L.channels}, opts);
    float* p = g_bias.data_ptr<float>();
    for (int64_t c = 0; c < L.channels; ++c) p[c] = static_cast<float>(chan[2 * c]);
  }
  if (v.has_value()) {
    g_v = at::empty({K}, opts);
    g_beta = at::empty({K}, opts);
    float* pv = g_v.data_ptr<float>();
    float* pb = g_beta.data_ptr<float>();
    for (int k = 0; k < K; ++k) {
      double win = 0, sgn = 0;
      for (int64_t c = 0; c < L.channels; ++c) {
        win += per_base[c * 2 * K + k];
        sgn += per_base[c * 2 * K + K + k];
      }
      pv[k] = static_cast<float>(b.beta[k] * win);
      pb[k] = static_cast<float>(sgn);
    }
  }
  return {gx, g_weight, g_bias, g_v, g_beta};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "BatchNorm (training) + binarised input, forward");
  m.def("backward", &backward, "BatchNorm (training) + binarised input, backward");
}
