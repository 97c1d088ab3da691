#include "rng.h"
#include <math.h>

static ds_rng_state state;
static int seeded;

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void ds_rng_seed(uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) state.s[i] = splitmix64(&x);
  state.has_spare = 0;
  state.spare = 0;
  seeded = 1;
}

void ds_rng_get_state(ds_rng_state *out) {
  if (!seeded) ds_rng_seed(0);
  *out = state;
}

void ds_rng_set_state(const ds_rng_state *in) {
  state = *in;
  seeded = 1;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* One xoshiro256** step on a state held in locals. Callers copy the state in and
 * out once: stored through memory every draw, the four stores merge into one vector
 * store and the next draw's scalar loads stall on store forwarding. */
static inline uint64_t xoshiro_step(uint64_t s[4]) {
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint64_t ds_rng_next(void) {
  if (!seeded) ds_rng_seed(0);
  uint64_t s[4] = {state.s[0], state.s[1], state.s[2], state.s[3]};
  uint64_t r = xoshiro_step(s);
  state.s[0] = s[0], state.s[1] = s[1], state.s[2] = s[2], state.s[3] = s[3];
  return r;
}

void ds_rng_fill_u64(uint64_t *out, int64_t n) {
  if (!seeded) ds_rng_seed(0);
  uint64_t s[4] = {state.s[0], state.s[1], state.s[2], state.s[3]};
  for (int64_t i = 0; i < n; i++) out[i] = xoshiro_step(s);
  state.s[0] = s[0], state.s[1] = s[1], state.s[2] = s[2], state.s[3] = s[3];
}

double ds_rng_uniform(void) { return (double)(ds_rng_next() >> 11) * 0x1.0p-53; }

double ds_rng_normal(void) {
  if (state.has_spare) {
    state.has_spare = 0;
    return state.spare;
  }
  double u1, u2;
  do u1 = ds_rng_uniform(); while (u1 <= 0.0);
  u2 = ds_rng_uniform();
  double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
  state.spare = r * sin(a);
  state.has_spare = 1;
  return r * cos(a);
}

int64_t ds_rng_below(int64_t n) {
  /* rejection keeps the draw exactly uniform */
  uint64_t un = (uint64_t)n, limit = UINT64_MAX - UINT64_MAX % un;
  uint64_t x;
  do x = ds_rng_next(); while (x >= limit);
  return (int64_t)(x % un);
}

/* Fill in logical (row-major) order so the values do not depend on strides. */
static void fill_each(ds_tensor *t, double (*draw)(void), float scale, float shift) {
  int64_t n = ds_numel(t), idx[DS_MAXDIM] = {0};
  for (int64_t i = 0; i < n; i++) {
    ds_data(t)[ds_offset_of(t, idx) - t->offset] = (float)(draw() * scale + shift);
    for (int d = t->ndim - 1; d >= 0; d--) {
      if (++idx[d] < t->shape[d]) break;
      idx[d] = 0;
    }
  }
}

void ds_rng_fill_uniform(ds_tensor *t, float lo, float hi) { fill_each(t, ds_rng_uniform, hi - lo, lo); }
void ds_rng_fill_normal(ds_tensor *t, float mean, float std) { fill_each(t, ds_rng_normal, std, mean); }

void ds_rng_permutation(int64_t n, int64_t *out) {
  for (int64_t i = 0; i < n; i++) out[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = ds_rng_below(i + 1), tmp = out[i];
    out[i] = out[j];
    out[j] = tmp;
  }
}
