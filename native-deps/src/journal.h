#ifndef RFS_JOURNAL_H
#define RFS_JOURNAL_H

#include <stdint.h>
#include <sys/types.h>
#include <node_api.h>

// Whether writes are journaled here (async mode, started by JS) rather than handed to JS.
int rfs_journal_on (void);

// Appends the journal record of a change that the source applied, and queues it for JS: the
// Mutation (src/replication/mutation.ts) `op` on `path` (NULL: null), with `key2`: `str2`
// when key2 is not NULL (a rename's "from", a symlink's "target"), the JSON fields `fmt`
// formats (NULL: none; at most 200 bytes), and the caller's uid and gid.
// 0: recorded; -errno: not (the call answers it); 1: journaling was stopped meanwhile (hand
// the change to JS instead).
int rfs_journal_record (const char *op, const char *path, const char *key2, const char *str2, const char *fmt, ...)
  __attribute__ ((format (printf, 5, 6)));

// The same for a write of `n` bytes (which stay out of the file: the source holds them), of a
// file that had `links` names when written (-1: not known).
int rfs_journal_write (const char *path, const char *data, size_t n, long links, const char *fmt, ...)
  __attribute__ ((format (printf, 5, 6)));

// journal_start, journal_take, journal_seal, journal_cut, journal_stop (see journal.c).
void rfs_journal_exports (napi_env env, napi_value exports);

#endif
