// replicafs local: every call is applied to the source directory here, on libfuse's own
// worker threads (several at once), never on the JS event loop. The calls that change
// nothing end here. A change that succeeded is then handed to fuse-native's dispatcher into
// JS, with its result, only when there are replicas: JS turns it into one Mutation and
// answers when replication allows (sync mode waits for the quorum). Without replicas, no
// call ever reaches JS, and the mount is a plain C passthrough.
//
// Every path libfuse gives is relative to the mount's root ("/a/b"); the source is held open
// as a directory fd, and each call is the *at() form relative to it, so nothing is built by
// string concatenation except for the calls with no *at() form (xattrs, truncate).
//
// Ordering: the kernel serializes conflicting calls (a directory's entries, a file's writes)
// before they reach us, and a change is handed to JS before its call answers, so JS sees
// dependent changes in the order the source applied them.
//
// One mount per process: the root fd is process-wide.

#define _GNU_SOURCE
#define FUSE_USE_VERSION 29
#include "local.h"
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <linux/limits.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static int root_fd = -1;
static char root_path[PATH_MAX];
static size_t root_len = 0;
static uid_t daemon_uid;
static gid_t daemon_gid;

// fuse-native's dispatchers into JS, for the changes; used only when replicating.
static struct fuse_operations js;
static int replicating = 0;

// Intents: the paths of each change, appended before it is applied and dropped once no change
// is in flight (each was journaled by JS in async mode, or applied by the quorum in sync mode). A kill between the local apply and
// the journal leaves them here; the restart resyncs those paths (src/replication/setup.ts).
static int intent_fd = -1;
static pthread_mutex_t intent_mu = PTHREAD_MUTEX_INITIALIZER;
static long intents_in_flight = 0;
static off_t intent_size = 0;
// What a cut of the log leaves in it (the files being written, below): the next cut waits
// for 4 KiB more than that.
static off_t intent_floor = 0;

// Files written through the mount and not released yet, by descriptor. Each of their changes
// may be journaled, and applied, but until the release the replicas do not hold them as the
// source does (a file written under a temp name is not published, the source's times are not
// set): the journal past a replica's cursor may hold nothing of them. So their paths outlive a
// cut of the log: the cut writes them again, under the names they have now.
static unsigned char *writing = NULL;
static size_t writing_len = 0;

// The source root as the kernel names it (/proc/self/fd's links start with it).
static char root_real[PATH_MAX];
static size_t root_real_len = 0;

// The intent appended last, while it is still in the file: a run of writes to one file
// appends its path once, not once per write.
static char last_intent[PATH_MAX];
static size_t last_intent_len = 0;

// One record of one or two paths into `buf` (room for 2 * PATH_MAX + 8): its length.
static size_t intent_record (char *buf, const char *a, size_t la, const char *b, size_t lb) {
  buf[0] = (char) (la & 0xff);
  buf[1] = (char) (la >> 8);
  memcpy(buf + 2, a, la);
  buf[2 + la] = (char) (lb & 0xff);
  buf[3 + la] = (char) (lb >> 8);
  if (lb) memcpy(buf + 4 + la, b, lb);
  return 4 + la + lb;
}

// One record appended to the log, intent_mu held.
static void intent_append (const char *a, size_t la, const char *b, size_t lb) {
  char buf[2 * PATH_MAX + 8];
  size_t len = intent_record(buf, a, la, b, lb);
  ssize_t n = write(intent_fd, buf, len);
  if (n == (ssize_t) len) {
    intent_size += n;
  } else if (n > 0 && ftruncate(intent_fd, intent_size) < 0) {
    // A torn record would end the log there at the next start, and the records after it
    // with it: it is cut off again (or, failing that, counted as there).
    intent_size += n;
  }
  // Only a whole record of one path is remembered: a torn one does not hold the path.
  last_intent_len = n == (ssize_t) (4 + la) && lb == 0 ? la : 0;
  if (last_intent_len > 0) memcpy(last_intent, a, la);
}

static void intent_begin (const char *a, const char *b) {
  if (intent_fd < 0 || a == NULL) return;
  size_t la = strnlen(a, PATH_MAX), lb = b == NULL ? 0 : strnlen(b, PATH_MAX);
  pthread_mutex_lock(&intent_mu);
  intents_in_flight++;
  // Already in the log (the last one appended, not cut since): nothing to write.
  if (!(lb == 0 && la > 0 && la == last_intent_len && memcmp(a, last_intent, la) == 0)) intent_append(a, la, b, lb);
  pthread_mutex_unlock(&intent_mu);
}

// `fd` is being written, intent_mu held. A table that cannot grow leaves it out: its path
// stays in the log until the next cut only.
static void writing_mark (int fd) {
  if ((size_t) fd >= writing_len) {
    size_t n = writing_len > 0 ? writing_len : 64;
    while (n <= (size_t) fd) n *= 2;
    unsigned char *w = realloc(writing, n);
    if (w == NULL) return;
    memset(w + writing_len, 0, n - writing_len);
    writing = w;
    writing_len = n;
  }
  writing[fd] = 1;
}

// The records of the files still being written, each under its name now, into `*out` (grown
// with realloc): their length. A file with no name now (unlinked), or whose name could not be
// told (another name removed under it, say), is left out.
static size_t writing_records (char **out) {
  size_t len = 0, cap = 0;
  for (size_t fd = 0; fd < writing_len; fd++) {
    if (!writing[fd]) continue;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%zu", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= (ssize_t) root_real_len || n >= (ssize_t) sizeof(target) - 1) continue;
    target[n] = '\0';
    if (memcmp(target, root_real, root_real_len) != 0 || target[root_real_len] != '/') continue;
    // The name must still be this file's ("x (deleted)" is none of its names).
    struct stat open_st, named_st;
    if (fstat((int) fd, &open_st) < 0 || fstatat(root_fd, target + root_real_len + 1, &named_st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    if (open_st.st_ino != named_st.st_ino || open_st.st_dev != named_st.st_dev) continue;
    size_t need = len + 4 + (size_t) n;
    if (need > cap) {
      size_t c = cap > 0 ? cap : 4096;
      while (c < need) c *= 2;
      char *grown = realloc(*out, c);
      if (grown == NULL) break;
      *out = grown;
      cap = c;
    }
    len += intent_record(*out + len, target + root_real_len, (size_t) n - root_real_len, NULL, 0);
  }
  return len;
}

static char intents_path[PATH_MAX];

// Cuts the log (nothing in flight), intent_mu held. The files still being written stay in it:
// written whole to a new file that replaces the log at once, so that a kill finds one log or
// the other, never a log without them.
static void intent_cut (void) {
  char *keep = NULL;
  size_t len = writing_records(&keep);
  if (len == 0) {
    if (ftruncate(intent_fd, 0) == 0) intent_size = 0;
  } else {
    char next[PATH_MAX + 8];
    snprintf(next, sizeof(next), "%s.new", intents_path);
    int fd = open(next, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0 && write(fd, keep, len) == (ssize_t) len && rename(next, intents_path) == 0) {
      close(intent_fd);
      intent_fd = fd;
      intent_size = (off_t) len;
    } else if (fd >= 0) {
      close(fd);
      unlink(next);
    }
  }
  free(keep);
  last_intent_len = 0;
  // Not cut (or cut to what is kept): the next try waits for 4 KiB more.
  intent_floor = intent_size;
}

// A change's end. `fd` (-1: none) is a descriptor it wrote through: written from then on.
static void intent_end_fd (const char *a, int fd) {
  if (intent_fd < 0 || (a == NULL && fd < 0)) return;
  pthread_mutex_lock(&intent_mu);
  if (fd >= 0) writing_mark(fd);
  // Nothing in flight: every intent so far is covered by the journal, but for the files
  // still being written.
  if (a != NULL && --intents_in_flight == 0 && intent_size > intent_floor + 4096) intent_cut();
  pthread_mutex_unlock(&intent_mu);
}

static void intent_end (const char *a) {
  intent_end_fd(a, -1);
}

// `fd` was released (its release journaled, or applied): its path need not outlive a cut.
static void writing_done (int fd) {
  if (intent_fd < 0) return;
  pthread_mutex_lock(&intent_mu);
  if ((size_t) fd < writing_len) writing[fd] = 0;
  pthread_mutex_unlock(&intent_mu);
}

#define WITH_INTENT(a, b, call) do { \
    intent_begin((a), (b)); \
    int res_ = (call); \
    intent_end(a); \
    return res_; \
  } while (0)

// The same, for a change made through a descriptor: `fi->fh` is written from then on, where
// `written` holds (of the call's result, res_). Released only through ap_release, which
// clears it for a writable descriptor: only those are marked.
#define WITH_INTENT_FD(a, call, written) do { \
    intent_begin((a), NULL); \
    int res_ = (call); \
    intent_end_fd((a), (written) ? (int) fi->fh : -1); \
    return res_; \
  } while (0)

// Latency of every call, per op (--metrics): counters in a buffer JS owns and reads at each
// scrape, added to with atomics by libfuse's threads. Layout: RFS_OPS rows of RFS_HIST_ROW
// words: RFS_BUCKETS counts (calls up to each bound, not cumulative), one for longer calls,
// the count, and the sum in nanoseconds. NULL: not timed (no clock read on the hot path).
static uint64_t *hist = NULL;
static const uint64_t bucket_ns[RFS_BUCKETS] = {
  10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 50000000, 100000000, 500000000, 1000000000, 5000000000
};

static inline uint64_t now_ns (void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t) t.tv_sec * 1000000000u + (uint64_t) t.tv_nsec;
}

static void record (int op, uint64_t ns) {
  uint64_t *row = hist + op * RFS_HIST_ROW;
  int b = 0;
  while (b < RFS_BUCKETS && ns > bucket_ns[b]) b++;
  __atomic_fetch_add(&row[b], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&row[RFS_BUCKETS + 1], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&row[RFS_BUCKETS + 2], ns, __ATOMIC_RELAXED);
}

// Replicating, JS copies every write's bytes: from the mount's records (async mode), into
// ssh2's packets, through the cipher. Each copy is a fresh buffer of about 128 KiB, and the
// garbage collector frees them by the tens of megabytes. With glibc's defaults each such
// batch goes back to the kernel, and the next copies fault in fresh zeroed pages again: a
// third of JS's time in a large write went there. Buffers up to 1 MiB come from the heap, and
// freed heap is kept up to 64 MiB, for the next copies.
#define HEAP_MMAP_THRESHOLD (1024 * 1024)
#define HEAP_TRIM_THRESHOLD (64 * 1024 * 1024)

static void heap_for_copies (void) {
  mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD);
  mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD);
}

int rfs_local_init (const char *root, int replicate, const char *intents, uint64_t *op_times, size_t op_times_words) {
  hist = op_times_words == RFS_OPS * RFS_HIST_ROW ? op_times : NULL;
  daemon_uid = geteuid();
  daemon_gid = getegid();
  replicating = replicate;
  if (replicate) heap_for_copies();
  if (intent_fd >= 0) close(intent_fd);
  intent_fd = -1;
  last_intent_len = 0;
  intent_floor = 0;
  if (writing_len > 0) memset(writing, 0, writing_len);
  if (intents != NULL && *intents) {
    if (strlen(intents) >= sizeof(intents_path)) return -ENAMETOOLONG;
    memcpy(intents_path, intents, strlen(intents) + 1);
    intent_fd = open(intents, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (intent_fd < 0) return -errno;
  }
  int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  root_len = strlen(root);
  if (root_len >= sizeof(root_path)) {
    close(fd);
    return -ENAMETOOLONG;
  }
  memcpy(root_path, root, root_len + 1);
  if (realpath(root, root_real) == NULL) memcpy(root_real, root, root_len + 1);
  root_real_len = strlen(root_real);
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

// Where a root-relative call goes: "." for the root itself (for calls without AT_EMPTY_PATH).
static inline const char *rel_dot (const char *path) {
  return path[1] == '\0' ? "." : path + 1;
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

// The generation mark (src/replication/fence.ts) is at the source's root: the mount neither
// shows it nor lets a caller make, change or remove anything under its name. One comparison
// per call, and only of paths that start with "/.".
static const char MARK[] = "/.replicafs-generation";
static inline int is_mark (const char *path) {
  return path[1] == '.' && strcmp(path, MARK) == 0;
}

static int pt_readdir (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *fi) {
  (void) offset;
  (void) fi;
  const char *r = rel(path);
  int at_root = *r == '\0';
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
    if (at_root && strcmp(e->d_name, MARK + 1) == 0) continue;
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

// ---- Changes ----------------------------------------------------------------------------

// Hand a change that succeeded locally to JS (when replicating), with its local result.
#define FORWARD(res, call) do { \
    if (!replicating) return (res); \
    rfs_set_result(res); \
    return call; \
  } while (0)

// The same, where the journal here takes it in async mode (journal.c): `record` is the
// parenthesized arguments of rfs_journal_record (of `fn`, for CHANGE_BY). The call answers
// once it is in the journal.
#define CHANGE_BY(res, fn, record, call) do { \
    if (!replicating) return (res); \
    if (rfs_journal_on()) { \
      int j_ = fn record; \
      if (j_ <= 0) return j_ < 0 ? j_ : (res); \
    } \
    rfs_set_result(res); \
    return call; \
  } while (0)
#define CHANGE(res, record, call) CHANGE_BY(res, rfs_journal_record, record, call)

static int writable (uint64_t fh) {
  int fl = fcntl((int) fh, F_GETFL);
  return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
}

// A new node belongs to the caller, not to the daemon. Group: a setgid parent's group wins,
// as on a local disk (the kernel gave it to the node already). chown clears the setuid and
// setgid bits, so a mode that has them is set again, as the caller asked for it.
static int give_to_caller (int fd, const char *path) {
  struct fuse_context *c = fuse_get_context();
  if (c->uid == daemon_uid && c->gid == daemon_gid) return 0;
  const char *r = rel(path);
  struct stat st, parent;
  int res = fd >= 0 ? fstat(fd, &st) : fstatat(root_fd, r, &st, AT_SYMLINK_NOFOLLOW);
  if (res < 0) return -errno;

  gid_t g = c->gid;
  const char *slash = strrchr(path, '/');
  size_t len = (size_t) (slash - path);
  char dir[PATH_MAX];
  if (len < sizeof(dir)) {
    memcpy(dir, path, len);
    dir[len] = '\0';
    if (fstatat(root_fd, len == 0 ? "" : dir + 1, &parent, AT_EMPTY_PATH) == 0 && (parent.st_mode & S_ISGID)) g = (gid_t) -1;
  }

  res = fd >= 0 ? fchown(fd, c->uid, g) : fchownat(root_fd, r, c->uid, g, AT_SYMLINK_NOFOLLOW);
  if (res < 0) return -errno;
  if (!S_ISLNK(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID))) {
    res = fd >= 0 ? fchmod(fd, st.st_mode & 07777) : fchmodat(root_fd, r, st.st_mode & 07777, 0);
    if (res < 0) return -errno;
  }
  return 0;
}

// A create or truncating open whose record the journal file refused answers EIO, and the
// kernel sends no release for it: the replicas get one anyway (queued, as the record was), so
// that they publish the file the source keeps.
static void orphaned (const char *path, int fd) {
  if (rfs_journal_record("release", path, NULL, NULL, "\"fh\":%d,\"mtime\":0,\"atime\":0", fd) != 0) {}
}

static int ap_open_ (const char *path, struct fuse_file_info *fi) {
  int fd = openat(root_fd, rel_dot(path), fi->flags | O_CLOEXEC);
  if (fd < 0) return -errno;
  fi->fh = (uint64_t) fd;
  // Only an open that truncates changes something.
  if (!replicating || !(fi->flags & O_TRUNC) || (fi->flags & O_ACCMODE) == O_RDONLY) return 0;
  // Replicas write a truncated file under a temp name unless it has other names (hard links)
  // now, when the source truncated it: later changes cannot make that decision again.
  struct stat st;
  uint32_t links = fstat(fd, &st) == 0 ? (uint32_t) st.st_nlink : 1;
  int res = 1;
  if (rfs_journal_on()) {
    res = rfs_journal_record("open-truncate", path, NULL, NULL, "\"fh\":%d,\"links\":%" PRIu32, fd, links);
    if (res < 0) orphaned(path, fd);
  }
  if (res == 1) {
    rfs_set_extra(links, 0);
    rfs_set_result(fd);
    res = js.open(path, fi);
  }
  if (res < 0) close(fd);
  return res;
}

static int ap_create_ (const char *path, mode_t mode, struct fuse_file_info *fi) {
  const char *r = rel(path);
  struct fuse_context *c = fuse_get_context();
  int mine = c->uid == daemon_uid && c->gid == daemon_gid;
  int fd = -1;
  // Only a node this call creates changes owner: an existing file opened with O_CREAT keeps
  // its owner. O_EXCL tells the two apart without a race.
  for (int tries = 0; tries < 8 && fd < 0; tries++) {
    fd = openat(root_fd, r, fi->flags | O_CREAT | O_CLOEXEC | (mine ? 0 : O_EXCL), mode);
    if (fd >= 0) {
      int err = mine ? 0 : give_to_caller(fd, path);
      if (err < 0) {
        close(fd);
        unlinkat(root_fd, r, 0);
        return err;
      }
      break;
    }
    if (mine || errno != EEXIST || (fi->flags & O_EXCL)) return -errno;
    fd = openat(root_fd, r, (fi->flags & ~O_CREAT) | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) return -errno;
  }
  if (fd < 0) return -EAGAIN;
  fi->fh = (uint64_t) fd;
  if (!replicating) return 0;
  int res = 1;
  if (rfs_journal_on()) {
    res = rfs_journal_record("create", path, NULL, NULL, "\"mode\":%u,\"flags\":%d,\"fh\":%d", (unsigned) mode, fi->flags, fd);
    if (res < 0) orphaned(path, fd);
  }
  if (res == 1) {
    rfs_set_result(fd);
    res = js.create(path, mode, fi);
  }
  if (res < 0) close(fd);
  return res;
}

static int ap_write_ (const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  ssize_t n = pwrite((int) fi->fh, buf, size, off);
  if (n < 0) return -errno;
  if (n == 0) return 0;
  long links = -1;
  if (replicating) {
    // With O_APPEND the data went to the end of the file, wherever the kernel thought that
    // was (its size for this name can be stale when another name of a hard link grew it).
    // In async mode the record also says how many names the file has (journal.h).
    int fl = fcntl((int) fi->fh, F_GETFL);
    int append = fl >= 0 && (fl & O_APPEND);
    struct stat st;
    if ((append || rfs_journal_on()) && fstat((int) fi->fh, &st) == 0) {
      if (append && st.st_size >= n) off = st.st_size - n;
      links = (long) st.st_nlink;
    }
  }
  CHANGE_BY((int) n, rfs_journal_write, (path, buf, (size_t) n, links, "\"fh\":%" PRIu64 ",\"offset\":%" PRId64, fi->fh, (int64_t) off),
    js.write(path, buf, (size_t) n, off, fi));
}

static int ap_flush (const char *path, struct fuse_file_info *fi) {
  // Writes went out with pwrite: nothing is buffered here. close(2) waits for this answer,
  // not release's, so replicas publish a file written under a temp name now.
  if (!replicating || !writable(fi->fh)) return 0;
  CHANGE(0, ("flush", path, NULL, NULL, "\"fh\":%" PRIu64, fi->fh), js.flush(path, fi));
}

static int ap_release (const char *path, struct fuse_file_info *fi) {
  // The descriptor stays open until JS has the release: its number cannot be reused by
  // another open (and confuse the replicas' handle tables) before then.
  if (replicating && writable(fi->fh)) {
    // The file's times as its writes left them: replicas apply the writes later (async) or
    // in another second, so they take these rather than their own clock's.
    struct stat st;
    uint32_t mtime = 0, atime = 0;
    if (fstat((int) fi->fh, &st) == 0) {
      mtime = (uint32_t) st.st_mtim.tv_sec;
      atime = (uint32_t) st.st_atim.tv_sec;
    }
    int res = 1;
    if (rfs_journal_on()) res = rfs_journal_record("release", path, NULL, NULL, "\"fh\":%" PRIu64 ",\"mtime\":%" PRIu32 ",\"atime\":%" PRIu32, fi->fh, mtime, atime);
    if (res == 1) {
      rfs_set_extra(mtime, atime);
      rfs_set_result(0);
      js.release(path, fi);
    }
    writing_done((int) fi->fh);
  }
  close((int) fi->fh);
  return 0;
}

static int ap_fsync (const char *path, int datasync, struct fuse_file_info *fi) {
  int fd = (int) fi->fh;
  if ((datasync ? fdatasync(fd) : fsync(fd)) < 0) return -errno;
  FORWARD(0, js.fsync(path, datasync, fi));
}

static int ap_truncate_ (const char *path, off_t size) {
  char p[PATH_MAX];
  int err = full(p, sizeof(p), path);
  if (err) return err;
  if (truncate(p, size) < 0) return -errno;
  CHANGE(0, ("truncate", path, NULL, NULL, "\"fh\":null,\"size\":%" PRId64, (int64_t) size), js.truncate(path, size));
}

static int ap_ftruncate_ (const char *path, off_t size, struct fuse_file_info *fi) {
  if (ftruncate((int) fi->fh, size) < 0) return -errno;
  CHANGE(0, ("truncate", path, NULL, NULL, "\"fh\":%" PRIu64 ",\"size\":%" PRId64, fi->fh, (int64_t) size), js.ftruncate(path, size, fi));
}

static int ap_mkdir_ (const char *path, mode_t mode) {
  if (mkdirat(root_fd, rel(path), mode) < 0) return -errno;
  int err = give_to_caller(-1, path);
  if (err < 0) {
    unlinkat(root_fd, rel(path), AT_REMOVEDIR);
    return err;
  }
  CHANGE(0, ("mkdir", path, NULL, NULL, "\"mode\":%u", (unsigned) mode), js.mkdir(path, mode));
}

static int ap_mknod_ (const char *path, mode_t mode, dev_t dev) {
  if (mknodat(root_fd, rel(path), mode, dev) < 0) return -errno;
  int err = give_to_caller(-1, path);
  if (err < 0) {
    unlinkat(root_fd, rel(path), 0);
    return err;
  }
  CHANGE(0, ("mknod", path, NULL, NULL, "\"mode\":%u,\"rdev\":%" PRIu64, (unsigned) mode, (uint64_t) dev), js.mknod(path, mode, dev));
}

static int ap_symlink_ (const char *target, const char *path) {
  if (symlinkat(target, root_fd, rel(path)) < 0) return -errno;
  int err = give_to_caller(-1, path);
  if (err < 0) {
    unlinkat(root_fd, rel(path), 0);
    return err;
  }
  CHANGE(0, ("symlink", path, "target", target, NULL), js.symlink(target, path));
}

static int ap_link_ (const char *from, const char *to) {
  if (linkat(root_fd, rel(from), root_fd, rel(to), 0) < 0) return -errno;
  CHANGE(0, ("link", to, "from", from, NULL), js.link(from, to));
}

static int ap_rename_ (const char *from, const char *to) {
  if (renameat(root_fd, rel_dot(from), root_fd, rel_dot(to)) < 0) return -errno;
  CHANGE(0, ("rename", to, "from", from, NULL), js.rename(from, to));
}

static int ap_unlink_ (const char *path) {
  if (unlinkat(root_fd, rel(path), 0) < 0) return -errno;
  CHANGE(0, ("unlink", path, NULL, NULL, NULL), js.unlink(path));
}

static int ap_rmdir_ (const char *path) {
  if (unlinkat(root_fd, rel_dot(path), AT_REMOVEDIR) < 0) return -errno;
  CHANGE(0, ("rmdir", path, NULL, NULL, NULL), js.rmdir(path));
}

static int ap_chmod_ (const char *path, mode_t mode) {
  if (fchmodat(root_fd, rel_dot(path), mode, 0) < 0) return -errno;
  CHANGE(0, ("chmod", path, NULL, NULL, "\"mode\":%u", (unsigned) mode), js.chmod(path, mode));
}

static int ap_chown_ (const char *path, uid_t uid, gid_t gid) {
  const char *r = rel(path);
  if (fchownat(root_fd, r, uid, gid, AT_SYMLINK_NOFOLLOW | (*r == '\0' ? AT_EMPTY_PATH : 0)) < 0) return -errno;
  CHANGE(0, ("chown", path, NULL, NULL, "\"owner\":%" PRIu32 ",\"group\":%" PRIu32, (uint32_t) uid, (uint32_t) gid), js.chown(path, uid, gid));
}

static int ap_utimens_ (const char *path, const struct timespec tv[2]) {
  if (utimensat(root_fd, rel_dot(path), tv, AT_SYMLINK_NOFOLLOW) < 0) return -errno;
  CHANGE(0, ("utimens", path, NULL, NULL, "\"atime\":{\"sec\":%" PRId64 ",\"nsec\":%ld},\"mtime\":{\"sec\":%" PRId64 ",\"nsec\":%ld}",
    (int64_t) tv[0].tv_sec, tv[0].tv_nsec, (int64_t) tv[1].tv_sec, tv[1].tv_nsec), js.utimens(path, tv));
}

// Setting or removing the access ACL sets the mode bits (coreutils' cp -a and install set a
// file's mode that way, as a minimal ACL, not with chmod). xattrs stay local, so replicas get
// the mode the source now has, as a chmod.
static int acl_mode (const char *name) {
  return strcmp(name, "system.posix_acl_access") == 0;
}

static int mode_as_chmod (const char *path) {
  struct stat st;
  if (fstatat(root_fd, rel_dot(path), &st, AT_SYMLINK_NOFOLLOW) < 0) return -errno;
  mode_t mode = st.st_mode & 07777;
  CHANGE(0, ("chmod", path, NULL, NULL, "\"mode\":%u", (unsigned) mode), js.chmod(path, mode));
}

static int ap_setxattr_ (const char *path, const char *name, const char *value, size_t size, int flags) {
  if (hidden_from_caller(name)) return -EPERM;
  char p[PATH_MAX];
  int err = full(p, sizeof(p), path);
  if (err) return err;
  if (lsetxattr(p, name, value, size, flags) < 0) return -errno;
  if (acl_mode(name)) return mode_as_chmod(path);
  FORWARD(0, js.setxattr(path, name, value, size, flags));
}

static int ap_removexattr_ (const char *path, const char *name) {
  if (hidden_from_caller(name)) return -EPERM;
  char p[PATH_MAX];
  int err = full(p, sizeof(p), path);
  if (err) return err;
  if (lremovexattr(p, name) < 0) return -errno;
  if (acl_mode(name)) return mode_as_chmod(path);
  FORWARD(0, js.removexattr(path, name));
}

// Each change: its intent first, then the change.
static int ap_setxattr (const char *path, const char *name, const char *value, size_t size, int flags) {
  WITH_INTENT(acl_mode(name) ? path : NULL, NULL, ap_setxattr_(path, name, value, size, flags));
}

static int ap_removexattr (const char *path, const char *name) {
  WITH_INTENT(acl_mode(name) ? path : NULL, NULL, ap_removexattr_(path, name));
}

static int ap_open (const char *path, struct fuse_file_info *fi) {
  const char *a = (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY ? path : NULL;
  if (a == NULL) return ap_open_(path, fi);
  WITH_INTENT_FD(a, ap_open_(path, fi), res_ >= 0);
}

static int ap_create (const char *path, mode_t mode, struct fuse_file_info *fi) {
  WITH_INTENT_FD(path, ap_create_(path, mode, fi), res_ >= 0 && (fi->flags & O_ACCMODE) != O_RDONLY);
}

static int ap_write (const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  // Marked where the source took the bytes, whatever the replicas said (EIO): not where the
  // descriptor is read-only (EBADF).
  WITH_INTENT_FD(path, ap_write_(path, buf, size, off, fi), res_ >= 0 || res_ == -EIO);
}

static int ap_truncate (const char *path, off_t size) {
  WITH_INTENT(path, NULL, ap_truncate_(path, size));
}

static int ap_ftruncate (const char *path, off_t size, struct fuse_file_info *fi) {
  WITH_INTENT_FD(path, ap_ftruncate_(path, size, fi), res_ >= 0 || res_ == -EIO);
}

static int ap_mkdir (const char *path, mode_t mode) {
  WITH_INTENT(path, NULL, ap_mkdir_(path, mode));
}

static int ap_mknod (const char *path, mode_t mode, dev_t dev) {
  WITH_INTENT(path, NULL, ap_mknod_(path, mode, dev));
}

static int ap_symlink (const char *target, const char *path) {
  WITH_INTENT(path, NULL, ap_symlink_(target, path));
}

static int ap_link (const char *from, const char *to) {
  WITH_INTENT(to, NULL, ap_link_(from, to));
}

static int ap_rename (const char *from, const char *to) {
  WITH_INTENT(from, to, ap_rename_(from, to));
}

static int ap_unlink (const char *path) {
  WITH_INTENT(path, NULL, ap_unlink_(path));
}

static int ap_rmdir (const char *path) {
  WITH_INTENT(path, NULL, ap_rmdir_(path));
}

static int ap_chmod (const char *path, mode_t mode) {
  WITH_INTENT(path, NULL, ap_chmod_(path, mode));
}

static int ap_chown (const char *path, uid_t uid, gid_t gid) {
  WITH_INTENT(path, NULL, ap_chown_(path, uid, gid));
}

static int ap_utimens (const char *path, const struct timespec tv[2]) {
  WITH_INTENT(path, NULL, ap_utimens_(path, tv));
}

// One timed wrapper per op: the call libfuse's thread makes, between two clock reads.
#define TIMED(op, name, params, args) \
  static int (*orig_##name) params; \
  static int timed_##name params { \
    uint64_t t0 = now_ns(); \
    int r = orig_##name args; \
    record(op, now_ns() - t0); \
    return r; \
  }

TIMED(RFS_OP_GETATTR, getattr, (const char *a, struct stat *b), (a, b))
TIMED(RFS_OP_FGETATTR, fgetattr, (const char *a, struct stat *b, struct fuse_file_info *c), (a, b, c))
TIMED(RFS_OP_ACCESS, access, (const char *a, int b), (a, b))
TIMED(RFS_OP_READLINK, readlink, (const char *a, char *b, size_t c), (a, b, c))
TIMED(RFS_OP_READ, read, (const char *a, char *b, size_t c, off_t d, struct fuse_file_info *e), (a, b, c, d, e))
TIMED(RFS_OP_STATFS, statfs, (const char *a, struct statvfs *b), (a, b))
TIMED(RFS_OP_READDIR, readdir, (const char *a, void *b, fuse_fill_dir_t c, off_t d, struct fuse_file_info *e), (a, b, c, d, e))
TIMED(RFS_OP_OPENDIR, opendir, (const char *a, struct fuse_file_info *b), (a, b))
TIMED(RFS_OP_RELEASEDIR, releasedir, (const char *a, struct fuse_file_info *b), (a, b))
TIMED(RFS_OP_FSYNCDIR, fsyncdir, (const char *a, int b, struct fuse_file_info *c), (a, b, c))
TIMED(RFS_OP_GETXATTR, getxattr, (const char *a, const char *b, char *c, size_t d), (a, b, c, d))
TIMED(RFS_OP_LISTXATTR, listxattr, (const char *a, char *b, size_t c), (a, b, c))
TIMED(RFS_OP_OPEN, open, (const char *a, struct fuse_file_info *b), (a, b))
TIMED(RFS_OP_CREATE, create, (const char *a, mode_t b, struct fuse_file_info *c), (a, b, c))
TIMED(RFS_OP_WRITE, write, (const char *a, const char *b, size_t c, off_t d, struct fuse_file_info *e), (a, b, c, d, e))
TIMED(RFS_OP_FLUSH, flush, (const char *a, struct fuse_file_info *b), (a, b))
TIMED(RFS_OP_RELEASE, release, (const char *a, struct fuse_file_info *b), (a, b))
TIMED(RFS_OP_FSYNC, fsync, (const char *a, int b, struct fuse_file_info *c), (a, b, c))
TIMED(RFS_OP_TRUNCATE, truncate, (const char *a, off_t b), (a, b))
TIMED(RFS_OP_FTRUNCATE, ftruncate, (const char *a, off_t b, struct fuse_file_info *c), (a, b, c))
TIMED(RFS_OP_MKDIR, mkdir, (const char *a, mode_t b), (a, b))
TIMED(RFS_OP_MKNOD, mknod, (const char *a, mode_t b, dev_t c), (a, b, c))
TIMED(RFS_OP_SYMLINK, symlink, (const char *a, const char *b), (a, b))
TIMED(RFS_OP_LINK, link, (const char *a, const char *b), (a, b))
TIMED(RFS_OP_RENAME, rename, (const char *a, const char *b), (a, b))
TIMED(RFS_OP_UNLINK, unlink, (const char *a), (a))
TIMED(RFS_OP_RMDIR, rmdir, (const char *a), (a))
TIMED(RFS_OP_CHMOD, chmod, (const char *a, mode_t b), (a, b))
TIMED(RFS_OP_CHOWN, chown, (const char *a, uid_t b, gid_t c), (a, b, c))
TIMED(RFS_OP_UTIMENS, utimens, (const char *a, const struct timespec b[2]), (a, b))
TIMED(RFS_OP_SETXATTR, setxattr, (const char *a, const char *b, const char *c, size_t d, int e), (a, b, c, d, e))
TIMED(RFS_OP_REMOVEXATTR, removexattr, (const char *a, const char *b), (a, b))

// Calls on the mark's name: as if there were nothing there (ENOENT), or refused (EPERM) where
// they would make something under it.
#define GUARD(name, params, args, check) \
  static int (*unguarded_##name) params; \
  static int guarded_##name params { \
    check \
    return unguarded_##name args; \
  }
#define ABSENT(p) if (is_mark(p)) return -ENOENT;
#define REFUSED(p) if (is_mark(p)) return -EPERM;

GUARD(getattr, (const char *a, struct stat *b), (a, b), ABSENT(a))
GUARD(access, (const char *a, int b), (a, b), ABSENT(a))
GUARD(readlink, (const char *a, char *b, size_t c), (a, b, c), ABSENT(a))
GUARD(opendir, (const char *a, struct fuse_file_info *b), (a, b), ABSENT(a))
GUARD(getxattr, (const char *a, const char *b, char *c, size_t d), (a, b, c, d), ABSENT(a))
GUARD(listxattr, (const char *a, char *b, size_t c), (a, b, c), ABSENT(a))
GUARD(open, (const char *a, struct fuse_file_info *b), (a, b), ABSENT(a))
GUARD(create, (const char *a, mode_t b, struct fuse_file_info *c), (a, b, c), REFUSED(a))
GUARD(truncate, (const char *a, off_t b), (a, b), ABSENT(a))
GUARD(mkdir, (const char *a, mode_t b), (a, b), REFUSED(a))
GUARD(mknod, (const char *a, mode_t b, dev_t c), (a, b, c), REFUSED(a))
GUARD(symlink, (const char *a, const char *b), (a, b), REFUSED(b))
GUARD(link, (const char *a, const char *b), (a, b), ABSENT(a) REFUSED(b))
GUARD(rename, (const char *a, const char *b), (a, b), ABSENT(a) REFUSED(b))
GUARD(unlink, (const char *a), (a), ABSENT(a))
GUARD(rmdir, (const char *a), (a), ABSENT(a))
GUARD(chmod, (const char *a, mode_t b), (a, b), ABSENT(a))
GUARD(chown, (const char *a, uid_t b, gid_t c), (a, b, c), ABSENT(a))
GUARD(utimens, (const char *a, const struct timespec b[2]), (a, b), ABSENT(a))
GUARD(setxattr, (const char *a, const char *b, const char *c, size_t d, int e), (a, b, c, d, e), ABSENT(a))
GUARD(removexattr, (const char *a, const char *b), (a, b), ABSENT(a))

static void guard_ops (struct fuse_operations *ops) {
#define WRAP(name) unguarded_##name = ops->name; ops->name = guarded_##name;
  WRAP(getattr) WRAP(access) WRAP(readlink) WRAP(opendir) WRAP(getxattr) WRAP(listxattr)
  WRAP(open) WRAP(create) WRAP(truncate) WRAP(mkdir) WRAP(mknod) WRAP(symlink) WRAP(link)
  WRAP(rename) WRAP(unlink) WRAP(rmdir) WRAP(chmod) WRAP(chown) WRAP(utimens)
  WRAP(setxattr) WRAP(removexattr)
#undef WRAP
}

static void time_ops (struct fuse_operations *ops) {
#define WRAP(name) orig_##name = ops->name; ops->name = timed_##name;
  WRAP(getattr) WRAP(fgetattr) WRAP(access) WRAP(readlink) WRAP(read) WRAP(statfs)
  WRAP(readdir) WRAP(opendir) WRAP(releasedir) WRAP(fsyncdir) WRAP(getxattr) WRAP(listxattr)
  WRAP(open) WRAP(create) WRAP(write) WRAP(flush) WRAP(release) WRAP(fsync)
  WRAP(truncate) WRAP(ftruncate) WRAP(mkdir) WRAP(mknod) WRAP(symlink) WRAP(link)
  WRAP(rename) WRAP(unlink) WRAP(rmdir) WRAP(chmod) WRAP(chown) WRAP(utimens)
  WRAP(setxattr) WRAP(removexattr)
#undef WRAP
}

void rfs_local_ops (struct fuse_operations *ops) {
  js = *ops;
  ops->open = ap_open;
  ops->create = ap_create;
  ops->write = ap_write;
  ops->flush = ap_flush;
  ops->release = ap_release;
  ops->fsync = ap_fsync;
  ops->truncate = ap_truncate;
  ops->ftruncate = ap_ftruncate;
  ops->mkdir = ap_mkdir;
  ops->mknod = ap_mknod;
  ops->symlink = ap_symlink;
  ops->link = ap_link;
  ops->rename = ap_rename;
  ops->unlink = ap_unlink;
  ops->rmdir = ap_rmdir;
  ops->chmod = ap_chmod;
  ops->chown = ap_chown;
  ops->utimens = ap_utimens;
  ops->setxattr = ap_setxattr;
  ops->removexattr = ap_removexattr;
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
  guard_ops(ops);
  if (hist != NULL) time_ops(ops);
}
