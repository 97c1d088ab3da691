/* Interrupts that wait for a safe point. A program's SIGINT handler (the deepsigns
 * interpreter's) calls ds_interrupt_request(): while some code holds a deferral (a
 * training loop, which checks between batches) the request is recorded and 1 returned;
 * otherwise, or when a request is already pending (a second Ctrl-C), 0: the program
 * stops what runs now. */
#ifndef DS_INTERRUPT_H
#define DS_INTERRUPT_H

void ds_interrupt_defer(int on); /* nests: on adds a deferral, off removes one */
int ds_interrupt_request(void);  /* async-signal-safe */
int ds_interrupt_take(void);     /* 1 when a request is pending (and clears it) */

#endif
