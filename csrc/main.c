/* The `deepsigns` interpreter: Lua 5.4 with deepsigns.core linked in and the Lua
 * files on package.path. `ds` is bound to require "deepsigns", `help` to a function
 * that prints ds.help(x).
 *
 *   deepsigns script.lua args...   run a script (arg as in lua)
 *   deepsigns -e 'chunk'           run a chunk
 *   deepsigns                      REPL: readline editing, history, tab completion
 *
 * Ctrl-C stops the running chunk with an "interrupted" error (the REPL then returns to
 * its prompt); a training loop (ds.train) defers it to its next batch boundary
 * (core/interrupt.h), and a second Ctrl-C stops at once. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/interrupt.h"

/* The source tree's lua/ for a plain build; empty for an installed copy, which
 * finds its Lua files beside it in <prefix>/share/lua/5.4 (or on the default path). */
#ifndef DS_LUA_DIR
#define DS_LUA_DIR ""
#endif

int luaopen_deepsigns_core(lua_State *L);

static lua_State *global_L; /* for the readline completion callback and the SIGINT handler */

/* ---- Ctrl-C: as lua.c, a hook that raises an error at the next Lua instruction ---- */

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_sigint(int sig) {
  if (ds_interrupt_request()) return; /* a training loop stops at its next batch boundary */
  signal(sig, SIG_DFL); /* a further Ctrl-C before the hook runs ends the process */
  lua_sethook(global_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* at the REPL's prompt: drop the line typed so far and prompt again */
static void on_sigint_at_prompt(int sig) {
  (void)sig;
  if (write(STDOUT_FILENO, "\n", 1) < 0) return;
  rl_on_new_line();
  rl_replace_line("", 0);
  rl_redisplay();
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int docall(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  void (*was)(int) = signal(SIGINT, on_sigint);
  int status = lua_pcall(L, nargs, nres, base);
  signal(SIGINT, was);
  lua_sethook(L, NULL, 0, 0);
  ds_interrupt_take(); /* a request nobody took dies with the chunk */
  lua_remove(L, base);
  return status;
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    fprintf(stderr, "deepsigns: %s\n", lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

static void prepend_path(lua_State *L, const char *dir) {
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
}

static void setup_paths(lua_State *L) {
  lua_getglobal(L, "package");
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 64);
  if (n > 0) {
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) {
      strcpy(slash, "/../share/lua/5.4");
      prepend_path(L, exe);
    }
  }
  if (DS_LUA_DIR[0]) prepend_path(L, DS_LUA_DIR);
  const char *dir = getenv("DEEPSIGNS_LUA_DIR");
  if (dir && *dir) prepend_path(L, dir);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_deepsigns_core);
  lua_setfield(L, -2, "deepsigns.core");
  lua_pop(L, 2);
}

static int bind_ds(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushstring(L, "deepsigns");
  int status = docall(L, 1, 1);
  if (status == LUA_OK) {
    lua_getfield(L, -1, "help_printer"); /* help(x) prints ds.help(x) */
    lua_setglobal(L, "help");
    lua_setglobal(L, "ds");
  }
  return report(L, status);
}

static void create_arg(lua_State *L, char **argv, int argc, int script) {
  lua_createtable(L, argc - script, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int run_script(lua_State *L, char **argv, int argc, int script) {
  create_arg(L, argv, argc, script);
  int status = luaL_loadfile(L, strcmp(argv[script], "-") == 0 ? NULL : argv[script]);
  if (status == LUA_OK) {
    int n = argc - script - 1;
    luaL_checkstack(L, n, "too many arguments");
    for (int i = 1; i <= n; i++) lua_pushstring(L, argv[script + i]);
    status = docall(L, n, 0);
  }
  return report(L, status);
}

/* ---- REPL ---- */

/* Prints results through deepsigns.repl.show (tensors and tables readably). */
static void print_results(lua_State *L, int n) {
  if (n == 0) return;
  lua_getglobal(L, "require");
  lua_pushstring(L, "deepsigns.repl");
  if (docall(L, 1, 1) != LUA_OK) {
    report(L, 1);
    lua_pop(L, n);
    return;
  }
  lua_getfield(L, -1, "show");
  lua_remove(L, -2);
  lua_insert(L, -(n + 1));
  report(L, docall(L, n, 0));
}

static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (len >= 5 && strcmp(msg + len - 5, "<eof>") == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/* Completes dotted names: walks the table path before the last '.' or ':'. */
static char *completion_generator(const char *text, int state) {
  static int index;
  static char **matches;
  lua_State *L = global_L;
  if (state == 0) {
    if (matches)
      for (int i = 0; matches[i]; i++) free(matches[i]);
    free(matches);
    matches = NULL;
    index = 0;
    int count = 0, cap = 16;
    matches = calloc((size_t)cap, sizeof *matches);
    const char *sep = NULL;
    for (const char *p = text; *p; p++)
      if (*p == '.' || *p == ':') sep = p;
    size_t plen = sep ? (size_t)(sep - text + 1) : 0;
    const char *last = text + plen;
    int top = lua_gettop(L);
    lua_pushglobaltable(L);
    /* walk the path segment by segment */
    const char *seg = text;
    while (sep && seg < sep) {
      const char *end = seg;
      while (end < sep && *end != '.' && *end != ':') end++;
      lua_pushlstring(L, seg, (size_t)(end - seg));
      if (lua_type(L, -2) == LUA_TTABLE) lua_gettable(L, -2); /* may load a lazy module */
      else if (lua_type(L, -2) == LUA_TUSERDATA && luaL_getmetafield(L, -2, "__index") == LUA_TTABLE) {
        lua_insert(L, -2);
        lua_rawget(L, -2);
        lua_remove(L, -2);
      } else {
        lua_pop(L, 1);
        lua_pushnil(L);
      }
      lua_remove(L, -2);
      seg = end + 1;
    }
    /* userdata: complete from the metatable's method table */
    if (lua_type(L, -1) == LUA_TUSERDATA) {
      if (luaL_getmetafield(L, -1, "__methods") == LUA_TTABLE) lua_remove(L, -2);
      else lua_pushnil(L), lua_remove(L, -2);
    }
    for (int pass = 0; pass < 2 && lua_type(L, -1) == LUA_TTABLE; pass++) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
          const char *k = lua_tostring(L, -2);
          if (strncmp(k, last, strlen(last)) == 0 && count + 1 < cap) {
            char *m = malloc(plen + strlen(k) + 1);
            memcpy(m, text, plen);
            strcpy(m + plen, k);
            matches[count++] = m;
            if (count + 1 == cap) {
              char **bigger = realloc(matches, sizeof *matches * (size_t)(cap * 2));
              if (bigger) {
                matches = bigger;
                cap *= 2;
              }
            }
          }
        }
        lua_pop(L, 1);
      }
      /* then names the metatable offers: __keys (lazy fields) or an __index table */
      if (!lua_getmetatable(L, -1)) break;
      if (lua_getfield(L, -1, "__keys") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "__index");
      }
      lua_remove(L, -2);
      lua_remove(L, -2);
    }
    matches[count] = NULL;
    lua_settop(L, top);
  }
  return matches && matches[index] ? strdup(matches[index++]) : NULL;
}

static char **complete(const char *text, int start, int end) {
  (void)start, (void)end;
  rl_completion_append_character = '\0';
  return rl_completion_matches(text, completion_generator);
}

static void repl(lua_State *L) {
  char hist[4096] = "";
  const char *home = getenv("HOME");
  if (home) snprintf(hist, sizeof hist, "%s/.deepsigns_history", home);
  rl_readline_name = "deepsigns";
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]";
  rl_attempted_completion_function = complete;
  using_history();
  if (hist[0]) read_history(hist);
  int interactive = isatty(0);
  if (interactive) {
    lua_getglobal(L, "ds");
    lua_getfield(L, -1, "version");
    printf("deepsigns %s (Lua 5.4) - `ds` is bound; tab completes names, Ctrl-D quits\n",
           lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 2);
  }
  char *line;
  signal(SIGINT, on_sigint_at_prompt);
  while ((line = readline("> ")) != NULL) {
    if (!*line) {
      free(line);
      continue;
    }
    /* first try as an expression, then as statements, reading more on <eof> */
    lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin");
    lua_remove(L, -2);
    if (status != LUA_OK) {
      lua_pop(L, 1);
      lua_pushstring(L, line);
      for (;;) { /* stack: source; after a load: source, chunk or message */
        status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin");
        if (!incomplete(L, status)) break;
        char *more = readline(">> ");
        if (!more) {
          lua_pushliteral(L, "incomplete input");
          break;
        }
        lua_pushfstring(L, "%s\n%s", lua_tostring(L, -1), more);
        lua_remove(L, -2);
        free(more);
      }
      add_history(lua_tostring(L, -2));
      lua_remove(L, -2);
    } else
      add_history(line);
    free(line);
    if (status == LUA_OK) {
      int base = lua_gettop(L);
      status = docall(L, 0, LUA_MULTRET);
      if (status == LUA_OK) print_results(L, lua_gettop(L) - base + 1);
    }
    report(L, status);
    lua_settop(L, 0);
  }
  if (interactive) printf("\n");
  if (hist[0]) write_history(hist);
}

/* `deepsigns sweep ...`: require("deepsigns.sweep").cli{args after "sweep"}; the exit
 * status is 1 when it raises or returns false. */
static int run_sweep_command(lua_State *L, char **argv, int argc) {
  create_arg(L, argv, argc, 1);
  const char *chunk = "return require('deepsigns.sweep').cli({...})";
  int status = luaL_loadbuffer(L, chunk, strlen(chunk), "=sweep");
  if (status == LUA_OK) {
    for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    status = docall(L, argc - 2, 1);
  }
  if (status != LUA_OK) return report(L, status) != LUA_OK;
  int ok = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return !ok;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: deepsigns [options] [script.lua [args...]]\n"
          "\n"
          "The Lua 5.4 interpreter with the deepsigns module: `ds` is bound to require \"deepsigns\"\n"
          "and `help` prints the reference of a function or table, e.g. help(ds.train).\n"
          "\n"
          "  deepsigns                    an interactive REPL: line editing, history (~/.deepsigns_history),\n"
          "                               tab completion of names (ds.nn.Li<TAB>); Ctrl-C stops the running\n"
          "                               chunk and returns to the prompt, Ctrl-D quits\n"
          "  deepsigns script.lua [args]  runs a script; arg and ... hold its arguments, as in lua\n"
          "  deepsigns - [args]           runs the script on standard input\n"
          "  deepsigns -e 'chunk'         runs a chunk of Lua\n"
          "  deepsigns sweep status SPEC  a sweep's finished, failed, running and remaining jobs\n"
          "                               (also: sweep run|merge|job SPEC; deepsigns sweep -h)\n"
          "  deepsigns -v, --version      prints the version\n"
          "  deepsigns -h, --help         prints this help\n"
          "\n"
          "A Ctrl-C during ds.train stops it at the next batch boundary (its checkpoint stays as\n"
          "the last finished epoch left it); a second Ctrl-C stops at once.\n"
          "Environment: DEEPSIGNS_LUA_DIR (extra Lua files), OMP_NUM_THREADS (threads).\n"
          "Examples: deepsigns examples/demo.lua; deepsigns -e 'print(ds.version)'\n");
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "deepsigns: cannot create the Lua state\n");
    return 1;
  }
  global_L = L;
  luaL_openlibs(L);
  setup_paths(L);
  int status = 0;
  if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    usage(stdout);
  } else if (argc > 1 && argv[1][0] == '-' && argv[1][1] && strcmp(argv[1], "-e") != 0 && strcmp(argv[1], "-v") != 0 &&
             strcmp(argv[1], "--version") != 0) {
    fprintf(stderr, "deepsigns: unknown option '%s' (deepsigns -h lists the options)\n", argv[1]);
    status = 1;
  } else if (bind_ds(L) != LUA_OK) {
    status = 1;
  } else if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
    lua_getglobal(L, "ds");
    lua_getfield(L, -1, "version");
    printf("deepsigns %s\n", lua_tostring(L, -1));
  } else if (argc > 1 && strcmp(argv[1], "-e") == 0) {
    if (argc < 3) {
      fprintf(stderr, "deepsigns: -e needs a chunk of Lua (deepsigns -h lists the options)\n");
      status = 1;
    } else {
      create_arg(L, argv, argc, 0);
      status = luaL_loadbuffer(L, argv[2], strlen(argv[2]), "=(command line)");
      if (status == LUA_OK) status = docall(L, 0, 0);
      status = report(L, status) != LUA_OK;
    }
  } else if (argc > 1 && strcmp(argv[1], "sweep") == 0) {
    status = run_sweep_command(L, argv, argc);
  } else if (argc > 1) {
    status = run_script(L, argv, argc, 1) != LUA_OK;
  } else {
    repl(L);
  }
  lua_close(L);
  return status;
}
