/* shmstream/shmstream.h — the C API of shmstream, for C programs and for any language with an
 * FFI (Python ctypes, Rust, Go, Java's FFM...).
 *
 * A stream is an append-only byte sequence in shared memory. One producer appends; any number
 * of readers, in any processes, read it zero-copy from a read-only mapping, each at its own
 * offset, blocking until the bytes they want are committed. Streams are named and managed by
 * the daemon shmstreamd (started for you if none answers); data never passes through it.
 *
 *   shmstream_client* client;
 *   if (shmstream_connect(NULL, &client) != SHMSTREAM_OK) {
 *     fprintf(stderr, "%s\n", shmstream_last_error());
 *     return 1;
 *   }
 *   shmstream_producer* producer;
 *   shmstream_create(client, "cam0", NULL, &producer);
 *   shmstream_append(producer, "hello", 5, SHMSTREAM_FOREVER);
 *   shmstream_producer_close(producer);
 *   shmstream_producer_free(producer);
 *
 * Errors: every function that can fail returns an shmstream_code (SHMSTREAM_OK is 0). The
 * failing call also leaves a message naming the stream and the cause, e.g.
 * `stream "cam0": aborted: producer died (pid 4121)`, which shmstream_last_error() returns until
 * the next failing call on the same thread. No C++ exception ever crosses this API.
 *
 * Thread-safety: a client may be used from many threads at once. A producer or reader is used
 * by one thread at a time, except shmstream_reader_close(), which any thread may call to wake a
 * read blocked in another. Producers and readers keep their client's connection alive: free
 * them and the client in any order.
 *
 * Stability: the codes' numbers never change; option structs only grow at their end, and carry
 * their size (set by their init function) so that older callers keep working.
 */
#ifndef SHMSTREAM_SHMSTREAM_H_
#define SHMSTREAM_SHMSTREAM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What went wrong; the same numbers as shmstream::ErrorCode in C++. */
typedef enum shmstream_code {
  SHMSTREAM_OK = 0,
  SHMSTREAM_INVALID_ARGUMENT = 1, /* a bad name, offset, size or option */
  SHMSTREAM_NOT_FOUND = 2,        /* no stream of that name (or it was removed) */
  SHMSTREAM_ALREADY_EXISTS = 3,   /* create of a name that is taken */
  SHMSTREAM_TIMEOUT = 4,          /* a wait's deadline passed */
  SHMSTREAM_INTERRUPTED = 5,      /* the reader was closed (shmstream_reader_close) */
  SHMSTREAM_PRODUCER_DIED = 6,    /* the producer died or aborted before closing the stream */
  SHMSTREAM_CANCELLED = 7,        /* the stream was removed by force */
  SHMSTREAM_STREAM_CLOSED = 8,    /* a write to a stream that is no longer open */
  SHMSTREAM_CORRUPT = 9,          /* a segment whose header or size does not validate */
  SHMSTREAM_VERSION_MISMATCH = 10,
  SHMSTREAM_PERMISSION_DENIED = 11,
  SHMSTREAM_NO_SPACE = 12,
  SHMSTREAM_TOO_LARGE = 13,   /* beyond the stream's maximum size */
  SHMSTREAM_UNAVAILABLE = 14, /* no daemon answers on the control socket */
  SHMSTREAM_PROTOCOL = 15,
  SHMSTREAM_IO = 16,
  SHMSTREAM_INTERNAL = 17,
  SHMSTREAM_END_OF_STREAM = 18, /* the stream ended cleanly: a normal end */
  SHMSTREAM_OVERRUN = 19,       /* a ring overwrote the offset; see shmstream_last_error_offset() */
  SHMSTREAM_TOO_MANY_READERS = 20,
  SHMSTREAM_BUSY = 21,           /* a named cursor already has a live reader, or a stream to
                                    resume its live producer */
  SHMSTREAM_LIMIT_EXCEEDED = 22, /* a daemon limit: streams or connections per user */
} shmstream_code;

/* Wait as long as it takes (a timeout argument, in nanoseconds). 0 never waits. */
#define SHMSTREAM_FOREVER INT64_MAX

/* The message of the last call that failed on this thread ("" if none did); valid until the
 * next failing call on this thread. */
const char* shmstream_last_error(void);
/* This library's release, e.g. "0.1.0". */
const char* shmstream_version(void);
/* SHMSTREAM_OVERRUN: the oldest offset still available, from which the reader may resume. */
uint64_t shmstream_last_error_offset(void);
/* "not_found", "producer_died", ...: stable names, as used by the CLI. "unknown" otherwise. */
const char* shmstream_code_name(int code);

typedef struct shmstream_client shmstream_client;
typedef struct shmstream_producer shmstream_producer;
typedef struct shmstream_reader shmstream_reader;

/* Connects to shmstreamd at socket_path (NULL: $SHMSTREAM_SOCKET, else the per-user default),
 * starting one if none answers. */
int shmstream_connect(const char* socket_path, shmstream_client** out);
void shmstream_client_free(shmstream_client* client);

/* Retention: how much of a stream is kept. */
enum {
  SHMSTREAM_RETENTION_UNBOUNDED = 0,   /* every byte, up to max_bytes */
  SHMSTREAM_RETENTION_DROP_OLDEST = 1, /* a ring: slow readers get SHMSTREAM_OVERRUN */
  SHMSTREAM_RETENTION_BLOCK = 2,       /* a ring: the producer waits for the slowest reader */
};
/* Mode: who may read a stream besides its owner and root. */
enum {
  SHMSTREAM_MODE_OWNER = 0,
  SHMSTREAM_MODE_GROUP = 1,    /* the owner's primary group */
  SHMSTREAM_MODE_EVERYONE = 2, /* every local user */
};

typedef struct shmstream_create_options {
  size_t size;            /* set by shmstream_create_options_init */
  uint64_t max_bytes;     /* unbounded streams: longest it may grow; 0: the daemon's default */
  int retention;          /* SHMSTREAM_RETENTION_* */
  uint64_t ring_capacity; /* rings: bytes kept (rounded up to 4 KiB) */
  int records;            /* nonzero: a records stream (shmstream_publish) */
  uint32_t max_readers;   /* 0: the daemon's default */
  int mode;               /* SHMSTREAM_MODE_* */
  /* If the producer dies, the stream stays open this long for shmstream_resume(); 0: it is
   * aborted at once. */
  uint32_t resume_grace_ms;
  /* Block rings: a reader (or a named cursor nobody holds) that keeps the producer waiting for
   * room longer than this is evicted (its next read fails with SHMSTREAM_ERR_OVERRUN); 0: never. */
  uint32_t stall_limit_ms;
} shmstream_create_options;
void shmstream_create_options_init(shmstream_create_options* options);

/* Creates a new, empty stream (options may be NULL); the caller becomes its producer. */
int shmstream_create(shmstream_client* client, const char* name,
                     const shmstream_create_options* options, shmstream_producer** out);
/* Takes over an open stream, created with a resume grace, whose producer died: appends at its
 * committed length. SHMSTREAM_BUSY while that producer still runs. */
int shmstream_resume(shmstream_client* client, const char* name, shmstream_producer** out);
/* Copies size bytes to the end of the stream and publishes them. Only a block ring waits. */
int shmstream_append(shmstream_producer* producer, const void* data, size_t size,
                     int64_t timeout_ns);
/* Zero-copy: *out points at size writable bytes at the end of the stream. Fill some, then
 * shmstream_commit() how many. */
int shmstream_reserve(shmstream_producer* producer, size_t size, int64_t timeout_ns, void** out);
int shmstream_commit(shmstream_producer* producer, size_t size);
/* Records streams: publishes one record (copied). */
int shmstream_publish(shmstream_producer* producer, const void* data, size_t size,
                      int64_t timeout_ns);
/* Ends the stream cleanly: readers reach its end. */
int shmstream_producer_close(shmstream_producer* producer);
/* Ends the stream as failed: readers get SHMSTREAM_PRODUCER_DIED past the committed bytes, with
 * the message `stream "NAME": aborted: aborted by its producer`. */
int shmstream_producer_abort(shmstream_producer* producer);
/* The same, saying why: readers' message ends `aborted by its producer: REASON` (REASON cut to
 * 127 bytes; NULL is no reason). */
int shmstream_producer_abort_because(shmstream_producer* producer, const char* reason);
uint64_t shmstream_producer_committed(const shmstream_producer* producer);
/* Frees a producer; one that was neither closed nor aborted aborts its stream. */
void shmstream_producer_free(shmstream_producer* producer);

/* Opens a stream for reading. cursor: NULL, or a named cursor to resume from (see the C++
 * OpenOptions::cursor); its position is committed automatically as the reader moves on. */
int shmstream_open(shmstream_client* client, const char* name, const char* cursor,
                   shmstream_reader** out);
/* Blocks until bytes at the position are committed, copies up to size of them into buf and
 * advances; *n is 0 at the clean end of the stream. */
int shmstream_read(shmstream_reader* reader, void* buf, size_t size, int64_t timeout_ns, size_t* n);
/* Zero-copy: *data points at up to max bytes at the position (valid until the reader is
 * freed), which then advances past them. *size is 0 at the clean end. */
int shmstream_next(shmstream_reader* reader, size_t max, int64_t timeout_ns, const void** data,
                   size_t* size);
/* Records streams: the next record, whole, zero-copy; *offset is where its frame starts.
 * Returns SHMSTREAM_END_OF_STREAM at the clean end (an empty record has *size 0). */
int shmstream_next_record(shmstream_reader* reader, int64_t timeout_ns, const void** data,
                          size_t* size, uint64_t* offset);
/* Zero-copy view of committed bytes [offset, offset + length); never blocks. */
int shmstream_view(shmstream_reader* reader, uint64_t offset, size_t length, const void** data);
/* Blocks until the committed length reaches length; SHMSTREAM_END_OF_STREAM if the stream
 * closed shorter. */
int shmstream_wait(shmstream_reader* reader, uint64_t length, int64_t timeout_ns);
enum { SHMSTREAM_SEEK_START = 0, SHMSTREAM_SEEK_CURRENT = 1, SHMSTREAM_SEEK_END = 2 };
int shmstream_seek(shmstream_reader* reader, int64_t offset, int whence);
uint64_t shmstream_position(const shmstream_reader* reader);
uint64_t shmstream_committed(const shmstream_reader* reader);
/* The oldest offset still available (0 unless a ring wrapped). */
uint64_t shmstream_oldest(const shmstream_reader* reader);
/* Rings: nonzero if what was read from offset on has not been overwritten since. */
int shmstream_intact(const shmstream_reader* reader, uint64_t offset);
/* Event loops: *fd polls readable (POLLIN) once a read at the position need not wait (bytes
 * committed there, the stream ended, or the reader closed). Then read with timeout 0 until a
 * read returns SHMSTREAM_TIMEOUT: that clears *fd and watches the new position. The reader owns
 * *fd (do not close it). Linux >= 6.7: a kernel-side (io_uring) futex wait signals it, and an
 * epoll_wait in the reading thread may return EINTR once first (retry); elsewhere, or with
 * SHMSTREAM_EVENT_FD=relay, the first call starts a thread that waits in the futex for it. */
int shmstream_reader_fd(shmstream_reader* reader, int* fd);
/* Any thread: wakes reads blocked in other threads (SHMSTREAM_INTERRUPTED). Free it after. */
void shmstream_reader_close(shmstream_reader* reader);
void shmstream_reader_free(shmstream_reader* reader);

/* Removes a stream; with force, everyone using it fails at once with SHMSTREAM_CANCELLED. */
int shmstream_remove(shmstream_client* client, const char* name, int force);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMSTREAM_SHMSTREAM_H_ */
