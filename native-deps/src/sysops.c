// replicafs sysops: the syscalls applied to the source directory, on libuv's thread pool.
//
// Why not node:fs: it has no mknod (fifos), no xattrs, no utimensat with nanoseconds,
// UTIME_NOW or UTIME_OMIT, returns times as doubles (or costly BigInts), and takes string
// paths as UTF-8 (a name with invalid UTF-8 bytes cannot be spelled). Here every path is a
// latin1 JS string (one char per byte), every result is >= 0 or -errno, and stat results are
// written straight into the Uint32Array layout that the FUSE binding reads.
//
// One entry point: sys_call(op, s1, s2, i1, i2, i3, i4, buf, cb). cb(res[, value]).

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

enum {
  SYS_OPEN = 0, SYS_CLOSE, SYS_PREAD, SYS_PWRITE, SYS_FSYNC, SYS_FTRUNCATE, SYS_TRUNCATE,
  SYS_LSTAT, SYS_FSTAT, SYS_STATVFS, SYS_ACCESS, SYS_READDIR, SYS_READLINK, SYS_UNLINK,
  SYS_RMDIR, SYS_MKDIR, SYS_RENAME, SYS_LINK, SYS_SYMLINK, SYS_CHMOD, SYS_LCHOWN,
  SYS_UTIMENS, SYS_MKNOD, SYS_SETXATTR, SYS_GETXATTR, SYS_LISTXATTR, SYS_REMOVEXATTR,
  SYS_OPENDIR, SYS_FCHOWN, SYS_OP_COUNT
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
  char *out;      // readdir: NUL-separated names; readlink: the target
  size_t outlen;
  uint32_t count; // readdir: number of names
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

static void put_u64 (uint32_t *p, uint64_t n) {
  p[0] = (uint32_t) n;
  p[1] = (uint32_t) (n >> 32);
}

static void put_stat (uint32_t *p, const struct stat *st) {
  p[0] = st->st_mode;
  p[1] = st->st_uid;
  p[2] = st->st_gid;
  put_u64(p + 3, st->st_size);
  p[5] = (uint32_t) st->st_dev;
  p[6] = st->st_nlink;
  put_u64(p + 7, st->st_ino);
  p[9] = (uint32_t) st->st_rdev;
  p[10] = st->st_blksize;
  put_u64(p + 11, st->st_blocks);
  put_u64(p + 13, (uint64_t) st->st_atim.tv_sec);
  p[15] = st->st_atim.tv_nsec;
  put_u64(p + 16, (uint64_t) st->st_mtim.tv_sec);
  p[18] = st->st_mtim.tv_nsec;
  put_u64(p + 19, (uint64_t) st->st_ctim.tv_sec);
  p[21] = st->st_ctim.tv_nsec;
}

static void put_statvfs (uint32_t *p, const struct statvfs *sv) {
  p[0] = sv->f_bsize;
  p[1] = sv->f_frsize;
  put_u64(p + 2, sv->f_blocks);
  put_u64(p + 4, sv->f_bfree);
  put_u64(p + 6, sv->f_bavail);
  put_u64(p + 8, sv->f_files);
  put_u64(p + 10, sv->f_ffree);
  put_u64(p + 12, sv->f_favail);
  p[14] = (uint32_t) sv->f_fsid;
  p[15] = sv->f_flag;
  p[16] = sv->f_namemax;
}

#define RET(expr) do { j->res = (expr) < 0 ? -errno : 0; } while (0)

// A new node belongs to the caller, not to the daemon. Group: a setgid parent's group wins,
// as on a local disk; the kernel already gave it to the node, so it differs from ours.
static int give_to_caller (int fd, const char *path, int64_t uid, int64_t gid) {
  if (uid < 0) return 0;
  struct stat st;
  int r = fd >= 0 ? fstat(fd, &st) : lstat(path, &st);
  if (r < 0) return -errno;
  gid_t g = st.st_gid != getegid() ? (gid_t) -1 : (gid_t) gid;
  r = fd >= 0 ? fchown(fd, (uid_t) uid, g) : lchown(path, (uid_t) uid, g);
  return r < 0 ? -errno : 0;
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
      int r = give_to_caller(fd, NULL, j->i3, j->i4);
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

static void read_dir (job_t *j) {
  DIR *d = opendir(j->s1);
  if (d == NULL) {
    j->res = -errno;
    return;
  }
  size_t cap = 4096, len = 0;
  char *out = malloc(cap);
  uint32_t count = 0;
  struct dirent *e;
  errno = 0;
  while (out != NULL && (e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name) + 1;
    if (len + n > cap) {
      cap *= 2;
      char *grown = realloc(out, cap);
      if (grown == NULL) {
        free(out);
        out = NULL;
        break;
      }
      out = grown;
    }
    memcpy(out + len, e->d_name, n);
    len += n;
    count++;
  }
  int err = out == NULL ? ENOMEM : errno;
  closedir(d);
  if (err) {
    free(out);
    j->res = -err;
    return;
  }
  j->out = out;
  j->outlen = len;
  j->count = count;
  j->res = 0;
}

static void execute (napi_env env, void *data) {
  job_t *j = data;
  struct stat st;
  struct statvfs sv;
  int fd;
  ssize_t n;

  switch (j->op) {
    case SYS_OPEN:
      open_as_caller(j);
      break;
    case SYS_OPENDIR:
      fd = open(j->s1, O_RDONLY | O_DIRECTORY);
      j->res = fd < 0 ? -errno : fd;
      break;
    case SYS_CLOSE:
      RET(close((int) j->i1));
      break;
    case SYS_PREAD:
      n = pread((int) j->i1, j->buf, (size_t) j->i2, (off_t) j->i3);
      j->res = n < 0 ? -errno : n;
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
    case SYS_LSTAT:
      RET(lstat(j->s1, &st));
      if (j->res == 0) put_stat(j->buf, &st);
      break;
    case SYS_FSTAT:
      RET(fstat((int) j->i1, &st));
      if (j->res == 0) put_stat(j->buf, &st);
      break;
    case SYS_STATVFS:
      RET(statvfs(j->s1, &sv));
      if (j->res == 0) put_statvfs(j->buf, &sv);
      break;
    case SYS_ACCESS:
      RET(faccessat(AT_FDCWD, j->s1, (int) j->i1, AT_SYMLINK_NOFOLLOW));
      break;
    case SYS_READDIR:
      read_dir(j);
      break;
    case SYS_READLINK: {
      char *target = malloc(PATH_MAX + 1);
      if (target == NULL) {
        j->res = -ENOMEM;
        break;
      }
      n = readlink(j->s1, target, PATH_MAX);
      if (n < 0) {
        j->res = -errno;
        free(target);
        break;
      }
      j->out = target;
      j->outlen = (size_t) n;
      j->res = 0;
      break;
    }
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
    case SYS_FCHOWN:
      RET(fchown((int) j->i1, (uid_t) j->i2, (gid_t) j->i3));
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
    case SYS_GETXATTR:
      n = lgetxattr(j->s1, j->s2, (size_t) j->i2 ? j->buf : NULL, (size_t) j->i2);
      j->res = n < 0 ? -errno : n;
      break;
    case SYS_LISTXATTR:
      n = llistxattr(j->s1, (size_t) j->i2 ? j->buf : NULL, (size_t) j->i2);
      j->res = n < 0 ? -errno : n;
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

  napi_value cb, global, argv[2];
  int argc = 1;
  napi_get_reference_value(env, j->cb, &cb);
  napi_get_global(env, &global);
  napi_create_int64(env, status == napi_ok ? j->res : -EIO, &argv[0]);

  if (j->res == 0 && j->out != NULL) {
    argc = 2;
    if (j->op == SYS_READDIR) {
      napi_create_array_with_length(env, j->count, &argv[1]);
      const char *p = j->out;
      for (uint32_t i = 0; i < j->count; i++) {
        size_t len = strlen(p);
        napi_value name;
        napi_create_string_latin1(env, p, len, &name);
        napi_set_element(env, argv[1], i, name);
        p += len + 1;
      }
    } else {
      napi_create_string_latin1(env, j->out, j->outlen, &argv[1]);
    }
  }

  napi_value ignored;
  napi_make_callback(env, NULL, global, cb, argc, argv, &ignored);

  napi_delete_reference(env, j->cb);
  if (j->bufref != NULL) napi_delete_reference(env, j->bufref);
  napi_delete_async_work(env, j->work);
  free(j->s1);
  free(j->s2);
  free(j->out);
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
