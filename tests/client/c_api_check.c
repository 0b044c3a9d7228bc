/* The C API, from C: every call of shmstream.h against a live daemon ($SHMSTREAM_SOCKET).
 * Run by c_api_test.cpp, which also checks that C and C++ read each other's streams:
 *   c_api_check FROM_CPP_NAME FROM_CPP_BYTES   verifies the C++ stream, then leaves "from-c"
 * Prints one line per failed check; exits 0 only if every check passed. */
#include <poll.h>
#include <pthread.h>
#include <shmstream/shmstream.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks = 0;
static int failures = 0;

#define CHECK(cond)                                                                     \
  do {                                                                                  \
    ++checks;                                                                           \
    if (!(cond)) {                                                                      \
      ++failures;                                                                       \
      fprintf(stderr, "c_api_check:%d: FAILED: %s (last error: %s)\n", __LINE__, #cond, \
              shmstream_last_error());                                                  \
    }                                                                                   \
  } while (0)

#define SECOND ((int64_t)1000000000)

/* Whether fd polls readable within timeout_ms. */
static int readable(int fd, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void* blocked_read(void* reader) {
  char buf[16];
  size_t n = 0;
  return (void*)(intptr_t)shmstream_read(reader, buf, sizeof buf, SHMSTREAM_FOREVER, &n);
}

static void check_errors(shmstream_client* client) {
  shmstream_producer* producer = NULL;
  shmstream_reader* reader = NULL;
  CHECK(strcmp(shmstream_code_name(SHMSTREAM_NOT_FOUND), "not_found") == 0);
  CHECK(strcmp(shmstream_code_name(SHMSTREAM_PRODUCER_DIED), "producer_died") == 0);
  CHECK(shmstream_version() != NULL && strchr(shmstream_version(), '.') != NULL);
  CHECK(strcmp(shmstream_code_name(999), "unknown") == 0);
  CHECK(shmstream_create(client, "bad/name", NULL, &producer) == SHMSTREAM_INVALID_ARGUMENT);
  CHECK(producer == NULL);
  CHECK(strstr(shmstream_last_error(), "bad/name") != NULL);
  CHECK(shmstream_open(client, "c-missing", NULL, &reader) == SHMSTREAM_NOT_FOUND);
  CHECK(reader == NULL);
  CHECK(strstr(shmstream_last_error(), "c-missing") != NULL);
  CHECK(shmstream_create(NULL, "x", NULL, &producer) == SHMSTREAM_INVALID_ARGUMENT);
  CHECK(shmstream_append(NULL, "x", 1, 0) == SHMSTREAM_INVALID_ARGUMENT);
  CHECK(shmstream_next(NULL, 1, 0, NULL, NULL) == SHMSTREAM_INVALID_ARGUMENT);
  shmstream_create_options bad;
  shmstream_create_options_init(&bad);
  bad.retention = 7;
  CHECK(shmstream_create(client, "c-bad-options", &bad, &producer) == SHMSTREAM_INVALID_ARGUMENT);
  CHECK(strstr(shmstream_last_error(), "retention") != NULL);
  shmstream_producer_free(NULL); /* harmless */
  shmstream_reader_free(NULL);
}

static void check_bytes(shmstream_client* client) {
  shmstream_create_options options;
  shmstream_create_options_init(&options);
  options.max_bytes = 1 << 20;
  shmstream_producer* producer = NULL;
  CHECK(shmstream_create(client, "c-bytes", &options, &producer) == SHMSTREAM_OK);
  if (producer == NULL) return;
  shmstream_producer* again = NULL;
  CHECK(shmstream_create(client, "c-bytes", NULL, &again) == SHMSTREAM_ALREADY_EXISTS);

  shmstream_reader* reader = NULL;
  CHECK(shmstream_open(client, "c-bytes", NULL, &reader) == SHMSTREAM_OK);
  if (reader == NULL) return;
  int fd = -1;
  CHECK(shmstream_reader_fd(reader, &fd) == SHMSTREAM_OK && fd >= 0);
  CHECK(!readable(fd, 0)); /* nothing committed yet */
  char buf[8192];
  size_t n = 99;
  CHECK(shmstream_read(reader, buf, sizeof buf, 0, &n) == SHMSTREAM_TIMEOUT && n == 0);

  CHECK(shmstream_append(producer, "hello", 5, SHMSTREAM_FOREVER) == SHMSTREAM_OK);
  CHECK(readable(fd, 10000));
  const void* data = NULL;
  size_t size = 0;
  CHECK(shmstream_next(reader, 4096, 0, &data, &size) == SHMSTREAM_OK);
  CHECK(size == 5 && memcmp(data, "hello", 5) == 0);
  const char* hello = data;
  CHECK(shmstream_next(reader, 4096, 0, &data, &size) == SHMSTREAM_TIMEOUT);
  CHECK(data == NULL && size == 0);
  CHECK(!readable(fd, 0)); /* the read that found nothing cleared it */

  void* room = NULL;
  CHECK(shmstream_reserve(producer, 4096, SHMSTREAM_FOREVER, &room) == SHMSTREAM_OK);
  if (room != NULL) {
    for (int i = 0; i < 4096; ++i) ((unsigned char*)room)[i] = (unsigned char)(i * 7);
  }
  CHECK(shmstream_commit(producer, 4096) == SHMSTREAM_OK);
  CHECK(shmstream_producer_committed(producer) == 4101);
  CHECK(shmstream_wait(reader, 4101, 10 * SECOND) == SHMSTREAM_OK);
  CHECK(readable(fd, 10000));
  CHECK(shmstream_committed(reader) == 4101);
  const void* view = NULL;
  CHECK(shmstream_view(reader, 5, 4096, &view) == SHMSTREAM_OK);
  CHECK(view != NULL && ((const unsigned char*)view)[100] == (unsigned char)700);
  CHECK(view == hello + 5); /* the same mapping: zero-copy */
  CHECK(shmstream_view(reader, 5, 8192, &view) == SHMSTREAM_INVALID_ARGUMENT);
  CHECK(shmstream_intact(reader, 0));
  CHECK(shmstream_read(reader, buf, sizeof buf, 0, &n) == SHMSTREAM_OK && n == 4096);
  CHECK(memcmp(buf, hello + 5, 4096) == 0);
  CHECK(shmstream_position(reader) == 4101);
  CHECK(shmstream_seek(reader, 0, SHMSTREAM_SEEK_START) == SHMSTREAM_OK);
  CHECK(shmstream_position(reader) == 0);
  CHECK(shmstream_seek(reader, 0, 9) == SHMSTREAM_INVALID_ARGUMENT);
  CHECK(shmstream_seek(reader, 0, SHMSTREAM_SEEK_END) == SHMSTREAM_OK);

  CHECK(shmstream_producer_close(producer) == SHMSTREAM_OK);
  CHECK(readable(fd, 10000)); /* the end is news too */
  CHECK(shmstream_read(reader, buf, sizeof buf, SHMSTREAM_FOREVER, &n) == SHMSTREAM_OK && n == 0);
  CHECK(shmstream_wait(reader, 1 << 20, SHMSTREAM_FOREVER) == SHMSTREAM_END_OF_STREAM);
  CHECK(shmstream_append(producer, "x", 1, 0) == SHMSTREAM_STREAM_CLOSED);
  shmstream_producer_free(producer);
  shmstream_reader_free(reader);
  CHECK(shmstream_remove(client, "c-bytes", 0) == SHMSTREAM_OK);
  CHECK(shmstream_remove(client, "c-bytes", 0) == SHMSTREAM_NOT_FOUND);
}

static void check_records(shmstream_client* client) {
  shmstream_create_options options;
  shmstream_create_options_init(&options);
  options.records = 1;
  shmstream_producer* producer = NULL;
  CHECK(shmstream_create(client, "c-records", &options, &producer) == SHMSTREAM_OK);
  if (producer == NULL) return;
  CHECK(shmstream_publish(producer, "a", 1, SHMSTREAM_FOREVER) == SHMSTREAM_OK);
  CHECK(shmstream_publish(producer, NULL, 0, SHMSTREAM_FOREVER) == SHMSTREAM_OK);
  CHECK(shmstream_publish(producer, "ccc", 3, SHMSTREAM_FOREVER) == SHMSTREAM_OK);
  CHECK(shmstream_producer_close(producer) == SHMSTREAM_OK);
  shmstream_producer_free(producer);

  shmstream_reader* reader = NULL;
  CHECK(shmstream_open(client, "c-records", NULL, &reader) == SHMSTREAM_OK);
  if (reader == NULL) return;
  const void* data;
  size_t size;
  uint64_t offsets[3] = {0, 0, 0};
  CHECK(shmstream_next_record(reader, SECOND, &data, &size, &offsets[0]) == SHMSTREAM_OK);
  CHECK(size == 1 && memcmp(data, "a", 1) == 0);
  CHECK(shmstream_next_record(reader, SECOND, &data, &size, &offsets[1]) == SHMSTREAM_OK);
  CHECK(size == 0);
  CHECK(shmstream_next_record(reader, SECOND, &data, &size, &offsets[2]) == SHMSTREAM_OK);
  CHECK(size == 3 && memcmp(data, "ccc", 3) == 0);
  CHECK(offsets[0] == 0 && offsets[1] > offsets[0] && offsets[2] > offsets[1]);
  CHECK(shmstream_next_record(reader, SECOND, &data, &size, NULL) == SHMSTREAM_END_OF_STREAM);
  shmstream_reader_free(reader);
  CHECK(shmstream_remove(client, "c-records", 0) == SHMSTREAM_OK);
}

static void check_failures(shmstream_client* client) {
  /* A producer freed without closing aborts: readers get producer_died past its bytes. */
  shmstream_producer* producer = NULL;
  CHECK(shmstream_create(client, "c-abort", NULL, &producer) == SHMSTREAM_OK);
  if (producer == NULL) return;
  CHECK(shmstream_append(producer, "abc", 3, 0) == SHMSTREAM_OK);
  shmstream_reader* reader = NULL;
  CHECK(shmstream_open(client, "c-abort", NULL, &reader) == SHMSTREAM_OK);
  if (reader == NULL) return;
  shmstream_producer_free(producer);
  char buf[16];
  size_t n = 0;
  CHECK(shmstream_read(reader, buf, sizeof buf, SECOND, &n) == SHMSTREAM_OK && n == 3);
  CHECK(shmstream_read(reader, buf, sizeof buf, SECOND, &n) == SHMSTREAM_PRODUCER_DIED);
  CHECK(strstr(shmstream_last_error(), "aborted: its producer was dropped without close()") !=
        NULL);
  shmstream_reader_free(reader);
  CHECK(shmstream_remove(client, "c-abort", 0) == SHMSTREAM_OK);

  /* An abort with a reason: readers see it. */
  CHECK(shmstream_create(client, "c-abort-why", NULL, &producer) == SHMSTREAM_OK);
  if (producer == NULL) return;
  CHECK(shmstream_open(client, "c-abort-why", NULL, &reader) == SHMSTREAM_OK);
  if (reader == NULL) return;
  CHECK(shmstream_producer_abort_because(producer, "camera unplugged") == SHMSTREAM_OK);
  CHECK(shmstream_read(reader, buf, sizeof buf, SECOND, &n) == SHMSTREAM_PRODUCER_DIED);
  CHECK(strstr(shmstream_last_error(), "aborted by its producer: camera unplugged") != NULL);
  shmstream_producer_free(producer);
  shmstream_reader_free(reader);
  CHECK(shmstream_remove(client, "c-abort-why", 0) == SHMSTREAM_OK);

  /* Resuming: refused while the producer lives, for a stream without a grace, for no stream. */
  shmstream_create_options graced;
  shmstream_create_options_init(&graced);
  graced.resume_grace_ms = 60000;
  CHECK(shmstream_create(client, "c-graced", &graced, &producer) == SHMSTREAM_OK);
  shmstream_producer* successor = NULL;
  CHECK(shmstream_resume(client, "c-graced", &successor) == SHMSTREAM_BUSY && successor == NULL);
  CHECK(strstr(shmstream_last_error(), "still running") != NULL);
  CHECK(shmstream_resume(client, "c-missing", &successor) == SHMSTREAM_NOT_FOUND);
  CHECK(shmstream_resume(NULL, "c-graced", &successor) == SHMSTREAM_INVALID_ARGUMENT);
  shmstream_producer_free(producer);
  shmstream_producer* plain = NULL;
  CHECK(shmstream_create(client, "c-plain", NULL, &plain) == SHMSTREAM_OK);
  CHECK(shmstream_resume(client, "c-plain", &successor) == SHMSTREAM_INVALID_ARGUMENT);
  CHECK(strstr(shmstream_last_error(), "without a resume grace") != NULL);
  shmstream_producer_free(plain);
  CHECK(shmstream_remove(client, "c-graced", 0) == SHMSTREAM_OK);
  CHECK(shmstream_remove(client, "c-plain", 0) == SHMSTREAM_OK);

  /* A stall limit: a block ring's reader that never reads is evicted; the producer goes on. */
  shmstream_create_options limited;
  shmstream_create_options_init(&limited);
  limited.retention = SHMSTREAM_RETENTION_BLOCK;
  limited.ring_capacity = 4096;
  limited.stall_limit_ms = 200;
  CHECK(shmstream_create(client, "c-stall", &limited, &producer) == SHMSTREAM_OK);
  CHECK(shmstream_open(client, "c-stall", NULL, &reader) == SHMSTREAM_OK);
  static char page[4096];
  for (int i = 0; i < 3; ++i) {
    CHECK(shmstream_append(producer, page, sizeof page, 20 * SECOND) == SHMSTREAM_OK);
  }
  CHECK(shmstream_read(reader, buf, sizeof buf, SECOND, &n) == SHMSTREAM_OVERRUN);
  CHECK(strstr(shmstream_last_error(), "evicted") != NULL);
  shmstream_reader_free(reader);
  shmstream_producer_free(producer);
  CHECK(shmstream_remove(client, "c-stall", 0) == SHMSTREAM_OK);

  /* A drop-oldest ring overruns a slow reader and says where to resume. */
  shmstream_create_options ring;
  shmstream_create_options_init(&ring);
  ring.retention = SHMSTREAM_RETENTION_DROP_OLDEST;
  ring.ring_capacity = 4096;
  CHECK(shmstream_create(client, "c-ring", &ring, &producer) == SHMSTREAM_OK);
  if (producer == NULL) return;
  CHECK(shmstream_open(client, "c-ring", NULL, &reader) == SHMSTREAM_OK);
  if (reader == NULL) return;
  char block[1024];
  memset(block, 'r', sizeof block);
  for (int i = 0; i < 16; ++i) CHECK(shmstream_append(producer, block, sizeof block, 0) == 0);
  CHECK(shmstream_read(reader, buf, sizeof buf, 0, &n) == SHMSTREAM_OVERRUN);
  CHECK(shmstream_last_error_offset() == shmstream_oldest(reader));
  CHECK(shmstream_oldest(reader) >= 16 * 1024 - 4096);
  CHECK(shmstream_seek(reader, (int64_t)shmstream_last_error_offset(), SHMSTREAM_SEEK_START) == 0);
  CHECK(shmstream_read(reader, buf, sizeof buf, 0, &n) == SHMSTREAM_OK && n == sizeof buf);

  /* A forced removal cancels everyone at once. */
  CHECK(shmstream_remove(client, "c-ring", 1) == SHMSTREAM_OK);
  CHECK(shmstream_read(reader, buf, sizeof buf, SHMSTREAM_FOREVER, &n) == SHMSTREAM_CANCELLED);
  CHECK(shmstream_append(producer, "x", 1, 0) == SHMSTREAM_CANCELLED);
  shmstream_reader_free(reader);
  shmstream_producer_free(producer);

  /* shmstream_reader_close from another thread ends a read blocked forever. */
  CHECK(shmstream_create(client, "c-close", NULL, &producer) == SHMSTREAM_OK);
  if (producer == NULL) return;
  CHECK(shmstream_open(client, "c-close", NULL, &reader) == SHMSTREAM_OK);
  if (reader == NULL) return;
  pthread_t thread;
  CHECK(pthread_create(&thread, NULL, blocked_read, reader) == 0);
  shmstream_reader_close(reader);
  void* code = NULL;
  pthread_join(thread, &code);
  CHECK((intptr_t)code == SHMSTREAM_INTERRUPTED);
  shmstream_reader_free(reader);
  CHECK(shmstream_producer_close(producer) == SHMSTREAM_OK);
  shmstream_producer_free(producer);
  CHECK(shmstream_remove(client, "c-close", 0) == SHMSTREAM_OK);
}

/* Reads the C++ test's stream (byte i is i * 13 mod 256) and writes "from-c" for it to read. */
static void check_interop(shmstream_client* client, const char* name, size_t bytes) {
  shmstream_reader* reader = NULL;
  CHECK(shmstream_open(client, name, NULL, &reader) == SHMSTREAM_OK);
  if (reader == NULL) return;
  size_t got = 0, wrong = 0;
  for (;;) {
    const void* data;
    size_t size;
    int code = shmstream_next(reader, 65536, 10 * SECOND, &data, &size);
    CHECK(code == SHMSTREAM_OK);
    if (code != SHMSTREAM_OK || size == 0) break;
    for (size_t i = 0; i < size; ++i, ++got) {
      if (((const unsigned char*)data)[i] != (unsigned char)(got * 13)) ++wrong;
    }
  }
  CHECK(got == bytes && wrong == 0);
  shmstream_reader_free(reader);

  shmstream_producer* producer = NULL;
  CHECK(shmstream_create(client, "from-c", NULL, &producer) == SHMSTREAM_OK);
  if (producer == NULL) return;
  unsigned char chunk[1000];
  for (size_t off = 0; off < 100000; off += sizeof chunk) {
    for (size_t i = 0; i < sizeof chunk; ++i) chunk[i] = (unsigned char)((off + i) * 17);
    CHECK(shmstream_append(producer, chunk, sizeof chunk, SHMSTREAM_FOREVER) == SHMSTREAM_OK);
  }
  CHECK(shmstream_producer_close(producer) == SHMSTREAM_OK);
  shmstream_producer_free(producer);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: c_api_check FROM_CPP_NAME FROM_CPP_BYTES\n");
    return 2;
  }
  shmstream_client* client = NULL;
  if (shmstream_connect(NULL, &client) != SHMSTREAM_OK) {
    fprintf(stderr, "c_api_check: connect: %s\n", shmstream_last_error());
    return 1;
  }
  check_errors(client);
  check_bytes(client);
  check_records(client);
  check_failures(client);
  check_interop(client, argv[1], (size_t)strtoull(argv[2], NULL, 10));
  shmstream_client_free(client);
  printf("c_api_check: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
