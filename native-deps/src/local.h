#ifndef RFS_LOCAL_H
#define RFS_LOCAL_H

#include <stdint.h>
#include <fuse.h>

// Opens the source directory that every call is applied to. `replicate`: hand each change
// that succeeded to JS (fuse-native's dispatchers). `intents`: a file to log the paths of
// each change before it is applied, or NULL/"". 0 or -errno.
int rfs_local_init (const char *root, int replicate, const char *intents);

// Points every call at local.c; the changes keep fuse-native's dispatchers to forward to.
void rfs_local_ops (struct fuse_operations *ops);

// Defined in the patched fuse-native.c: the local result of the call this thread is about
// to hand to JS, where JS reads it (the caller words of the thread-locals buffer).
void rfs_set_result (int32_t res);

// Two more words about that change, read by JS after the result (open: the file's link
// count; release: its mtime and atime, in seconds).
void rfs_set_extra (uint32_t a, uint32_t b);

#endif
