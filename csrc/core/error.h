/* Error reporting for the core: fallible functions return NULL or a negative
 * status and leave a message here; the core never exits, aborts or longjmps. */
#ifndef DS_ERROR_H
#define DS_ERROR_H

enum { DS_OK = 0, DS_EFAIL = -1 };

/* Formats the message (printf-style) and returns DS_EFAIL. */
int ds_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message set on this thread. */
const char *ds_last_error(void);

#endif
