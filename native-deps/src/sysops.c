// replicafs sysops: the syscalls applied to the source directory, on libuv's thread pool.
//
// Why not node:fs: it has no mknod (fifos), no xattrs, no utimensat with nanoseconds,
// UTIME_NOW or UTIME_OMIT, and takes string paths as UTF-8 (a name with invalid UTF-8 bytes
// cannot be spelled). Here every path is a latin1 JS string (one char per byte) and every
// result is >= 0 or -errno. The calls that change nothing are in passthrough.c instead.
//
// One entry point: sys_call(op, s1, s2, i1, i2, i3, i4, buf, cb). cb(res).

#define _GNU_SOURCE
#include "sysops.h"

#include <uv.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

// Keep in step with `Op` in src/source/sys.ts.
enum {
  SYS_OPEN = 0, SYS_CLOSE, SYS_PWRITE, SYS_FSYNC, SYS_FTRUNCATE, SYS_TRUNCATE, SYS_UNLINK,
  SYS_RMDIR, SYS_MKDIR, SYS_RENAME, SYS_LINK, SYS_SYMLINK, SYS_CHMOD, SYS_LCHOWN,
  SYS_UTIMENS, SYS_MKNOD, SYS_SETXATTR, SYS_REMOVEXATTR,
};

typedef struct {
  napi_async_work work;
  napi_ref cb;
  napi_ref bufref;
  int op;
  char *s1;
  char *s2;
  int64_t i1, i2, i3, i4;
  void *buf;
  size_t buflen;
  int64_t res;
} job_t;

static char *get_latin1 (napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string) return NULL;
  size_t len;
  napi_get_value_string_latin1(env, v, NULL, 0, &len);
  char *s = malloc(len + 1);
  if (s == NULL) return NULL;
  napi_get_value_string_latin1(env, v, s, len + 1, &len);
  return s;
}

static int64_t get_i64 (napi_env env, napi_value v) {
  int64_t n = 0;
  napi_get_value_int64(env, v, &n);
  return n;
}

#define RET(expr) do { j->res = (expr) < 0 ? -errno : 0; } while (0)

// A new node belongs to the caller, not to the daemon. Group: a setgid parent's group wins,
// as on a local disk (the kernel already gave it to the node). chown clears the setuid and
// setgid bits, so a mode that has them is set again afterwards, as the caller asked for it.
static int give_to_caller (int fd, const char *path, int64_t uid, int64_t gid) {
  if (uid < 0) return 0;
  struct stat st, parent;
  int r = fd >= 0 ? fstat(fd, &st) : lstat(path, &st);
  if (r < 0) return -errno;

  gid_t g = (gid_t) gid;
  const char *slash = strrchr(path, '/');
  if (slash != NULL) {
    size_t len = (size_t) (slash - path);
    char dir[PATH_MAX];
    if (len == 0) len = 1;
    if (len < sizeof(dir)) {
      memcpy(dir, path, len);
      dir[len] = '\0';
      if (stat(dir, &parent) == 0 && (parent.st_mode & S_ISGID)) g = (gid_t) -1;
    }
  }

  r = fd >= 0 ? fchown(fd, (uid_t) uid, g) : lchown(path, (uid_t) uid, g);
  if (r < 0) return -errno;
  if (!S_ISLNK(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID))) {
    r = fd >= 0 ? fchmod(fd, st.st_mode & 07777) : chmod(path, st.st_mode & 07777);
    if (r < 0) return -errno;
  }
  return 0;
}

static void open_as_caller (job_t *j) {
  int flags = (int) j->i1;
  mode_t mode = (mode_t) j->i2;
  if (!(flags & O_CREAT) || j->i3 < 0) {
    int fd = open(j->s1, flags, mode);
    j->res = fd < 0 ? -errno : fd;
    return;
  }
  // Only a node this call creates changes owner: an existing file opened with O_CREAT keeps
  // its owner. O_EXCL tells the two apart without a race.
  for (int tries = 0; tries < 8; tries++) {
    int fd = open(j->s1, flags | O_EXCL, mode);
    if (fd >= 0) {
      int r = give_to_caller(fd, j->s1, j->i3, j->i4);
      if (r < 0) {
        close(fd);
        unlink(j->s1);
        j->res = r;
        return;
      }
      j->res = fd;
      return;
    }
    if (errno != EEXIST || (flags & O_EXCL)) {
      j->res = -errno;
      return;
    }
    fd = open(j->s1, flags & ~O_CREAT, mode);
    if (fd >= 0 || errno != ENOENT) {
      j->res = fd < 0 ? -errno : fd;
      return;
    }
  }
  j->res = -EAGAIN;
}

static void execute (napi_env env, void *data) {
  job_t *j = data;
  int fd;
  ssize_t n;

  switch (j->op) {
    case SYS_OPEN:
      open_as_caller(j);
      break;
    case SYS_CLOSE:
      RET(close((int) j->i1));
      break;
    case SYS_PWRITE:
      n = pwrite((int) j->i1, j->buf, (size_t) j->i2, (off_t) j->i3);
      j->res = n < 0 ? -errno : n;
      break;
    case SYS_FSYNC:
      RET(j->i2 ? fdatasync((int) j->i1) : fsync((int) j->i1));
      break;
    case SYS_FTRUNCATE:
      RET(ftruncate((int) j->i1, (off_t) j->i2));
      break;
    case SYS_TRUNCATE:
      RET(truncate(j->s1, (off_t) j->i2));
      break;
    case SYS_UNLINK:
      RET(unlink(j->s1));
      break;
    case SYS_RMDIR:
      RET(rmdir(j->s1));
      break;
    case SYS_MKDIR:
      RET(mkdir(j->s1, (mode_t) j->i1));
      if (j->res == 0 && (j->res = give_to_caller(-1, j->s1, j->i3, j->i4)) < 0) rmdir(j->s1);
      break;
    case SYS_RENAME:
      RET(rename(j->s1, j->s2));
      break;
    case SYS_LINK:
      RET(link(j->s1, j->s2));
      break;
    case SYS_SYMLINK:
      RET(symlink(j->s1, j->s2));
      if (j->res == 0 && (j->res = give_to_caller(-1, j->s2, j->i3, j->i4)) < 0) unlink(j->s2);
      break;
    case SYS_CHMOD:
      RET(chmod(j->s1, (mode_t) j->i1));
      break;
    case SYS_LCHOWN:
      RET(lchown(j->s1, (uid_t) j->i1, (gid_t) j->i2));
      break;
    case SYS_UTIMENS: {
      struct timespec tv[2] = {
        { .tv_sec = (time_t) j->i1, .tv_nsec = (long) j->i2 },
        { .tv_sec = (time_t) j->i3, .tv_nsec = (long) j->i4 },
      };
      RET(utimensat(AT_FDCWD, j->s1, tv, AT_SYMLINK_NOFOLLOW));
      break;
    }
    case SYS_MKNOD:
      RET(mknod(j->s1, (mode_t) j->i1, (dev_t) j->i2));
      if (j->res == 0 && (j->res = give_to_caller(-1, j->s1, j->i3, j->i4)) < 0) unlink(j->s1);
      break;
    case SYS_SETXATTR:
      RET(lsetxattr(j->s1, j->s2, j->buf, (size_t) j->i2, (int) j->i1));
      break;
    case SYS_REMOVEXATTR:
      RET(lremovexattr(j->s1, j->s2));
      break;
    default:
      j->res = -ENOSYS;
  }
}

static void complete (napi_env env, napi_status status, void *data) {
  job_t *j = data;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);

  napi_value cb, global, argv[1];
  int argc = 1;
  napi_get_reference_value(env, j->cb, &cb);
  napi_get_global(env, &global);
  napi_create_int64(env, status == napi_ok ? j->res : -EIO, &argv[0]);

  napi_value ignored;
  napi_make_callback(env, NULL, global, cb, argc, argv, &ignored);

  napi_delete_reference(env, j->cb);
  if (j->bufref != NULL) napi_delete_reference(env, j->bufref);
  napi_delete_async_work(env, j->work);
  free(j->s1);
  free(j->s2);
  free(j);
  napi_close_handle_scope(env, scope);
}

static napi_value sys_call (napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 9) {
    napi_throw_type_error(env, NULL, "sys_call takes 9 arguments");
    return NULL;
  }

  job_t *j = calloc(1, sizeof(job_t));
  if (j == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  int32_t op = 0;
  napi_get_value_int32(env, argv[0], &op);
  j->op = op;
  j->s1 = get_latin1(env, argv[1]);
  j->s2 = get_latin1(env, argv[2]);
  j->i1 = get_i64(env, argv[3]);
  j->i2 = get_i64(env, argv[4]);
  j->i3 = get_i64(env, argv[5]);
  j->i4 = get_i64(env, argv[6]);

  bool is_typed = false;
  napi_is_typedarray(env, argv[7], &is_typed);
  if (is_typed) {
    napi_typedarray_type type;
    size_t length, offset;
    napi_value ab;
    napi_get_typedarray_info(env, argv[7], &type, &length, &j->buf, &ab, &offset);
    // The thread pool writes into this memory: keep it alive until complete() runs.
    napi_create_reference(env, argv[7], 1, &j->bufref);
  }
  napi_create_reference(env, argv[8], 1, &j->cb);

  napi_value name;
  napi_create_string_utf8(env, "replicafs.sys", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return NULL;
}

void rfs_sysops_init (napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "sys_call", NAPI_AUTO_LENGTH, sys_call, NULL, &fn);
  napi_set_named_property(env, exports, "sys_call", fn);
}
