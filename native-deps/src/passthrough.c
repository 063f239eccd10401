// replicafs passthrough: the calls that change nothing, answered on libfuse's own worker
// threads straight from the source directory, without a round trip through the JS event
// loop. Only changes need JS (they are replicated); reads go straight to the source.
//
// Every path libfuse gives is relative to the mount's root ("/a/b"); the source is held open
// as a directory fd, and each call is the *at() form relative to it, so nothing is built by
// string concatenation except for the xattr calls, which have no *at() form.
//
// One mount per process: the root fd is process-wide.

#define _GNU_SOURCE
#define FUSE_USE_VERSION 29
#include "passthrough.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <linux/limits.h>
#include <stdint.h>
#include <unistd.h>

static int root_fd = -1;
static char root_path[PATH_MAX];
static size_t root_len = 0;

int rfs_passthrough_init (const char *root) {
  int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  root_len = strlen(root);
  if (root_len >= sizeof(root_path)) {
    close(fd);
    return -ENAMETOOLONG;
  }
  memcpy(root_path, root, root_len + 1);
  if (root_fd >= 0) close(root_fd);
  root_fd = fd;
  return 0;
}

// "/" is the root itself: the *at() calls then take AT_EMPTY_PATH.
static inline const char *rel (const char *path) {
  return path[1] == '\0' ? "" : path + 1;
}

static int full (char *out, size_t size, const char *path) {
  size_t len = strlen(path);
  if (root_len + len + 1 > size) return -ENAMETOOLONG;
  memcpy(out, root_path, root_len);
  memcpy(out + root_len, path, len + 1);
  return 0;
}

static int pt_getattr (const char *path, struct stat *st) {
  const char *r = rel(path);
  int flags = AT_SYMLINK_NOFOLLOW | (*r == '\0' ? AT_EMPTY_PATH : 0);
  return fstatat(root_fd, r, st, flags) < 0 ? -errno : 0;
}

static int pt_fgetattr (const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void) path;
  return fstat((int) fi->fh, st) < 0 ? -errno : 0;
}

static int pt_access (const char *path, int mask) {
  const char *r = rel(path);
  if (*r == '\0') r = ".";
  return faccessat(root_fd, r, mask, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int pt_readlink (const char *path, char *buf, size_t size) {
  if (size == 0) return -EINVAL;
  ssize_t n = readlinkat(root_fd, rel(path), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = '\0';
  return 0;
}

static int pt_read (const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi) {
  (void) path;
  ssize_t n = pread((int) fi->fh, buf, size, offset);
  return n < 0 ? -errno : (int) n;
}

static int pt_statfs (const char *path, struct statvfs *sv) {
  (void) path;
  return fstatvfs(root_fd, sv) < 0 ? -errno : 0;
}

static int pt_readdir (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *fi) {
  (void) offset;
  (void) fi;
  const char *r = rel(path);
  int fd = openat(root_fd, *r == '\0' ? "." : r, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    int err = errno;
    close(fd);
    return -err;
  }
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = e->d_ino;
    st.st_mode = (mode_t) DTTOIF(e->d_type);
    if (filler(buf, e->d_name, &st, 0)) break;
  }
  int err = errno;
  closedir(d);
  return -err;
}

static int pt_opendir (const char *path, struct fuse_file_info *fi) {
  const char *r = rel(path);
  int fd = openat(root_fd, *r == '\0' ? "." : r, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  fi->fh = (uint64_t) fd;
  return 0;
}

static int pt_releasedir (const char *path, struct fuse_file_info *fi) {
  (void) path;
  close((int) fi->fh);
  return 0;
}

static int pt_fsyncdir (const char *path, int datasync, struct fuse_file_info *fi) {
  (void) path;
  int fd = (int) fi->fh;
  return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

// trusted.* xattrs are for CAP_SYS_ADMIN only: the daemon has it, its callers may not.
static inline int hidden_from_caller (const char *name) {
  return strncmp(name, "trusted.", 8) == 0 && fuse_get_context()->uid != 0;
}

static int pt_getxattr (const char *path, const char *name, char *value, size_t size) {
  if (hidden_from_caller(name)) return -ENODATA;
  char p[PATH_MAX];
  int err = full(p, sizeof(p), path);
  if (err) return err;
  ssize_t n = lgetxattr(p, name, size ? value : NULL, size);
  return n < 0 ? -errno : (int) n;
}

static int pt_listxattr (const char *path, char *list, size_t size) {
  char p[PATH_MAX];
  int err = full(p, sizeof(p), path);
  if (err) return err;
  if (fuse_get_context()->uid == 0) {
    ssize_t n = llistxattr(p, size ? list : NULL, size);
    return n < 0 ? -errno : (int) n;
  }
  // Not root: the list without trusted.* names, filtered in a buffer of our own.
  char all[XATTR_LIST_MAX];
  ssize_t n = llistxattr(p, all, sizeof(all));
  if (n < 0) return -errno;
  size_t out = 0;
  for (ssize_t i = 0; i < n; ) {
    size_t len = strlen(all + i) + 1;
    if (!hidden_from_caller(all + i)) {
      if (size) {
        if (out + len > size) return -ERANGE;
        memcpy(list + out, all + i, len);
      }
      out += len;
    }
    i += (ssize_t) len;
  }
  return (int) out;
}

void rfs_passthrough_ops (struct fuse_operations *ops) {
  ops->getattr = pt_getattr;
  ops->fgetattr = pt_fgetattr;
  ops->access = pt_access;
  ops->readlink = pt_readlink;
  ops->read = pt_read;
  ops->statfs = pt_statfs;
  ops->readdir = pt_readdir;
  ops->opendir = pt_opendir;
  ops->releasedir = pt_releasedir;
  ops->fsyncdir = pt_fsyncdir;
  ops->getxattr = pt_getxattr;
  ops->listxattr = pt_listxattr;
}
