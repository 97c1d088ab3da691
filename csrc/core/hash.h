/* SHA-256 through OpenSSL's libcrypto (key and model integrity). */
#ifndef DS_HASH_H
#define DS_HASH_H

#include <stddef.h>

/* Writes 64 lowercase hex digits and a NUL into hex; returns 0 or DS_EFAIL. */
int ds_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
