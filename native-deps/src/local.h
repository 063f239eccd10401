#ifndef RFS_LOCAL_H
#define RFS_LOCAL_H

#include <stdint.h>
#include <fuse.h>

// The ops whose latency is counted with --metrics, in the order of their rows (src/metrics.ts
// has the same list), and the histogram's shape: RFS_BUCKETS bounds (in local.c), one count
// past the last, the count, the sum in ns.
enum {
  RFS_OP_GETATTR, RFS_OP_FGETATTR, RFS_OP_ACCESS, RFS_OP_READLINK, RFS_OP_READ, RFS_OP_STATFS,
  RFS_OP_READDIR, RFS_OP_OPENDIR, RFS_OP_RELEASEDIR, RFS_OP_FSYNCDIR, RFS_OP_GETXATTR,
  RFS_OP_LISTXATTR, RFS_OP_OPEN, RFS_OP_CREATE, RFS_OP_WRITE, RFS_OP_FLUSH, RFS_OP_RELEASE,
  RFS_OP_FSYNC, RFS_OP_TRUNCATE, RFS_OP_FTRUNCATE, RFS_OP_MKDIR, RFS_OP_MKNOD, RFS_OP_SYMLINK,
  RFS_OP_LINK, RFS_OP_RENAME, RFS_OP_UNLINK, RFS_OP_RMDIR, RFS_OP_CHMOD, RFS_OP_CHOWN,
  RFS_OP_UTIMENS, RFS_OP_SETXATTR, RFS_OP_REMOVEXATTR,
  RFS_OPS
};
#define RFS_BUCKETS 12
#define RFS_HIST_ROW (RFS_BUCKETS + 3)

// Opens the source directory that every call is applied to. `replicate`: hand each change
// that succeeded to JS (fuse-native's dispatchers). `intents`: a file to log the paths of
// each change before it is applied, or NULL/"". `op_times`: RFS_OPS * RFS_HIST_ROW counters
// that each call's latency is added to, or NULL (calls are not timed). 0 or -errno.
int rfs_local_init (const char *root, int replicate, const char *intents, uint64_t *op_times, size_t op_times_words);

// Points every call at local.c; the changes keep fuse-native's dispatchers to forward to.
void rfs_local_ops (struct fuse_operations *ops);

// Defined in the patched fuse-native.c: the local result of the call this thread is about
// to hand to JS, where JS reads it (the caller words of the thread-locals buffer).
void rfs_set_result (int32_t res);

// Two more words about that change, read by JS after the result (open: the file's link
// count; release: its mtime and atime, in seconds).
void rfs_set_extra (uint32_t a, uint32_t b);

#endif
