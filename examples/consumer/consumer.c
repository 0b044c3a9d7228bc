/* Writes 1 MiB through a stream and reads it back zero-copy, with shmstream's C API.
 * Connects to $SHMSTREAM_SOCKET (or the per-user daemon); prints one line; exit 0 if it matched. */
#include <shmstream/shmstream.h>
#include <stdio.h>
#include <unistd.h>

static int check(int code, const char* what) {
  if (code != SHMSTREAM_OK) {
    fprintf(stderr, "consumer_c: %s: %s: %s\n", what, shmstream_code_name(code),
            shmstream_last_error());
  }
  return code == SHMSTREAM_OK;
}

int main(void) {
  enum { kTotal = 1 << 20, kChunk = 4096 };
  char name[64];
  snprintf(name, sizeof name, "consumer-c-%d", (int)getpid());

  shmstream_client* client;
  if (!check(shmstream_connect(NULL, &client), "connect")) return 1;
  shmstream_producer* producer;
  if (!check(shmstream_create(client, name, NULL, &producer), "create")) return 1;
  for (size_t off = 0; off < kTotal; off += kChunk) {
    void* room; /* zero-copy: fill the stream's own memory, then commit */
    if (!check(shmstream_reserve(producer, kChunk, SHMSTREAM_FOREVER, &room), "reserve")) return 1;
    for (size_t i = 0; i < kChunk; ++i) ((char*)room)[i] = (char)((off + i) * 31 % 251);
    if (!check(shmstream_commit(producer, kChunk), "commit")) return 1;
  }
  if (!check(shmstream_producer_close(producer), "close")) return 1;
  shmstream_producer_free(producer);

  shmstream_reader* reader;
  if (!check(shmstream_open(client, name, NULL, &reader), "open")) return 1;
  size_t got = 0;
  for (;;) {
    const void* data;
    size_t size;
    if (!check(shmstream_next(reader, 65536, SHMSTREAM_FOREVER, &data, &size), "next")) return 1;
    if (size == 0) break; /* the clean end */
    for (size_t i = 0; i < size; ++i, ++got) {
      if (((const char*)data)[i] != (char)(got * 31 % 251)) {
        fprintf(stderr, "consumer_c: wrong byte at offset %zu\n", got);
        return 1;
      }
    }
  }
  shmstream_reader_free(reader);
  int removed = check(shmstream_remove(client, name, 0), "remove");
  shmstream_client_free(client);
  if (!removed) return 1;
  printf("consumer_c: %zu bytes written and read back intact\n", got);
  return got == kTotal ? 0 : 1;
}
