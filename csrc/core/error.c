#include "error.h"
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char message[1024];

int ds_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  return DS_EFAIL;
}

const char *ds_last_error(void) { return message; }
