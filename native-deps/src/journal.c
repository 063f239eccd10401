// replicafs journal appends on libfuse's threads (async mode): a change through the mount
// (a write, a create, a rename...) is recorded in the journal here, right after local.c
// applied it to the source, and answers without a trip into JS. Each record is the one
// src/replication/journal.ts writes (same framing, same checksum, a JSON header), except that
// a write's bytes stay out of the file: the source holds them, and a replay reads them there.
// JS takes the records as they come, a write's bytes with it (woken through a thread-safe
// function), and queues them for the replicas' shippers, in seq order.
//
// One counter of seqs for JS's changes and these: JS takes its own from here too, and takes
// every record appended so far with it, so that its queues stay in seq order. The appends
// and the counter share a mutex: in the file, C's records are in seq order.
//
// JS's own records go through here too (a write(2) into the page cache, under the same
// mutex): one writer of the file, and no trip through the thread pool for each change.
//
// Sealing (a full journal.log renamed aside) and the cut to zero (every replica applied
// everything) are done here too, under the same mutex, so that no record lands in a file
// under a name that says it holds only older ones, and no record is cut that JS has not seen.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdarg.h>
#include <node_api.h>
#define FUSE_USE_VERSION 29
#include <fuse.h>

#include "journal.h"

// zlib's, as the node binary exports them: the checksum node:zlib's crc32 gives JS.
extern unsigned long crc32 (unsigned long crc, const unsigned char *buf, unsigned int len);

// A record as it went to the file, kept for JS until it takes it: crc32 | len | payload,
// then a write's bytes (which the file does not hold).
struct rec {
  struct rec *next;
  size_t len;
  // A buffer of POOL_BYTES, of the pool: it goes back there (or is freed, the pool being
  // full) as soon as take() has copied it for JS.
  int pooled;
  unsigned char bytes[];
};

// The records of big writes reuse their buffers: a fresh one of 128 KiB for every write is a
// fresh mapping whose 32 pages fault in while the writer waits. JS takes a copy, and the
// buffer comes back here. Up to POOL_MAX buffers wait here; a write that needs more (or a
// long path) takes malloc's.
#define POOL_BYTES (sizeof(struct rec) + 12 + 8192 + 131072)
#define POOL_MAX 64
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rec *pool = NULL;
static int pool_n = 0;

static struct rec *rec_alloc (size_t bytes) {
  if (bytes > POOL_BYTES || bytes < POOL_BYTES / 4) {
    struct rec *r = malloc(bytes);
    if (r != NULL) r->pooled = 0;
    return r;
  }
  pthread_mutex_lock(&pool_mu);
  struct rec *r = pool;
  if (r != NULL) {
    pool = r->next;
    pool_n--;
  }
  pthread_mutex_unlock(&pool_mu);
  if (r == NULL && (r = malloc(POOL_BYTES)) != NULL) r->pooled = 1;
  return r;
}

static void rec_free (struct rec *r) {
  if (r->pooled) {
    pthread_mutex_lock(&pool_mu);
    if (pool_n < POOL_MAX) {
      r->next = pool;
      pool = r;
      pool_n++;
      r = NULL;
    }
    pthread_mutex_unlock(&pool_mu);
  }
  free(r);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int fd = -1;
static char dir[PATH_MAX];
// The last seq handed out (to a write here or to JS).
static uint64_t seq = 0;
static struct rec *head = NULL;
static struct rec **tail = &head;
static napi_threadsafe_function wake = NULL;
static int woken = 0;

int rfs_journal_on (void) {
  return __atomic_load_n(&fd, __ATOMIC_RELAXED) >= 0;
}

static inline void put_u32 (unsigned char *p, uint32_t v) {
  p[0] = (unsigned char) v;
  p[1] = (unsigned char) (v >> 8);
  p[2] = (unsigned char) (v >> 16);
  p[3] = (unsigned char) (v >> 24);
}

// `s` as a JSON string of its bytes, each one char (latin1), as JSON.stringify writes a
// byte string of JS: a byte of 0x80 or more is that code point in UTF-8.
static size_t json_bytes (unsigned char *out, const char *s) {
  unsigned char *o = out;
  *o++ = '"';
  for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
    unsigned char c = *p;
    if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = c;
    } else if (c < 0x20) {
      o += sprintf((char *) o, "\\u%04x", c);
    } else if (c >= 0x80) {
      *o++ = (unsigned char) (0xc0 | (c >> 6));
      *o++ = (unsigned char) (0x80 | (c & 0x3f));
    } else {
      *o++ = c;
    }
  }
  *o++ = '"';
  return (size_t) (o - out);
}

// The seq sits last in the header, padded to a fixed width, so that everything but it is
// written before the mutex.
#define SEQ_WIDTH 20

// Writes all of `len` bytes to the journal (the caller holds the mutex): 0 or an errno. A
// record written in part (a full disk) is cut off again: a torn record in the middle would
// end the journal at the next start, and every record after it with it.
static int write_all (const void *data, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t w = write(fd, (const char *) data + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w < 0 ? errno : EIO;
      struct stat st;
      if (done > 0 && fstat(fd, &st) == 0 && st.st_size >= (off_t) done) {
        if (ftruncate(fd, st.st_size - (off_t) done) < 0) {}
      }
      return err;
    }
    done += (size_t) w;
  }
  return 0;
}

// The JSON of a path or other byte string, or null.
static size_t json_or_null (unsigned char *out, const char *s) {
  if (s != NULL) return json_bytes(out, s);
  memcpy(out, "null", 4);
  return 4;
}

static int record_v (const char *op, const char *path, const char *key2, const char *str2, const char *data, size_t n, long links, const char *fmt, va_list ap) {
  struct fuse_context *c = fuse_get_context();
  // Not capped at PATH_MAX: libfuse hands fd-based calls the path it built, which renames of
  // a parent can make longer than any path a syscall takes.
  size_t l1 = path == NULL ? 4 : strlen(path);
  size_t l2 = str2 == NULL ? 4 : strlen(str2);
  // The fixed parts, the fields fmt formats (200), uid, gid, src, links and the seq: under 450.
  size_t hmax = 450 + 6 * (l1 + l2) + SEQ_WIDTH;
  struct rec *r = rec_alloc(sizeof(struct rec) + 12 + hmax + n);
  // JS takes the change instead (it allocates on its own heap).
  if (r == NULL) return 1;
  unsigned char *b = r->bytes;
  unsigned char *h = b + 12;
  size_t hl = (size_t) sprintf((char *) h, "{\"m\":{\"op\":\"%s\",\"path\":", op);
  hl += json_or_null(h + hl, path);
  if (key2 != NULL) {
    hl += (size_t) sprintf((char *) h + hl, ",\"%s\":", key2);
    hl += json_or_null(h + hl, str2);
  }
  if (fmt != NULL) {
    h[hl++] = ',';
    int k = vsnprintf((char *) h + hl, 200, fmt, ap);
    if (k < 0 || k >= 200) {
      rec_free(r);
      return 1;
    }
    hl += (size_t) k;
  }
  // A write's bytes are not written to the file: the source holds them (a SIGKILL leaves
  // them in its page cache, a writer's fsync puts them on disk with the record), and a
  // replay after a restart reads them there ("src": their count).
  hl += (size_t) sprintf((char *) h + hl, ",\"uid\":%" PRIu32 ",\"gid\":%" PRIu32 "},", (uint32_t) c->uid, (uint32_t) c->gid);
  if (n > 0) hl += (size_t) sprintf((char *) h + hl, "\"src\":%zu,", n);
  // How many names the file had when written: some may be names the records after it do not
  // show, and a replay that finds none of those it knows cannot read the bytes (it resyncs).
  if (links >= 0) hl += (size_t) sprintf((char *) h + hl, "\"links\":%ld,", links);
  hl += (size_t) sprintf((char *) h + hl, "\"seq\":");
  size_t seq_at = hl;
  hl += SEQ_WIDTH;
  h[hl++] = '}';
  // JS's copy has them, after the record as the file has it.
  if (n > 0) memcpy(h + hl, data, n);
  size_t in_file = 12 + hl;
  r->len = in_file + n;
  put_u32(b + 4, (uint32_t) (4 + hl));
  put_u32(b + 8, (uint32_t) hl);

  pthread_mutex_lock(&mu);
  if (fd < 0) {
    // Stopped meanwhile (the mount is closing): JS takes the change instead.
    pthread_mutex_unlock(&mu);
    rec_free(r);
    return 1;
  }
  char digits[SEQ_WIDTH + 1];
  snprintf(digits, sizeof(digits), "%*" PRIu64, SEQ_WIDTH, ++seq);
  memcpy(h + seq_at, digits, SEQ_WIDTH);
  put_u32(b, (uint32_t) crc32(0, b + 4, (unsigned int) (8 + hl)));
  int res = write_all(b, in_file) == 0 ? 0 : -EIO;
  // Queued for the replicas even when the file refused it (the call answers EIO), as JS
  // does with a change its journal could not take.
  r->next = NULL;
  *tail = r;
  tail = &r->next;
  if (!woken && wake != NULL) {
    woken = 1;
    napi_call_threadsafe_function(wake, NULL, napi_tsfn_nonblocking);
  }
  pthread_mutex_unlock(&mu);
  return res;
}

int rfs_journal_record (const char *op, const char *path, const char *key2, const char *str2, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int res = record_v(op, path, key2, str2, NULL, 0, -1, fmt, ap);
  va_end(ap);
  return res;
}

int rfs_journal_write (const char *path, const char *data, size_t n, long links, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int res = record_v("write", path, NULL, NULL, data, n, links, fmt, ap);
  va_end(ap);
  return res;
}

// ---- JS's side ---------------------------------------------------------------------------

#define THROW(msg) do { napi_throw_error(env, NULL, (msg)); return NULL; } while (0)
#define CHECK(call) do { if ((call) != napi_ok) THROW("replicafs journal: " #call " failed"); } while (0)

// An exception for JS: "replicafs journal: cannot <what>: <errno's text>".
static napi_value throw_errno (napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof(msg), "replicafs journal: cannot %s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

// The one argument of a call, a number.
static bool number_arg (napi_env env, napi_callback_info info, double *out) {
  size_t argc = 1;
  napi_value argv[1];
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 &&
    napi_get_value_double(env, argv[0], out) == napi_ok;
}

static int open_current (void) {
  char path[PATH_MAX + 16];
  snprintf(path, sizeof(path), "%s/journal.log", dir);
  return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

// start(dir, seq, wake): appends go to dir/journal.log from now on, seqs follow `seq`, and
// `wake()` is called (on the JS thread) when records wait to be taken.
static napi_value start (napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t len;
  double s;
  CHECK(napi_get_value_string_latin1(env, argv[0], dir, sizeof(dir), &len));
  CHECK(napi_get_value_double(env, argv[1], &s));
  if (wake == NULL) {
    napi_value name;
    CHECK(napi_create_string_utf8(env, "replicafs journal", NAPI_AUTO_LENGTH, &name));
    CHECK(napi_create_threadsafe_function(env, argv[2], NULL, name, 0, 1, NULL, NULL, NULL, NULL, &wake));
    // It must not keep the process alive on its own.
    CHECK(napi_unref_threadsafe_function(env, wake));
  }
  int f = open_current();
  if (f < 0) return throw_errno(env, "open journal.log", errno);
  pthread_mutex_lock(&mu);
  if (fd >= 0) close(fd);
  fd = f;
  seq = (uint64_t) s;
  pthread_mutex_unlock(&mu);
  return NULL;
}

// take(next): [...records appended since the last take (Buffers, in seq order), seq], where
// seq is a fresh one for JS's own change when `next`, else the last handed out. When it
// returns records, JS must call it again soon (it is not woken until a call finds none).
static napi_value take (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool next;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_bool(env, argv[0], &next));
  pthread_mutex_lock(&mu);
  struct rec *list = head;
  head = NULL;
  tail = &head;
  // JS took some: it comes back for more on its own (the next turn of its loop), so a burst
  // of changes does not wake it once per change. Found none: the next change wakes it.
  woken = list != NULL;
  uint64_t s = next ? ++seq : seq;
  pthread_mutex_unlock(&mu);

  // Each is copied onto JS's heap, so that its buffer goes back to the pool now, warm,
  // rather than when the collector finds it: the copy costs JS's thread, not the writer's.
  // Freed only once all are copied: if one cannot be (JS's heap is full), all of them go
  // back to the head of the queue, in order, for a later take (the next change wakes JS).
  napi_value out, v;
  bool ok = napi_create_array(env, &out) == napi_ok;
  uint32_t i = 0;
  for (struct rec *r = list; ok && r != NULL; r = r->next) {
    ok = napi_create_buffer_copy(env, r->len, r->bytes, NULL, &v) == napi_ok &&
      napi_set_element(env, out, i++, v) == napi_ok;
  }
  if (!ok) {
    pthread_mutex_lock(&mu);
    if (list != NULL) {
      struct rec **end = &list;
      while (*end != NULL) end = &(*end)->next;
      *end = head;
      if (head == NULL) tail = end;
      head = list;
    }
    woken = 0;
    pthread_mutex_unlock(&mu);
    THROW("replicafs journal: cannot copy the records for JS");
  }
  while (list != NULL) {
    struct rec *r = list;
    list = r->next;
    rec_free(r);
  }
  CHECK(napi_create_double(env, (double) s, &v));
  CHECK(napi_set_element(env, out, i, v));
  return out;
}

// append(buf): one record of JS's own, appended as the mount's are (under their lock).
static napi_value append (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data;
  size_t len;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_buffer_info(env, argv[0], &data, &len));
  pthread_mutex_lock(&mu);
  int err = fd < 0 ? EBADF : write_all(data, len);
  pthread_mutex_unlock(&mu);
  return err != 0 ? throw_errno(env, "append to journal.log", err) : NULL;
}

// seal(floor): journal.log becomes journal-<last>.log, last = max(the last seq handed out,
// floor); a new journal.log takes the appends. Returns last, or throws.
static napi_value seal (napi_env env, napi_callback_info info) {
  double floor;
  if (!number_arg(env, info, &floor)) THROW("replicafs journal: seal(floor) takes a number");
  char from[PATH_MAX + 16], to[PATH_MAX + 48];
  snprintf(from, sizeof(from), "%s/journal.log", dir);
  pthread_mutex_lock(&mu);
  uint64_t last = seq > (uint64_t) floor ? seq : (uint64_t) floor;
  snprintf(to, sizeof(to), "%s/journal-%" PRIu64 ".log", dir, last);
  int err = fd < 0 ? EBADF : rename(from, to) < 0 ? errno : 0;
  int f = err == 0 ? open_current() : -1;
  if (err == 0 && f < 0) {
    // No new file (out of fds or inodes): the old one keeps its name and the appends, rather
    // than holding records later than the name it was given.
    err = errno;
    if (rename(to, from) < 0) {}
  }
  if (f >= 0) {
    close(fd);
    fd = f;
  }
  pthread_mutex_unlock(&mu);
  if (err != 0) return throw_errno(env, "seal journal.log", err);
  napi_value v;
  CHECK(napi_create_double(env, (double) last, &v));
  return v;
}

// cut(seq): journal.log is cut to zero if no seq was handed out after `seq` (JS has seen
// every record in it); returns whether it was.
static napi_value cut (napi_env env, napi_callback_info info) {
  double s;
  if (!number_arg(env, info, &s)) THROW("replicafs journal: cut(seq) takes a number");
  pthread_mutex_lock(&mu);
  bool ok = fd >= 0 && seq == (uint64_t) s && ftruncate(fd, 0) == 0;
  pthread_mutex_unlock(&mu);
  napi_value v;
  CHECK(napi_get_boolean(env, ok, &v));
  return v;
}

// stop(): writes go to JS again; the file is closed here.
static napi_value stop (napi_env env, napi_callback_info info) {
  pthread_mutex_lock(&mu);
  if (fd >= 0) close(fd);
  fd = -1;
  pthread_mutex_unlock(&mu);
  return NULL;
}

void rfs_journal_exports (napi_env env, napi_value exports) {
  const napi_property_descriptor fns[] = {
    { "journal_start", NULL, start, NULL, NULL, NULL, napi_default, NULL },
    { "journal_take", NULL, take, NULL, NULL, NULL, napi_default, NULL },
    { "journal_append", NULL, append, NULL, NULL, NULL, napi_default, NULL },
    { "journal_seal", NULL, seal, NULL, NULL, NULL, napi_default, NULL },
    { "journal_cut", NULL, cut, NULL, NULL, NULL, napi_default, NULL },
    { "journal_stop", NULL, stop, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof(fns) / sizeof(fns[0]), fns);
}
