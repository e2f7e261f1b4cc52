// Direct float32 convolution for XLA:CPU through the XLA FFI: NHWC input, HWIO
// weights, square kernel, stride 1, no padding, 16-64 output channels.
//
// Why: XLA:CPU's convolutions run the digits nets' 5x5 convs at half of PyTorch's
// speed (jaxdapt/bench_ops.py); the input gradient runs over the zero-padded
// gradient (twice the multiply-adds). These kernels keep a block of outputs in
// vector registers (about 24 accumulators) and stream the contraction through them:
//   forward      out[p, :]      = sum_{i,j,c} x[y+i, x+j, c] * w[i, j, c, :]
//   input grad   din[y+i, x+j, :] += sum_o g[p, o] * w[i, j, :, o]   (scatter form:
//                exactly the forward's multiply-adds)
//   weight grad  dw[i, (j,c), :] = sum_p x[y+i, x+(j,c)] * g[p, :]
// Work is split into fixed chunks of images and the weight gradient's per-chunk
// partial sums are added in chunk order, so results do not depend on threading.
// Vectors are GCC/Clang vector extensions (16 floats), compiled for the host CPU.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 16;
typedef float vec __attribute__((vector_size(64), aligned(4), may_alias));

inline vec load(const float* p) { return *reinterpret_cast<const vec*>(p); }
inline void store(float* p, vec v) { *reinterpret_cast<vec*>(p) = v; }
inline void add_to(float* p, vec v) { store(p, load(p) + v); }

// Runs body(chunk) for every chunk in [0, n) on the calling thread and XLA's intra-op
// pool. The caller claims chunks too, so it never waits for a task nobody runs; a task
// that starts after every chunk is claimed touches only the shared counter.
template <typename F>
void parallel_for(ffi::ThreadPool& pool, int64_t n, const F& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, &body]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      body(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  // The caller is one of the pool's threads or waits for them: num_threads - 1 helpers.
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, n - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

struct Shape {
  int64_t n, h, w, cin, k, cout, ho, wo;  // input [n, h, w, cin], kernel k x k, output ho x wo
};

// Calls f.template operator()<r>() for 1 <= r <= B: a blocked loop's tail block.
template <int B, typename F>
inline void with_block(int64_t r, const F& f) {
  if constexpr (B >= 1) {
    if (r == B) return f.template operator()<B>();
    with_block<B - 1>(r, f);
  }
}

// Offsets in x ([n, h, w, cin]) of the top-left input pixel of output pixels
// [p0, p0 + B), output pixels flattened as [n, ho, wo].
template <int B>
inline void pixel_offsets(const Shape& s, int64_t p0, int64_t* offset) {
  for (int b = 0; b < B; ++b) {
    const int64_t p = p0 + b, n = p / (s.ho * s.wo), r = p % (s.ho * s.wo);
    offset[b] = ((n * s.h + r / s.wo) * s.w + r % s.wo) * s.cin;
  }
}

// out[p, :] for p in [p0, p0 + B); (j, c) runs contiguously in both x and w.
template <int OV, int B>
inline void forward_block(const Shape& s, const float* x, const float* w, float* out,
                          int64_t p0) {
  int64_t offset[B];
  pixel_offsets<B>(s, p0, offset);
  vec acc[B][OV] = {};
  const int64_t row = s.k * s.cin;
  for (int64_t i = 0; i < s.k; ++i) {
    const float* xi = x + i * s.w * s.cin;
    const float* wi = w + i * row * s.cout;
    for (int64_t jc = 0; jc < row; ++jc) {
      vec wv[OV];
      for (int v = 0; v < OV; ++v) wv[v] = load(wi + jc * s.cout + v * kLanes);
      for (int b = 0; b < B; ++b) {
        const float xs = xi[offset[b] + jc];
        for (int v = 0; v < OV; ++v) acc[b][v] += xs * wv[v];
      }
    }
  }
  for (int b = 0; b < B; ++b)
    for (int v = 0; v < OV; ++v) store(out + (p0 + b) * s.cout + v * kLanes, acc[b][v]);
}

// `images` images from x (their first pixel) into out.
template <int OV, int B>
void forward_images(const Shape& s, const float* x, const float* w, float* out,
                    int64_t images) {
  const int64_t pixels = images * s.ho * s.wo;
  int64_t p0 = 0;
  for (; p0 + B <= pixels; p0 += B) forward_block<OV, B>(s, x, w, out, p0);
  with_block<B - 1>(pixels - p0, [&]<int R>() { forward_block<OV, R>(s, x, w, out, p0); });
}

// din += the contributions of g's pixels [p0, p0 + B); wt is w as [i, j, o, c].
template <int CV, int B>
inline void input_grad_block(const Shape& s, const float* g, const float* wt, float* din,
                             int64_t p0) {
  int64_t offset[B];
  pixel_offsets<B>(s, p0, offset);
  for (int64_t ij = 0; ij < s.k * s.k; ++ij) {
    vec acc[B][CV] = {};
    const float* wij = wt + ij * s.cout * s.cin;
    for (int64_t o = 0; o < s.cout; ++o) {
      vec wv[CV];
      for (int v = 0; v < CV; ++v) wv[v] = load(wij + o * s.cin + v * kLanes);
      for (int b = 0; b < B; ++b) {
        const float gs = g[(p0 + b) * s.cout + o];
        for (int v = 0; v < CV; ++v) acc[b][v] += gs * wv[v];
      }
    }
    float* dij = din + ((ij / s.k) * s.w + ij % s.k) * s.cin;
    for (int b = 0; b < B; ++b)
      for (int v = 0; v < CV; ++v) add_to(dij + offset[b] + v * kLanes, acc[b][v]);
  }
}

template <int CV, int B>
void input_grad_images(const Shape& s, const float* g, const float* wt, float* din,
                       int64_t images) {
  std::memset(din, 0, sizeof(float) * images * s.h * s.w * s.cin);
  const int64_t pixels = images * s.ho * s.wo;
  int64_t p0 = 0;
  for (; p0 + B <= pixels; p0 += B) input_grad_block<CV, B>(s, g, wt, din, p0);
  with_block<B - 1>(pixels - p0,
                    [&]<int R>() { input_grad_block<CV, R>(s, g, wt, din, p0); });
}

// dw[i, jc0 + b, :] for b < B over the pixels of `images` images ((j, c) flattened).
template <int OV, int B>
inline void weight_grad_block(const Shape& s, const float* x, const float* g, int64_t images,
                              int64_t i, int64_t jc0, float* dw) {
  vec acc[B][OV] = {};
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t y = 0; y < s.ho; ++y) {
      const float* xr = x + ((n * s.h + y + i) * s.w) * s.cin + jc0;
      const float* gr = g + ((n * s.ho + y) * s.wo) * s.cout;
      for (int64_t xx = 0; xx < s.wo; ++xx) {
        vec gv[OV];
        for (int v = 0; v < OV; ++v) gv[v] = load(gr + xx * s.cout + v * kLanes);
        for (int b = 0; b < B; ++b) {
          const float xs = xr[xx * s.cin + b];
          for (int v = 0; v < OV; ++v) acc[b][v] += xs * gv[v];
        }
      }
    }
  }
  float* dr = dw + (i * s.k * s.cin + jc0) * s.cout;
  for (int b = 0; b < B; ++b)
    for (int v = 0; v < OV; ++v) store(dr + b * s.cout + v * kLanes, acc[b][v]);
}

template <int OV, int B>
void weight_grad_images(const Shape& s, const float* x, const float* g, float* dw,
                        int64_t images) {
  const int64_t row = s.k * s.cin;
  for (int64_t i = 0; i < s.k; ++i) {
    int64_t jc0 = 0;
    for (; jc0 + B <= row; jc0 += B) weight_grad_block<OV, B>(s, x, g, images, i, jc0, dw);
    with_block<B - 1>(row - jc0, [&]<int R>() {
      weight_grad_block<OV, R>(s, x, g, images, i, jc0, dw);
    });
  }
}

// Vectors of the register-blocked channel dim -> a kernel instance with ~24 accumulators.
#define BY_VECTORS(vectors, KERNEL, ...)         \
  switch (vectors) {                             \
    case 1: KERNEL<1, 16>(__VA_ARGS__); break;   \
    case 2: KERNEL<2, 12>(__VA_ARGS__); break;   \
    case 3: KERNEL<3, 8>(__VA_ARGS__); break;    \
    case 4: KERNEL<4, 6>(__VA_ARGS__); break;    \
  }

constexpr int64_t kImagesPerChunk = 2;         // forward, input gradient
constexpr int64_t kImagesPerGradChunk = 8;     // weight gradient (one partial sum each)

ffi::Error check(const Shape& s, int64_t vectorized) {
  if (vectorized % kLanes != 0 || vectorized < kLanes || vectorized > 4 * kLanes)
    return ffi::Error::InvalidArgument("jaxdapt cpu_conv: channels must be 16, 32, 48 or 64");
  if (s.ho < 1 || s.wo < 1 || s.n < 0)
    return ffi::Error::InvalidArgument("jaxdapt cpu_conv: kernel larger than the image");
  return ffi::Error::Success();
}

// kernel(in, out, images) over chunks of kImagesPerChunk images of `in` (in_size floats
// an image) and `out` (out_size floats an image).
template <typename K>
void by_image_chunks(ffi::ThreadPool& pool, int64_t n, const float* in, int64_t in_size,
                     float* out, int64_t out_size, const K& kernel) {
  parallel_for(pool, (n + kImagesPerChunk - 1) / kImagesPerChunk, [&](int64_t c) {
    const int64_t n0 = c * kImagesPerChunk;
    kernel(in + n0 * in_size, out + n0 * out_size, std::min(kImagesPerChunk, n - n0));
  });
}

const float* data(const ffi::AnyBuffer& b) { return static_cast<const float*>(b.untyped_data()); }
float* data(ffi::Result<ffi::AnyBuffer>& b) { return static_cast<float*>(b->untyped_data()); }

ffi::Error Forward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w,
                   ffi::Result<ffi::AnyBuffer> out) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  Shape s{xd[0], xd[1], xd[2], xd[3], wd[0], wd[3], xd[1] - wd[0] + 1, xd[2] - wd[0] + 1};
  if (ffi::Error e = check(s, s.cout); e.failure()) return e;
  const float* wp = data(w);
  by_image_chunks(pool, s.n, data(x), s.h * s.w * s.cin, data(out), s.ho * s.wo * s.cout,
                  [&](const float* xi, float* oi, int64_t images) {
                    BY_VECTORS(s.cout / kLanes, forward_images, s, xi, wp, oi, images);
                  });
  return ffi::Error::Success();
}

// g: the output's cotangent [n, ho, wo, cout]; wt: the weights as [k, k, cout, cin].
ffi::Error InputGrad(ffi::ThreadPool pool, ffi::AnyBuffer g, ffi::AnyBuffer wt,
                     ffi::Result<ffi::AnyBuffer> din) {
  auto gd = g.dimensions();
  auto wd = wt.dimensions();
  Shape s{gd[0], gd[1] + wd[0] - 1, gd[2] + wd[0] - 1, wd[3], wd[0], wd[2], gd[1], gd[2]};
  if (ffi::Error e = check(s, s.cin); e.failure()) return e;
  const float* wp = data(wt);
  by_image_chunks(pool, s.n, data(g), s.ho * s.wo * s.cout, data(din), s.h * s.w * s.cin,
                  [&](const float* gi, float* di, int64_t images) {
                    BY_VECTORS(s.cin / kLanes, input_grad_images, s, gi, wp, di, images);
                  });
  return ffi::Error::Success();
}

// x: the input [n, h, w, cin]; g: the output's cotangent; dw: [k, k, cin, cout].
ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer g,
                      ffi::Result<ffi::AnyBuffer> dw) {
  auto xd = x.dimensions();
  auto gd = g.dimensions();
  auto od = dw->dimensions();
  Shape s{xd[0], xd[1], xd[2], xd[3], od[0], od[3], gd[1], gd[2]};
  if (ffi::Error e = check(s, s.cout); e.failure()) return e;
  const float* xp = data(x);
  const float* gp = data(g);
  float* dp = data(dw);
  const int64_t size = s.k * s.k * s.cin * s.cout;
  const int64_t chunks = (s.n + kImagesPerGradChunk - 1) / kImagesPerGradChunk;
  std::vector<float> partial(std::max<int64_t>(chunks, 1) * size, 0.0f);
  parallel_for(pool, chunks, [&](int64_t c) {
    const int64_t n0 = c * kImagesPerGradChunk;
    const int64_t images = std::min(kImagesPerGradChunk, s.n - n0);
    BY_VECTORS(s.cout / kLanes, weight_grad_images, s, xp + n0 * s.h * s.w * s.cin,
               gp + n0 * s.ho * s.wo * s.cout, partial.data() + c * size, images);
  });
  std::memcpy(dp, partial.data(), sizeof(float) * size);
  for (int64_t c = 1; c < chunks; ++c) {
    const float* pc = partial.data() + c * size;
    for (int64_t e = 0; e < size; ++e) dp[e] += pc[e];
  }
  return ffi::Error::Success();
}

}  // namespace

#define CONV_HANDLER(symbol, impl)                                       \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, impl,                            \
                                ffi::Ffi::Bind()                         \
                                    .Ctx<ffi::ThreadPool>()              \
                                    .Arg<ffi::AnyBuffer>()               \
                                    .Arg<ffi::AnyBuffer>()               \
                                    .Ret<ffi::AnyBuffer>());

CONV_HANDLER(jaxdapt_conv_forward, Forward)
CONV_HANDLER(jaxdapt_conv_input_grad, InputGrad)
CONV_HANDLER(jaxdapt_conv_weight_grad, WeightGrad)
