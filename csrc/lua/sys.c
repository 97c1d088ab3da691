/* Binding of the process and machine (core.sys): clocks, memory, threads, terminals,
 * file syncing and hashing, process ids, and the raw GEMM rate the benchmark compares
 * against. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "../core/blas.h"
#include "../core/error.h"
#include "../core/hash.h"
#include "../core/interrupt.h"
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

static int l_memory(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, ds_live_tensors());
  lua_setfield(L, -2, "tensors");
  lua_pushinteger(L, ds_live_bytes());
  lua_setfield(L, -2, "bytes");
  return 1;
}

static int l_set_num_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 1) return luaL_argerror(L, 1, "number of threads must be >= 1");
  ds_set_num_threads((int)n);
  return 0;
}

static int l_get_num_threads(lua_State *L) { lua_pushinteger(L, ds_get_num_threads()); return 1; }

/* fsync(path): flush a written file to disk before it is renamed into place. */
static int l_fsync(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_RDONLY);
  if (fd < 0 || fsync(fd) != 0) {
    if (fd >= 0) close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot sync %s", path);
    return 2;
  }
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_sha256(lua_State *L) { /* hex digest of a string */
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[65];
  if (ds_sha256_hex(s, len, hex)) return lt_raise(L);
  lua_pushstring(L, hex);
  return 1;
}

/* defer_interrupts(on): a Ctrl-C in the deepsigns interpreter waits for take_interrupt */
static int l_defer_interrupts(lua_State *L) {
  ds_interrupt_defer(lua_toboolean(L, 1));
  return 0;
}

static int l_take_interrupt(lua_State *L) {
  lua_pushboolean(L, ds_interrupt_take());
  return 1;
}

/* request_interrupt() -> whether it was deferred (as the interpreter's SIGINT handler
 * asks; for the specs) */
static int l_request_interrupt(lua_State *L) {
  lua_pushboolean(L, ds_interrupt_request());
  return 1;
}

/* pid() -> this process's id; hostname() -> the machine's name (sweep markers) */
static int l_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static int l_hostname(lua_State *L) {
  char name[256] = {0};
  if (gethostname(name, sizeof name - 1) != 0) strcpy(name, "unknown");
  lua_pushstring(L, name);
  return 1;
}

/* alive(pid) -> whether a process with that id runs on this machine (a zombie counts
 * as gone) */
static int l_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno != EPERM)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  char path[64], state = 0;
  snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
  FILE *f = fopen(path, "r");
  if (f) {
    int c, close_paren = 0;
    while ((c = fgetc(f)) != EOF) { /* the state follows the last ')' of the command name */
      if (c == ')') close_paren = 1;
      else if (close_paren && c != ' ') { state = (char)c; close_paren = 0; }
    }
    fclose(f);
  }
  lua_pushboolean(L, state != 'Z' && state != 'X');
  return 1;
}

static const luaL_Reg fns[] = {{"pid", l_pid}, {"hostname", l_hostname}, {"alive", l_alive},{"bench_raw_sgemm", l_bench_raw_sgemm}, {"clock", l_clock}, {"peak_rss", l_peak_rss},
                               {"rss", l_rss}, {"isatty", l_isatty}, {"memory", l_memory},
                               {"set_num_threads", l_set_num_threads}, {"get_num_threads", l_get_num_threads},
                               {"fsync", l_fsync}, {"sha256", l_sha256}, {"defer_interrupts", l_defer_interrupts},
                               {"take_interrupt", l_take_interrupt}, {"request_interrupt", l_request_interrupt},
                               {NULL, NULL}};

void lt_open_sys(lua_State *L) { lt_register(L, "sys", fns); }
