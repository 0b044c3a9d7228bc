# The control protocol between shmstreamd and its clients, over a Unix stream socket carrying
# Cap'n Proto two-party RPC with file-descriptor passing. The daemon's bootstrap capability is
# a Control. Data never crosses this socket: streams are shared-memory segments whose file
# descriptors ride along with the Producer and Reader capabilities.
@0x8d157951b88925ff;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shmstream::proto");

struct Status {
  # The outcome of a request. Every fallible method returns one instead of throwing, so that a
  # refused request is an answer, not a broken connection.
  code @0 :UInt16;
  # A shmstream::ErrorCode value (shm/include/shmstream/status.hpp); 0 = ok.
  message @1 :Text;
  # Names the object and the cause, e.g. `stream "cam0": already exists`.
}

enum StreamState {
  open @0;       # the producer may append
  closed @1;     # ended cleanly
  aborted @2;    # the producer died or gave up without closing
  cancelled @3;  # removed by force
}

struct StreamInfo {
  name @0 :Text;
  state @1 :StreamState;
  removing @2 :Bool;
  # Removed, but a producer or reader still holds it; it cannot be opened any more.
  bytes @3 :UInt64;
  # Committed length.
  readers @4 :UInt32;
  # Readers holding it now (each open Reader capability counts once).
  producerPid @5 :UInt32;
  producerUid @6 :UInt32;
  maxBytes @7 :UInt64;
  # The stream's maximum length (its mapping reservation).
  createdUnixNs @8 :UInt64;
  streamId @9 :UInt64;
  # Unique per segment; a name re-created after removal gets a new id.
  ringCapacity @10 :UInt64;
  # 0 for an unbounded stream; else the ring's capacity in bytes.
  retention @11 :Retention;
  oldest @12 :UInt64;
  # The oldest offset still available (0 unless a ring wrapped).
  records @13 :Bool;
  # The stream carries framed records, not plain bytes.
  maxReaders @14 :UInt32;
  slowestReader @15 :UInt64;
  # The lowest position a reader has published (equal to `bytes` when there are no readers).
  cursors @16 :List(CursorInfo);
  # The stream's named cursors, by name.
  directory @17 :Text;
  # A persistent stream's directory; empty for a stream in shared memory.
  ownerGid @18 :UInt32;
  # The stream's group (its creator's primary group); the owner is `producerUid`.
  mode @19 :Mode;
  # Who may open it; the segment file carries the same permissions.
  attached @20 :List(ReaderInfo);
  # Each reader attached now, for monitoring (`shmstream top`).
  origin @21 :UInt64;
  # See CreateOptions.origin.
  resumeGraceMs @22 :UInt32;
  # See CreateOptions.resumeGraceMs.
  awaitingProducer @23 :Bool;
  # Open, but its producer died: waiting (up to the grace) for another to resume it.
  stallLimitMs @25 :UInt32;
  # See CreateOptions.stallLimitMs.
  producerWaitsFor @26 :UInt64;
  # A block ring's producer waiting for room: the offset it waits for its readers to pass
  # (all ones when it does not wait); `stalledMs`: for how long.
  stalledMs @27 :UInt64;
  abortKind @28 :UInt32;
  # An aborted stream: why (shmstream::AbortKind; 0 when none was recorded), with the reason's
  # code (an exit status, a signal, a pid, ...) and text, as its header records them.
  abortCode @29 :Int32;
  abortMessage @30 :Text;
  recordCount @31 :UInt64;
  # A records stream's records committed so far (as its producer counts them).
  writeRateBytesPerS @32 :Float64;
  # Bytes committed per second over about the last second, as the daemon samples them.
  lastWriteAgeMs @33 :UInt64;
  # Since the daemon last saw the length grow; all ones if it never did.
  allocatedBytes @34 :UInt64;
  # What the stream's files take (segment, reader table, reader pages): memory, or disk for a
  # persistent stream.
  damage @24 :Text;
  # Empty unless the daemon found the stream's files damaged (e.g. the segment shrank under
  # its mappings): what it found. Its readers get `corrupt`.
}

struct DaemonInfo {
  version @0 :Text;
  pid @1 :UInt32;
  uid @2 :UInt32;
  socket @3 :Text;
  startedUnixNs @4 :UInt64;
  configFile @5 :Text;
  # The configuration file it read; empty if none.
  segmentDir @6 :Text;
  persistDir @7 :Text;
  # Empty: no persistent directory of its own.
  streams @8 :UInt32;
  # Live streams; `removing`: removed ones still held.
  removing @9 :UInt32;
  memoryBytes @10 :UInt64;
  # Memory its in-memory streams take (allocated bytes, removing ones included).
  diskBytes @11 :UInt64;
  # Disk its persistent streams take.
  connections @12 :UInt32;
  maxStreamsPerUser @13 :UInt32;
  maxConnectionsPerUser @14 :UInt32;
  maxConnections @15 :UInt32;
  maxBytesPerUser @16 :UInt64;
  reserveBytes @17 :UInt64;
  defaultMaxBytes @18 :UInt64;
  defaultMaxReaders @19 :UInt32;
  maxRingBytes @20 :UInt64;
  stallLimitMs @21 :UInt64;
}

struct ReaderInfo {
  pid @0 :UInt32;
  position @1 :UInt64;
  # How far it read, as it last published it: exact for unbounded streams; a ring's readers
  # publish every 1/16 of its capacity (and before they wait). A cursor's reader: its commit.
  cursor @2 :Text;
  # The named cursor it reads as; empty for an anonymous reader.
}

enum Mode {
  # Who may open a stream for reading (its owner and root always may; only they may remove it).
  # The segment file's permission bits say the same, so the kernel refuses anyone else too.
  owner @0;     # 0600
  group @1;     # 0640: members of the owner's group
  everyone @2;  # 0644
}

struct CursorInfo {
  name @0 :Text;
  position @1 :UInt64;
  # The committed position; the cursor's lag is `bytes - position`.
  readerPid @2 :UInt32;
  # The reader holding the cursor now; 0 when none does.
}

struct OpenOptions {
  cursor @0 :Text;
  # Read as this named cursor: start at its committed position (created at the oldest offset
  # if new); only one reader at a time may hold a cursor. A cursor belongs to the user that
  # made it: anyone else (but root) gets permission_denied.
}

enum Retention {
  unbounded @0;   # every byte is kept until the stream is removed
  dropOldest @1;  # a ring; the producer never waits, overrun readers get an error
  block @2;       # a ring; the producer waits for the slowest reader
}

struct CreateOptions {
  maxBytes @0 :UInt64;
  # Maximum length of an unbounded stream; 0 = the daemon's default.
  retention @1 :Retention;
  ringCapacity @2 :UInt64;
  # For dropOldest and block: the ring's size in bytes (rounded up to 4 KiB).
  records @3 :Bool;
  maxReaders @4 :UInt32;
  # Readers allowed at once; 0 = the daemon's default.
  persistent @5 :Bool;
  # Keep the stream in a file on disk (the daemon's persistent directory, or `directory`),
  # so that it survives a daemon restart and a reboot.
  directory @6 :Text;
  # An absolute path of an existing directory to keep it in (implies persistent).
  mode @7 :Mode;
  # Who may read it; default owner only.
  resumeGraceMs @8 :UInt32;
  # When the producer dies without closing, keep the stream open this long after its process
  # exited, for a successor to resume it (Control.resume); 0 = abort at once (the default).
  origin @9 :UInt64;
  # For a stream that republishes another (bridge in): the other's offset of this one's
  # offset 0. Kept with the stream, shown by stat; shmstream itself gives it no meaning.
  stallLimitMs @10 :UInt32;
  # block rings: a reader (or a cursor nobody holds) that keeps the producer waiting longer
  # than this is evicted: it stops holding the ring, and its next read fails saying so.
  # 0 = never (the default).
}

interface Control {
  # One per connection; the daemon learns the caller's pid and uid from the socket
  # (SO_PEERCRED), never from the request.

  create @0 (name :Text, options :CreateOptions)
      -> (status :Status, producer :Producer, readerTable :SideFile, segmentPath :Text);
  # Creates an empty open stream owned by the caller, who becomes its producer. `readerTable`
  # carries the stream's reader table, read-only; the producer opens its readers' pages by
  # name beside `segmentPath` ("<segmentPath>.r<N>", N from the table).

  open @1 (name :Text, options :OpenOptions)
      -> (status :Status, reader :Reader, slot :UInt32, page :SideFile);
  # Opens a stream for reading if its mode lets the caller; counts as a reader until the
  # capability is dropped. `page` carries the reader's own page, read-write: where it asks to
  # be woken and publishes its position (a named cursor: its commits); `slot` is its slot.

  list @2 () -> (streams :List(StreamInfo));
  # Every stream, live or removing, sorted by name.

  stat @3 (name :Text) -> (status :Status, info :StreamInfo);

  remove @4 (name :Text, force :Bool) -> (status :Status);
  # Only the stream's owner (or root) may remove it.
  # Removes the name at once. Without force, current readers may read to the end and the
  # producer may write until it closes; memory is released when the last of them lets go.
  # With force, the stream is cancelled: every reader and the producer fail from now on.

  removeCursor @5 (name :Text, cursor :Text) -> (status :Status);
  # Forgets a named cursor that no reader holds (it stops holding back a blocking ring).
  # A cursor belongs to the user that made it: they, the stream's owner and root may remove it.

  reattachProducer @6 (name :Text, streamId :UInt64) -> (status :Status, producer :Producer);
  # After a daemon restart, the producer of stream `streamId` (the daemon checks the caller's
  # pid against the segment's) takes its role back; it still has its mapping, so the returned
  # capability carries no descriptor.

  reattachReader @7 (name :Text, streamId :UInt64, slot :UInt32) -> (status :Status, reader :Reader);
  # After a daemon restart, a reader still alive takes back its slot (kept for its pid since the
  # new daemon adopted the stream, and freed if it exits first). No descriptor either.

  resume @8 (name :Text)
      -> (status :Status, producer :Producer, readerTable :SideFile, segmentPath :Text);

  info @9 () -> (info :DaemonInfo);
  # Who the daemon is and what it holds (`shmstream daemon status`).

  stop @10 () -> (status :Status);
  # Shuts the daemon down as SIGTERM does (`shmstream daemon stop`): only its own user or root
  # may. It replies first, then stops serving; the caller waits for its pid to exit.

  # Takes over an open stream created with a resume grace whose producer died: the caller
  # (its owner or root) becomes its producer at its committed length. kBusy while its
  # producer's process still runs; kStreamClosed once it ended (the grace ran out).
}

interface Producer {
  # Carries the segment's read-write file descriptor (Capability::getFd()).
  # Dropping it without close() aborts the stream: readers see "producer died".

  close @0 () -> (status :Status);
  # Ends the stream cleanly at its committed length.

  abort @1 () -> (status :Status);
  # Ends the stream as aborted.
}

interface Reader {
  # Carries the segment's read-only file descriptor (Capability::getFd()).
  # Holding it counts as one reader; drop it to stop counting. No methods yet.
}

interface SideFile {
  # Carries a descriptor (Capability::getFd()): for a producer, the stream's reader table,
  # read-only (the daemon's own file, 0600); for a reader, its own reader page, read-write
  # (nobody else's reader can reach it: the file is the stream owner's, 0400).
}
