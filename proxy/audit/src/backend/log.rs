//! The SQLite store's commit log: where a group commit is made durable
//! while commits follow one another closely, with one write and one fsync,
//! before its entries go into SQLite's tables (see `backend::sqlite`).
//!
//! Why: a commit into SQLite writes every b-tree page the batch touched
//! (the table's last leaf, the time index, the header page when the file
//! grows: about eight WAL frames, each its own two `pwrite`s) and then
//! fsyncs that. On the 2-core VM this was built on, sixteen 2 KiB
//! `pwrite`s cost about 73 µs of system time before any fsync, and the
//! fsync of them about 320 µs of wall time; one 3 KiB frame written and
//! fsynced costs about 34 µs and 140 µs. The log takes the durable commit;
//! SQLite then takes many commits' entries in one transaction, without an
//! fsync of its own, each page written once for all of them.
//!
//! The file is preallocated (written with zeros, 1 MiB at a time up to
//! 16 MiB, so an fsync of a frame flushes data, not the file's size) and
//! reused: a header names the log's generation, and every frame carries
//! it. A frame is the entries of one commit, each with its chain hash;
//! reading the log back stops at the first frame of another generation,
//! one cut short, or one whose entries do not hash to their stored hashes
//! or do not follow each other. So, as
//! with SQLite's WAL, a crash loses commits, if any, only from the tail,
//! and only commits nobody was told were durable.
//!
//! Frames start on a [`BLOCK`] boundary and are padded with zeros to the
//! next one, so that they can be written with `O_DIRECT` where the file
//! system allows it: the write goes to the device at once, and the fsync
//! that follows only flushes the device (no page-cache writeback). On the
//! VM this was built on, a 4 KiB `O_DIRECT` write and its `fdatasync`
//! cost 27–37 µs of system time and 87–128 µs of wall time against 39–55
//! and 105–170 µs buffered (2,000 each, four rounds alternated). The
//! padding writes no more than buffered writes did (whole pages). No
//! frame ever shares a block with an earlier one, so a torn write never
//! touches a commit already acknowledged. Where `O_DIRECT` is refused
//! (some file systems), the same padded frames are written through the
//! page cache; so they are on a slow disk, where a direct write waits for
//! the device and would hold the writer, while with the page cache the
//! writer goes on and the fsync threads wait (see `writer`).
//!
//! A log belongs to one chain (instance) and one process: it is locked
//! while open, and a second writer of the same chain is refused.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::chain::{ChainHash, Entry};
use crate::error::{AuditError, Result};
use hoop_common::time::Timestamp;

/// Padded frames (see the module docs).
const MAGIC: &[u8; 8] = b"HOOPCLG2";

/// Frames one after another, unpadded: read back after an upgrade.
const MAGIC_UNPADDED: &[u8; 8] = b"HOOPCLG1";

/// The unit of an `O_DIRECT` write: frames start at a multiple of it and
/// fill whole blocks (4 KiB covers the logical block size of every disk
/// in use: 512 or 4096).
const BLOCK: usize = 4096;

/// The header's share of the file; frames start after it.
const HEADER_SIZE: u64 = 4096;

/// The file's largest size. When a commit does not fit, the pending
/// entries go into SQLite (made durable) and the log starts again at its
/// start.
pub(crate) const LOG_SIZE: u64 = 16 * 1024 * 1024;

/// The file grows by this much (zeros, fsynced with its size) when a frame
/// needs room, from this much at first.
const GROW_BY: u64 = 1024 * 1024;

/// A frame's fixed part: generation (8), body length (4), entry count (4).
const FRAME_HEAD: usize = 16;

/// A direct write that takes longer than this is slow ...
const SLOW_DIRECT_WRITE: Duration = Duration::from_millis(1);

/// ... and after this many slow ones in a row, frames go through the page
/// cache.
const SLOW_DIRECT_WRITES: u32 = 16;

/// How long opening waits for another process's lock on the log.
const LOCK_WAIT: Duration = Duration::from_secs(2);

pub(crate) struct CommitLog {
    /// Locked; read, grown and fsynced through this handle.
    file: Arc<File>,
    /// The same file opened with `O_DIRECT`, for frames; `None` where the
    /// file system refuses it, or the disk is slow.
    direct: Option<File>,
    /// Direct writes slower than `slow_write` in a row.
    slow_writes: u32,
    /// [`SLOW_DIRECT_WRITE`] (tests make every write slow).
    slow_write: Duration,
    path: PathBuf,
    instance: String,
    generation: u64,
    /// Where the next frame goes.
    offset: u64,
    /// The file's size (written and fsynced).
    allocated: u64,
    /// Set by [`CommitLog::restart`]: frames go into a generation whose
    /// header is durable.
    ready: bool,
    /// A frame being encoded (kept for its capacity).
    buffer: Vec<u8>,
    /// The frame padded to whole blocks, in memory aligned as `O_DIRECT`
    /// needs.
    blocks: Vec<Block>,
}

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// `bytes` copied into whole zero-padded blocks.
fn fill_blocks<'a>(blocks: &'a mut Vec<Block>, bytes: &[u8]) -> &'a [u8] {
    blocks.clear();
    blocks.resize(bytes.len().div_ceil(BLOCK), Block([0; BLOCK]));
    // SAFETY: `Block` is a `repr(C)` byte array with no padding (its size
    // is its alignment), so the vector's blocks are `len * BLOCK`
    // initialised, contiguous bytes, borrowed mutably for as long as the
    // slice lives.
    let all = unsafe {
        std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), blocks.len() * BLOCK)
    };
    all[..bytes.len()].copy_from_slice(bytes);
    all
}

/// `path` opened again with `O_DIRECT`, if its file system takes it
/// (else frames go through the page cache, which is said once).
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::info!(
                path = %path.display(),
                %error,
                "the audit commit log cannot be opened with O_DIRECT; writing it through the page cache"
            );
            None
        }
    }
}

/// The log of `instance`'s chain beside the SQLite file `db`.
pub(crate) fn log_path(db: &Path, instance: &str) -> PathBuf {
    // Letters, digits and '-' as they are; anything else as _xx, so two
    // instance ids never share a file.
    let mut suffix = String::from("-log-");
    for byte in instance.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            suffix.push(char::from(byte));
        } else {
            suffix.push_str(&format!("_{byte:02x}"));
        }
    }
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl CommitLog {
    /// Opens (creating and preallocating if needed) and locks the log of
    /// `instance` at `path`, and returns it with the entries of its
    /// current generation, in order. The caller must make those durable
    /// elsewhere, then call [`CommitLog::restart`] before appending.
    pub(crate) fn open(path: &Path, instance: &str) -> Result<(CommitLog, Vec<Entry>)> {
        let unavailable = |what: &str, e: std::io::Error| {
            AuditError::Unavailable(format!("{what} {}: {e}", path.display()))
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| unavailable("cannot open the audit commit log", e))?;
        lock(&file, path, instance)?;
        let size = file
            .metadata()
            .map_err(|e| unavailable("cannot read the size of", e))?
            .len();
        if size == 0 {
            // A new file: its name must survive a power loss too.
            sync_directory(path).map_err(|e| unavailable("cannot fsync the directory of", e))?;
        }
        let mut log = CommitLog {
            file: Arc::new(file),
            direct: open_direct(path),
            slow_writes: 0,
            slow_write: SLOW_DIRECT_WRITE,
            path: path.to_owned(),
            instance: instance.to_owned(),
            generation: 0,
            offset: HEADER_SIZE,
            allocated: size,
            ready: false,
            buffer: Vec::new(),
            blocks: Vec::new(),
        };
        if size < GROW_BY {
            log.grow(GROW_BY)?;
        }
        let entries = match log.read_header() {
            Some((generation, padded)) => {
                log.generation = generation;
                log.read_frames(padded)?
            }
            None => Vec::new(),
        };
        Ok((log, entries))
    }

    /// The file a commit written here needs fsynced.
    pub(crate) fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Writes one commit's entries as a frame (not yet fsynced). `false`:
    /// it does not fit before the end; nothing was written.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<bool> {
        if !self.ready {
            return Err(AuditError::Unavailable(
                "the audit commit log was not started".into(),
            ));
        }
        if entries.is_empty() {
            return Ok(true);
        }
        self.buffer.clear();
        encode_frame(&mut self.buffer, self.generation, entries)?;
        let end = self.offset + self.buffer.len().next_multiple_of(BLOCK) as u64;
        if end > LOG_SIZE {
            if self.offset == HEADER_SIZE {
                return Err(AuditError::Unavailable(format!(
                    "a commit of {} bytes does not fit the audit commit log",
                    self.buffer.len()
                )));
            }
            return Ok(false);
        }
        if end > self.allocated {
            self.grow((end.div_ceil(GROW_BY) * GROW_BY).min(LOG_SIZE))?;
        }
        let frame = fill_blocks(&mut self.blocks, &self.buffer);
        let started = Instant::now();
        let written = match &self.direct {
            Some(direct) => match direct.write_all_at(frame, self.offset) {
                // Refused for this file system or device after all (an
                // alignment it does not take): the page cache from now on.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        %error,
                        "the audit commit log cannot be written with O_DIRECT; writing it through the page cache"
                    );
                    self.direct = None;
                    self.file.write_all_at(frame, self.offset)
                }
                other => other,
            },
            None => self.file.write_all_at(frame, self.offset),
        };
        written.map_err(|e| self.io_error("cannot write", e))?;
        if self.direct.is_some() {
            self.slow_writes = if started.elapsed() > self.slow_write {
                self.slow_writes + 1
            } else {
                0
            };
            if self.slow_writes >= SLOW_DIRECT_WRITES {
                tracing::info!(
                    path = %self.path.display(),
                    "the audit commit log's disk is slow; writing it through the page cache"
                );
                self.direct = None;
            }
        }
        self.offset = end;
        Ok(true)
    }

    /// Starts a new generation at the log's start, durably: every frame
    /// written so far no longer counts. Only once their entries are
    /// durable elsewhere.
    pub(crate) fn restart(&mut self) -> Result<()> {
        let generation = self.generation + 1;
        let header = header_bytes(MAGIC, generation, &self.instance);
        self.file
            .write_all_at(&header, 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.io_error("cannot restart", e))?;
        self.generation = generation;
        self.offset = HEADER_SIZE;
        self.ready = true;
        Ok(())
    }

    /// Writes zeros up to `size` and fsyncs them with the file's size:
    /// fsyncs of frames written there then flush data only.
    fn grow(&mut self, size: u64) -> Result<()> {
        let zeros = vec![0u8; GROW_BY as usize];
        let mut at = self.allocated;
        while at < size {
            let len = zeros.len().min((size - at) as usize);
            self.file
                .write_all_at(&zeros[..len], at)
                .map_err(|e| self.io_error("cannot grow", e))?;
            at += len as u64;
        }
        self.file
            .sync_all()
            .map_err(|e| self.io_error("cannot grow", e))?;
        self.allocated = size;
        Ok(())
    }

    /// The generation a valid header of this instance names, and whether
    /// its frames are padded. A header that is neither valid nor blank (a
    /// damaged file: whatever frames follow are not read) is reported.
    fn read_header(&self) -> Option<(u64, bool)> {
        match read_header(&self.file, &self.instance) {
            Header::Valid { generation, padded } => Some((generation, padded)),
            Header::Blank => None,
            Header::Damaged => {
                tracing::error!(
                    path = %self.path.display(),
                    instance = %self.instance,
                    "ALERT: the audit commit log's header is damaged; records it held and the tables lack are not recovered"
                );
                None
            }
        }
    }

    /// The entries of the current generation's frames, up to the first
    /// that is not whole and valid; the next frame goes after them.
    fn read_frames(&mut self, padded: bool) -> Result<Vec<Entry>> {
        let (entries, end) = read_frames(&self.file, self.generation, &self.instance, padded);
        self.offset = end;
        Ok(entries)
    }

    /// Where the last frame written starts (tests tear it).
    #[cfg(test)]
    pub(crate) fn last_frame_at(&self) -> u64 {
        self.offset - self.buffer.len().next_multiple_of(BLOCK) as u64
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> AuditError {
        AuditError::Unavailable(format!(
            "{what} the audit commit log {}: {e}",
            self.path.display()
        ))
    }
}

impl Drop for CommitLog {
    /// Unlocks at once: an fsync job may still hold the file (a failed
    /// one's, for good), and the reopened store locks it again.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

enum Header {
    Valid { generation: u64, padded: bool },
    Blank,
    Damaged,
}

fn read_header(file: &File, instance: &str) -> Header {
    let mut header = [0u8; HEADER_SIZE as usize];
    if file.read_exact_at(&mut header, 0).is_err() {
        return Header::Blank;
    }
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&header[8..16]);
    let generation = u64::from_le_bytes(generation);
    for (magic, padded) in [(MAGIC, true), (MAGIC_UNPADDED, false)] {
        if header[..] == header_bytes(magic, generation, instance)[..] {
            return Header::Valid { generation, padded };
        }
    }
    if header.iter().any(|&byte| byte != 0) {
        Header::Damaged
    } else {
        Header::Blank
    }
}

/// The entries of `generation`'s frames in `file`, up to the first that
/// is not whole and valid, and where that one starts.
fn read_frames(file: &File, generation: u64, instance: &str, padded: bool) -> (Vec<Entry>, u64) {
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = HEADER_SIZE;
    let mut head = [0u8; FRAME_HEAD];
    while at + FRAME_HEAD as u64 <= LOG_SIZE {
        if file.read_exact_at(&mut head, at).is_err() {
            break;
        }
        let (frame_generation, len, count) = frame_head(&head);
        let end = at + FRAME_HEAD as u64 + u64::from(len);
        if frame_generation != generation || count == 0 || end > LOG_SIZE {
            break;
        }
        let mut body = vec![0u8; len as usize];
        if file
            .read_exact_at(&mut body, at + FRAME_HEAD as u64)
            .is_err()
        {
            break;
        }
        let Some(frame) = decode_body(&body, count, instance) else {
            break;
        };
        // Within a frame the entries follow each other; from one frame
        // to the next they need not: commits made straight into the
        // tables come between (the caller links them to the tables).
        let follows = |w: &[Entry]| w[0].seq + 1 == w[1].seq && w[0].hash == w[1].prev_hash;
        if !frame.iter().all(|e| e.compute_hash() == e.hash) || !frame.windows(2).all(follows) {
            break;
        }
        entries.extend(frame);
        at = if padded {
            end.next_multiple_of(BLOCK as u64)
        } else {
            end
        };
    }
    (entries, at)
}

/// The entries every commit log beside the SQLite file `db` holds in its
/// current generation, by instance, read without taking the logs' locks
/// (a gateway may be writing them): what a reader adds to the tables.
/// A frame being written, or a generation started meanwhile, ends a log's
/// entries where they stop being whole and valid, as after a crash.
/// Logs that cannot be read, or whose header is damaged, are reported
/// and skipped.
pub(crate) fn read_logs(db: &Path) -> Vec<(String, Vec<Entry>)> {
    let Some(name) = db.file_name().and_then(|name| name.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{name}-log-");
    let directory = match db.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let listing = match std::fs::read_dir(directory) {
        Ok(listing) => listing,
        Err(error) => {
            tracing::warn!(directory = %directory.display(), %error, "cannot list the audit commit logs; records they hold and the tables lack are not shown");
            return Vec::new();
        }
    };
    let mut logs = Vec::new();
    for found in listing.flatten() {
        let file_name = found.file_name();
        let Some(instance) = file_name
            .to_str()
            .and_then(|file_name| file_name.strip_prefix(&prefix))
            .and_then(instance_from_suffix)
        else {
            continue;
        };
        let path = found.path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the audit commit log; records it holds and the tables lack are not shown");
                continue;
            }
        };
        let mut header = read_header(&file, &instance);
        if matches!(header, Header::Damaged) {
            // Perhaps read while its gateway rewrote it (a new
            // generation): read it once more before calling it damaged.
            header = read_header(&file, &instance);
        }
        match header {
            Header::Valid { generation, padded } => {
                let (entries, _) = read_frames(&file, generation, &instance, padded);
                if !entries.is_empty() {
                    logs.push((instance, entries));
                }
            }
            Header::Blank => {}
            Header::Damaged => {
                tracing::warn!(path = %path.display(), %instance, "the audit commit log's header is damaged; records it held and the tables lack are not shown");
            }
        }
    }
    logs.sort_by(|a, b| a.0.cmp(&b.0));
    logs
}

/// The instance a log's name suffix encodes (see [`log_path`]).
fn instance_from_suffix(suffix: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(suffix.len());
    let mut rest = suffix.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if byte.is_ascii_alphanumeric() || byte == b'-' {
            bytes.push(byte);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

fn sync_directory(path: &Path) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

/// Takes the log's lock, waiting a little for a writer that is closing.
fn lock(file: &File, path: &Path, instance: &str) -> Result<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Unavailable(format!(
                    "another process writes the audit chain {instance:?} ({} is locked); \
                     each running gateway needs its own instance_id",
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(AuditError::Unavailable(format!(
                    "cannot lock the audit commit log {}: {e}",
                    path.display()
                )))
            }
        }
    }
}

/// The header: magic, generation, the instance, and a hash of the three
/// (a torn or foreign header reads as none).
fn header_bytes(magic: &[u8; 8], generation: u64, instance: &str) -> [u8; HEADER_SIZE as usize] {
    let mut header = [0u8; HEADER_SIZE as usize];
    header[..8].copy_from_slice(magic);
    header[8..16].copy_from_slice(&generation.to_le_bytes());
    let mut hasher = Sha256::new();
    hasher.update(magic);
    hasher.update(generation.to_le_bytes());
    hasher.update(instance.as_bytes());
    header[16..48].copy_from_slice(&hasher.finalize());
    header
}

fn frame_head(head: &[u8; FRAME_HEAD]) -> (u64, u32, u32) {
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&head[..8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[8..12]);
    let mut count = [0u8; 4];
    count.copy_from_slice(&head[12..16]);
    (
        u64::from_le_bytes(generation),
        u32::from_le_bytes(len),
        u32::from_le_bytes(count),
    )
}

/// Appends the frame of `entries` to `out`. Per entry: seq, time (µs),
/// kind, session id (flag, then the string), payload, prev_hash, hash;
/// strings as a u32 length and their bytes, integers little-endian.
fn encode_frame(out: &mut Vec<u8>, generation: u64, entries: &[Entry]) -> Result<()> {
    let too_large = || AuditError::Unavailable("an audit commit too large for its log".into());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    for entry in entries {
        out.extend_from_slice(&entry.seq.to_le_bytes());
        out.extend_from_slice(&entry.time.unix_micros().to_le_bytes());
        put_str(out, &entry.kind).ok_or_else(too_large)?;
        match &entry.session_id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                put_str(out, id).ok_or_else(too_large)?;
            }
        }
        put_str(out, &entry.payload).ok_or_else(too_large)?;
        out.extend_from_slice(&entry.prev_hash.0);
        out.extend_from_slice(&entry.hash.0);
    }
    let len = u32::try_from(out.len() - FRAME_HEAD).map_err(|_| too_large())?;
    let count = u32::try_from(entries.len()).map_err(|_| too_large())?;
    out[8..12].copy_from_slice(&len.to_le_bytes());
    out[12..16].copy_from_slice(&count.to_le_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, text: &str) -> Option<()> {
    out.extend_from_slice(&u32::try_from(text.len()).ok()?.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Some(())
}

/// The entries of a frame's body, if it holds exactly `count` of them.
fn decode_body(body: &[u8], count: u32, instance: &str) -> Option<Vec<Entry>> {
    let mut reader = Reader(body);
    let mut entries = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let seq = u64::from_le_bytes(reader.array()?);
        let time = Timestamp::from_unix_micros(i64::from_le_bytes(reader.array()?));
        let kind = reader.string()?;
        let session_id = match reader.array::<1>()? {
            [0] => None,
            [1] => Some(reader.string()?),
            _ => return None,
        };
        let payload = reader.string()?;
        let prev_hash = ChainHash(reader.array()?);
        let hash = ChainHash(reader.array()?);
        entries.push(Entry {
            instance: instance.to_owned(),
            seq,
            time,
            kind,
            session_id,
            payload,
            prev_hash,
            hash,
        });
    }
    reader.0.is_empty().then_some(entries)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        if len > self.0.len() {
            return None;
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(text.to_vec()).ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Entries `from..from + count` of chain `gw-1` following `prev`, each
    /// with `payload(seq)` (every other one with a session id).
    pub(crate) fn sealed_run(
        from: u64,
        count: u64,
        prev: ChainHash,
        payload: impl Fn(u64) -> String,
    ) -> Vec<Entry> {
        let mut prev = prev;
        (from..from + count)
            .map(|seq| {
                let entry = Entry::seal(
                    "gw-1",
                    seq,
                    Timestamp::from_unix_micros(seq as i64),
                    "statement",
                    (seq % 2 == 0).then_some("s-1"),
                    payload(seq),
                    prev,
                );
                prev = entry.hash;
                entry
            })
            .collect()
    }

    /// A new log of chain `gw-1` in `dir`, started, and its path.
    fn started(dir: &tempfile::TempDir) -> (CommitLog, PathBuf) {
        let path = log_path(&dir.path().join("audit.db"), "gw-1");
        let (mut log, _) = CommitLog::open(&path, "gw-1").expect("open");
        log.restart().expect("restart");
        (log, path)
    }

    /// Starts `log` again, writes one frame and checks that reopening the
    /// file finds that frame alone.
    fn restart_with_one_frame(mut log: CommitLog, path: &Path) {
        log.restart().expect("restart");
        assert!(log
            .append(&chain(1, 1, ChainHash::GENESIS))
            .expect("append"));
        drop(log);
        let (_log, found) = CommitLog::open(path, "gw-1").expect("reopen");
        assert_eq!(found.len(), 1);
    }

    fn chain(from: u64, count: u64, prev: ChainHash) -> Vec<Entry> {
        sealed_run(from, count, prev, |seq| format!("{{\"n\":{seq}}}"))
    }

    #[test]
    fn a_log_name_gives_back_its_instance() {
        for instance in ["gw-1", "a.b/c d", "ünï", "_x_", ""] {
            let path = log_path(Path::new("/x/audit.db"), instance);
            let name = path.file_name().and_then(|n| n.to_str()).expect("name");
            let suffix = name.strip_prefix("audit.db-log-").expect("prefix");
            assert_eq!(instance_from_suffix(suffix).as_deref(), Some(instance));
        }
        assert_eq!(instance_from_suffix("a_z1"), None);
        assert_eq!(instance_from_suffix("a_4"), None);
        assert_eq!(instance_from_suffix("a.b"), None);
    }

    #[test]
    fn logs_are_read_without_their_lock_up_to_a_frame_being_written() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("audit.db");
        let (mut log, path) = started(&dir);
        let first = chain(1, 3, ChainHash::GENESIS);
        assert!(log.append(&first).expect("append"));
        let second = chain(4, 2, first[2].hash);
        let at = log.offset;
        assert!(log.append(&second).expect("append"));
        // Held open and locked by its writer; another chain's log beside
        // it, and an unrelated file.
        let other = log_path(&db, "gw 2");
        let (mut log2, _) = CommitLog::open(&other, "gw 2").expect("open");
        log2.restart().expect("restart");
        let theirs = vec![Entry::seal(
            "gw 2",
            1,
            Timestamp::from_unix_micros(1),
            "statement",
            None,
            "{}".into(),
            ChainHash::GENESIS,
        )];
        assert!(log2.append(&theirs).expect("append"));
        std::fs::write(dir.path().join("audit.db-log-"), b"not a log").expect("write");
        let logs = read_logs(&db);
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].0, "gw 2");
        assert_eq!(logs[0].1, theirs);
        assert_eq!(logs[1].0, "gw-1");
        assert_eq!(logs[1].1.len(), 5);
        // The second frame half written: the first alone is read.
        let file = OpenOptions::new().write(true).open(&path).expect("file");
        file.write_all_at(&[0; 8], at + FRAME_HEAD as u64 + 12)
            .expect("tear");
        let logs = read_logs(&db);
        assert_eq!(logs[1].1, first);
        // A new generation: the old frames are over.
        log.restart().expect("restart");
        assert_eq!(read_logs(&db).len(), 1);
    }

    #[test]
    fn frames_read_back_until_the_first_that_is_not_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let path = log_path(&dir.path().join("audit.db"), "gw-1");
        let (mut log, found) = CommitLog::open(&path, "gw-1").expect("open");
        assert!(found.is_empty());
        assert_eq!(std::fs::metadata(&path).expect("size").len(), GROW_BY);
        log.restart().expect("restart");
        let first = chain(1, 3, ChainHash::GENESIS);
        let second = chain(4, 2, first[2].hash);
        assert!(log.append(&first).expect("append"));
        assert!(log.append(&second).expect("append"));
        let torn_at = log.offset;
        let third = chain(6, 1, second[1].hash);
        assert!(log.append(&third).expect("append"));
        drop(log);

        let (log, found) = CommitLog::open(&path, "gw-1").expect("reopen");
        assert_eq!(found.len(), 6);
        assert_eq!(found[..3], first[..]);
        drop(log);

        // The last frame cut short (a crash mid-write): the two before it
        // remain.
        let file = OpenOptions::new().write(true).open(&path).expect("file");
        file.write_all_at(&[0; 40], torn_at + FRAME_HEAD as u64 + 20)
            .expect("tear");
        drop(file);
        let (log, found) = CommitLog::open(&path, "gw-1").expect("reopen");
        assert_eq!(found.len(), 5);

        // A new generation: the old frames no longer count, even where the
        // new ones have not overwritten them.
        restart_with_one_frame(log, &path);
    }

    #[test]
    fn frames_fill_whole_blocks_through_either_handle() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, path) = started(&dir);
        // One frame of a few entries, one of more than a block.
        let small = chain(1, 2, ChainHash::GENESIS);
        let large = sealed_run(3, 3, small[1].hash, |seq| {
            format!("{{\"n\":{seq},\"sql\":\"{}\"}}", "x".repeat(2000))
        });
        assert!(log.append(&small).expect("append"));
        assert_eq!(log.offset, HEADER_SIZE + BLOCK as u64);
        assert!(log.append(&large).expect("append"));
        assert_eq!(log.offset, HEADER_SIZE + 3 * BLOCK as u64);
        // Through the page cache (a file system that refuses O_DIRECT):
        // the same frames.
        log.direct = None;
        let last = chain(6, 1, large[2].hash);
        assert!(log.append(&last).expect("append"));
        assert_eq!(log.offset, HEADER_SIZE + 4 * BLOCK as u64);
        drop(log);
        let (_log, found) = CommitLog::open(&path, "gw-1").expect("reopen");
        assert_eq!(found, [small, large, last].concat());
    }

    #[test]
    fn a_slow_disk_moves_frames_to_the_page_cache_and_loses_none() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, path) = started(&dir);
        if log.direct.is_none() {
            eprintln!("skipped: this file system refuses O_DIRECT");
            return;
        }
        // Every direct write counts as slow here.
        log.slow_write = Duration::ZERO;
        let mut prev = ChainHash::GENESIS;
        let mut written = Vec::new();
        for n in 0..u64::from(SLOW_DIRECT_WRITES) + 2 {
            let frame = chain(n + 1, 1, prev);
            prev = frame[0].hash;
            assert!(log.append(&frame).expect("append"));
            let expected = n + 1 < u64::from(SLOW_DIRECT_WRITES);
            assert_eq!(log.direct.is_some(), expected, "after {} writes", n + 1);
            written.extend(frame);
        }
        drop(log);
        let (_log, found) = CommitLog::open(&path, "gw-1").expect("reopen");
        assert_eq!(found, written);
    }

    #[test]
    fn a_log_of_unpadded_frames_is_read_back() {
        // Written by a gateway before frames were padded (then a crash,
        // and an upgrade).
        let dir = tempfile::tempdir().expect("dir");
        let path = log_path(&dir.path().join("audit.db"), "gw-1");
        let first = chain(1, 2, ChainHash::GENESIS);
        let second = chain(3, 1, first[1].hash);
        let mut bytes = header_bytes(MAGIC_UNPADDED, 7, "gw-1").to_vec();
        for frame in [&first, &second] {
            let mut encoded = Vec::new();
            encode_frame(&mut encoded, 7, frame).expect("encode");
            bytes.extend(encoded);
        }
        bytes.resize(GROW_BY as usize, 0);
        std::fs::write(&path, &bytes).expect("write");
        let (log, found) = CommitLog::open(&path, "gw-1").expect("open");
        assert_eq!(found, [first, second].concat());
        // Started again, it writes padded frames under a new header.
        restart_with_one_frame(log, &path);
        let header = std::fs::read(&path).expect("read");
        assert_eq!(&header[..8], MAGIC);
    }

    #[test]
    fn a_frame_whose_entries_were_changed_ends_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, path) = started(&dir);
        let first = chain(1, 2, ChainHash::GENESIS);
        assert!(log.append(&first).expect("append"));
        // Frames need not follow each other (commits into the tables come
        // between): 3 and 4 went there.
        let later = chain(5, 1, ChainHash([9; 32]));
        assert!(log.append(&later).expect("append"));
        drop(log);
        let (log, found) = CommitLog::open(&path, "gw-1").expect("reopen");
        assert_eq!(found, [first.clone(), later].concat());
        drop(log);

        // A payload byte changed in place: its hash no longer matches.
        let bytes = std::fs::read(&path).expect("read");
        let at = bytes
            .windows(7)
            .position(|w| w == b"{\"n\":2}")
            .expect("payload");
        let file = OpenOptions::new().write(true).open(&path).expect("file");
        file.write_all_at(b"3", (at + 5) as u64).expect("change");
        drop(file);
        let (_log, found) = CommitLog::open(&path, "gw-1").expect("reopen");
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn one_process_writes_a_log_and_instances_do_not_share_one() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("audit.db");
        assert_ne!(log_path(&db, "gw/1"), log_path(&db, "gw_1"));
        assert!(log_path(&db, "gw-1").ends_with("audit.db-log-gw-1"));
        let path = log_path(&db, "gw-1");
        let (log, _) = CommitLog::open(&path, "gw-1").expect("open");
        // flock is per open file description: a second open is refused
        // as another process's would be.
        let Err(refused) = CommitLog::open(&path, "gw-1") else {
            panic!("a second writer of the same log must be refused");
        };
        assert!(refused.to_string().contains("instance_id"), "{refused}");
        // An fsync job may hold the file past the log (a failed one's
        // for good): closing the log still frees it.
        let held = log.file();
        drop(log);
        CommitLog::open(&path, "gw-1").expect("free once the log is closed");
        drop(held);
        // Another instance's header is not this one's.
        let (_, found) = CommitLog::open(&path, "gw-2").expect("open");
        assert!(found.is_empty());
    }
}
