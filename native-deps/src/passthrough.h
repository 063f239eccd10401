#ifndef RFS_PASSTHROUGH_H
#define RFS_PASSTHROUGH_H

#include <fuse.h>

// Opens the source directory that the passthrough ops answer from. 0 or -errno.
int rfs_passthrough_init (const char *root);

// Points the calls that change nothing (getattr, read, readdir, opendir, ...) at passthrough.c.
void rfs_passthrough_ops (struct fuse_operations *ops);

#endif
