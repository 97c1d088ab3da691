/* Deferred interrupts (interrupt.h). */
#include "interrupt.h"
#include <signal.h>

static volatile sig_atomic_t deferred, pending;

void ds_interrupt_defer(int on) {
  if (on) deferred = deferred + 1;
  else if (deferred > 0) deferred = deferred - 1;
  if (!deferred) pending = 0;
}

int ds_interrupt_request(void) {
  if (!deferred || pending) return 0;
  pending = 1;
  return 1;
}

int ds_interrupt_take(void) {
  int was = pending;
  pending = 0;
  return was;
}
