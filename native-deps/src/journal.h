#ifndef RFS_JOURNAL_H
#define RFS_JOURNAL_H

#include <stdint.h>
#include <sys/types.h>
#include <node_api.h>

// Whether writes are journaled here (async mode, started by JS) rather than handed to JS.
int rfs_journal_on (void);

// Appends the journal record of a write that the source applied, and queues it for JS.
// 0: recorded; -errno: not (the call answers it); 1: journaling was stopped meanwhile (hand
// the change to JS instead).
int rfs_journal_write (const char *path, const char *data, size_t n, off_t off, uint64_t fh, uint32_t uid, uint32_t gid);

// journal_start, journal_take, journal_seal, journal_cut, journal_stop (see journal.c).
void rfs_journal_exports (napi_env env, napi_value exports);

#endif
