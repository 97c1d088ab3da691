/* The one random generator of deepsigns (xoshiro256**, seeded with splitmix64).
 * Every random draw (init, shuffling, dropout, keys) goes through it, so the
 * same seed gives the same run. Its state can be saved and restored. */
#ifndef DS_RNG_H
#define DS_RNG_H

#include <stdint.h>
#include "tensor.h"

typedef struct ds_rng_state {
  uint64_t s[4];
  int has_spare;
  double spare; /* second normal from Box-Muller */
} ds_rng_state;

void ds_rng_seed(uint64_t seed);
void ds_rng_get_state(ds_rng_state *out);
void ds_rng_set_state(const ds_rng_state *in);

uint64_t ds_rng_next(void);
/* n successive draws of ds_rng_next, faster in bulk */
void ds_rng_fill_u64(uint64_t *out, int64_t n);
double ds_rng_uniform(void);          /* [0, 1) */
double ds_rng_normal(void);           /* N(0, 1) */
int64_t ds_rng_below(int64_t n);      /* uniform integer in [0, n), n > 0 */

void ds_rng_fill_uniform(ds_tensor *t, float lo, float hi);
void ds_rng_fill_normal(ds_tensor *t, float mean, float std);
/* Writes a random permutation of 0..n-1 into out. */
void ds_rng_permutation(int64_t n, int64_t *out);

#endif
