#ifndef RFS_SYSOPS_H
#define RFS_SYSOPS_H

#include <node_api.h>

// Adds `sys_*` to the addon's exports: the syscalls replicafs applies to the source directory,
// run on libuv's thread pool. See sysops.c.
void rfs_sysops_init (napi_env env, napi_value exports);

#endif
