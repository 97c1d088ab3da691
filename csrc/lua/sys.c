/* Wall clock and process memory, for progress bars and benchmarks. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "../core/blas.h"
#include "binding.h"

static int l_clock(lua_State *L) { /* monotonic seconds */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static int l_peak_rss(lua_State *L) { /* bytes */
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushinteger(L, (lua_Integer)ru.ru_maxrss * 1024);
  return 1;
}

static int l_rss(lua_State *L) { /* current resident bytes, from /proc */
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  lua_pushinteger(L, (lua_Integer)resident * sysconf(_SC_PAGESIZE));
  return 1;
}

static int l_isatty(lua_State *L) { /* isatty(fd) */
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
  return 1;
}

static int l_bench_raw_sgemm(lua_State *L) {
  lua_pushnumber(L, ds_bench_raw_sgemm(luaL_checkinteger(L, 1), luaL_checkinteger(L, 2), luaL_checkinteger(L, 3),
                                       (int)luaL_checkinteger(L, 4)));
  return 1;
}

static const luaL_Reg fns[] = {{"bench_raw_sgemm", l_bench_raw_sgemm}, {"clock", l_clock}, {"peak_rss", l_peak_rss}, {"rss", l_rss},
                               {"isatty", l_isatty}, {NULL, NULL}};

void lt_open_sys(lua_State *L) { luaL_setfuncs(L, fns, 0); }
