//! The bounded on-disk spool of the Kafka sink: every event is appended here first and
//! removed once the broker has acknowledged it, so events survive a broker outage (and a
//! restart of sentistream) and are sent in the order they were written.
//!
//! Layout: a folder of segment files named by the sequence number of their first record
//! (`00000000000000000042.seg`), each a run of records:
//! `u32 length | u64 seq | u64 unix ms appended | u16 topic length | topic | u16 key length | key | value`
//! (little-endian; `length` counts everything after itself). A segment is closed at
//! [`SEGMENT_BYTES`] and deleted when all its records are acknowledged. A torn last
//! record (a crash mid-write) is cut off when the folder is opened. A `LOCK` file held
//! with `flock` keeps two processes out of one folder.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::SinkError;

/// A segment is closed once it holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 1 << 20;
/// Bytes of a record besides its topic, key and value.
const OVERHEAD: u64 = 4 + 8 + 8 + 2 + 2;

/// One spooled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Sequence number (position in the spool, from 0, never reused).
    pub seq: u64,
    /// When it was appended (Unix time, ms).
    pub at_ms: u64,
    /// Kafka topic.
    pub topic: String,
    /// Kafka key (the stream id).
    pub key: String,
    /// Message value (the event's JSON).
    pub value: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    /// One past the last sequence number written to it.
    end: u64,
    bytes: u64,
    path: PathBuf,
}

/// The spool's state, behind the [`Spool`]'s mutex.
#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    /// Append handle of the last segment.
    active: Option<File>,
    next_seq: u64,
    /// Every record below this is acknowledged.
    acked_below: u64,
    /// Acknowledged records at or above `acked_below`.
    acked_above: BTreeSet<u64>,
    bytes: u64,
    closed: bool,
}

/// The spool: appended by the sink, read and acknowledged by the sender thread.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
    wake: Condvar,
    _lock: File,
}

fn io_err(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        target: path.display().to_string(),
        source,
    }
}

impl Spool {
    /// Opens (or creates) the spool folder, takes its lock and recovers what an earlier
    /// run left unsent; `limit` bounds its size in bytes.
    pub fn open(dir: &Path, limit: u64) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is touched.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SinkError::Spec {
                spec: dir.display().to_string(),
                reason: "this spool folder is in use by another sentistream process; give each process its own sinks.kafka.spool_dir".into(),
            });
        }
        let segments = recover(dir)?;
        let next_seq = segments.back().map_or(0, |s| s.end);
        let acked_below = segments.front().map_or(0, |s| s.first);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        Ok(Self {
            dir: dir.to_path_buf(),
            limit,
            state: Mutex::new(State {
                segments,
                active: None,
                next_seq,
                acked_below,
                acked_above: BTreeSet::new(),
                bytes,
                closed: false,
            }),
            wake: Condvar::new(),
            _lock: lock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record; refuses it when the spool is at its limit.
    pub fn append(&self, topic: &str, key: &str, value: &[u8]) -> Result<u64, AppendOutcome> {
        let len = OVERHEAD + topic.len() as u64 + key.len() as u64 + value.len() as u64;
        let mut g = self.lock();
        if g.bytes + len > self.limit {
            return Err(AppendOutcome::Full);
        }
        let seq = g.next_seq;
        let roll = g
            .segments
            .back()
            .is_none_or(|s| s.bytes >= SEGMENT_BYTES || g.active.is_none() && s.end > s.first);
        if roll {
            let path = self.dir.join(format!("{seq:020}.seg"));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| AppendOutcome::Io(io_err(&path, e)))?;
            g.active = Some(f);
            g.segments.push_back(Segment {
                first: seq,
                end: seq,
                bytes: 0,
                path,
            });
        }
        let mut buf = Vec::with_capacity(len as usize);
        buf.extend_from_slice(&((len - 4) as u32).to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&crate::event::now_ms().to_le_bytes());
        buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        buf.extend_from_slice(topic.as_bytes());
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(value);
        let path = g.segments.back().expect("pushed above").path.clone();
        g.active
            .as_mut()
            .expect("opened above")
            .write_all(&buf)
            .map_err(|e| AppendOutcome::Io(io_err(&path, e)))?;
        let s = g.segments.back_mut().expect("pushed above");
        s.end = seq + 1;
        s.bytes += len;
        g.bytes += len;
        g.next_seq = seq + 1;
        drop(g);
        self.wake.notify_all();
        Ok(seq)
    }

    /// Marks a record delivered; segments whose records are all delivered are deleted.
    pub fn ack(&self, seq: u64) {
        let mut g = self.lock();
        if seq < g.acked_below {
            return;
        }
        g.acked_above.insert(seq);
        loop {
            let below = g.acked_below;
            if !g.acked_above.remove(&below) {
                break;
            }
            g.acked_below += 1;
        }
        let mut deleted = false;
        while let Some(front) = g.segments.front()
            && front.end <= g.acked_below
            && front.end > front.first
        {
            let s = g.segments.pop_front().expect("checked");
            if g.segments.is_empty() {
                g.active = None;
            }
            let _ = std::fs::remove_file(&s.path);
            g.bytes -= s.bytes;
            deleted = true;
        }
        drop(g);
        if deleted {
            self.wake.notify_all();
        }
    }

    /// Whether `seq` was acknowledged.
    pub fn is_acked(&self, seq: u64) -> bool {
        let g = self.lock();
        seq < g.acked_below || g.acked_above.contains(&seq)
    }

    /// The first record not yet acknowledged (= the next sequence number when none).
    pub fn first_unacked(&self) -> u64 {
        self.lock().acked_below
    }

    /// Records not yet acknowledged, and the bytes the spool holds.
    pub fn pending(&self) -> (u64, u64) {
        let g = self.lock();
        (
            g.next_seq - g.acked_below - g.acked_above.len() as u64,
            g.bytes,
        )
    }

    /// Waits until a record at or past `seq` exists, the spool is closed, or `timeout`.
    pub fn wait_for(&self, seq: u64, timeout: Duration) {
        let g = self.lock();
        if g.next_seq > seq || g.closed {
            return;
        }
        let _ = self.wake.wait_timeout(g, timeout);
    }

    /// Tells waiters no more records come.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Whether [`Spool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// A reader whose first record is `seq` (or the oldest kept record, if later).
    pub fn reader(&self, seq: u64) -> SpoolReader {
        SpoolReader {
            file: None,
            next: seq,
        }
    }
}

/// Why an append failed.
#[derive(Debug)]
pub(crate) enum AppendOutcome {
    /// At the size limit: the record is dropped.
    Full,
    /// The spool folder could not be written.
    Io(SinkError),
}

/// Reads records in order, crossing segment boundaries; never reads past what the
/// writer has finished.
pub(crate) struct SpoolReader {
    /// The open segment and its path.
    file: Option<(PathBuf, BufReader<File>)>,
    next: u64,
}

impl SpoolReader {
    /// The sequence number the next read returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next record, or `None` when the writer has not written it yet.
    pub fn read_one(&mut self, spool: &Spool) -> Result<Option<Record>, SinkError> {
        let path = {
            let g = spool.lock();
            if let Some(front) = g.segments.front() {
                // Records before the oldest segment are acknowledged and deleted.
                self.next = self.next.max(front.first);
            }
            if self.next >= g.next_seq {
                return Ok(None);
            }
            match g
                .segments
                .iter()
                .find(|s| s.first <= self.next && self.next < s.end)
            {
                Some(s) => s.path.clone(),
                None => return Ok(None),
            }
        };
        if self.file.as_ref().is_none_or(|(p, _)| *p != path) {
            let f = File::open(&path).map_err(|e| io_err(&path, e))?;
            self.file = Some((path.clone(), BufReader::new(f)));
        }
        let (_, f) = self.file.as_mut().expect("opened above");
        loop {
            let torn = || {
                io_err(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "spool segment ends before its last record",
                    ),
                )
            };
            let r = read_record(f)
                .map_err(|e| io_err(&path, e))?
                .ok_or_else(torn)?;
            if r.seq >= self.next {
                self.next = r.seq + 1;
                return Ok(Some(r));
            }
        }
    }
}

/// Reads one record; `None` at a clean end of file. A torn record is `UnexpectedEof`.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<Record>> {
    let mut len = [0u8; 4];
    match r.read(&mut len[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut len[1..])?,
    }
    let len = u32::from_le_bytes(len) as usize;
    if len < (OVERHEAD - 4) as usize || len > 64 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("record length {len} is implausible"),
        ));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    let seq = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
    let at_ms = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    let tl = u16::from_le_bytes([b[16], b[17]]) as usize;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad record");
    let topic = b.get(18..18 + tl).ok_or_else(bad)?;
    let kl_at = 18 + tl;
    let kl = u16::from_le_bytes(
        b.get(kl_at..kl_at + 2)
            .ok_or_else(bad)?
            .try_into()
            .expect("2 bytes"),
    ) as usize;
    let key = b.get(kl_at + 2..kl_at + 2 + kl).ok_or_else(bad)?;
    let value = b[kl_at + 2 + kl..].to_vec();
    let text = |x: &[u8]| String::from_utf8(x.to_vec()).map_err(|_| bad());
    Ok(Some(Record {
        seq,
        at_ms,
        topic: text(topic)?,
        key: text(key)?,
        value,
    }))
}

/// Lists the segments an earlier run left, cutting a torn last record.
fn recover(dir: &Path) -> Result<VecDeque<Segment>, SinkError> {
    let mut paths: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let first = p
                .file_name()?
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()?;
            Some((first, p))
        })
        .collect();
    paths.sort();
    let mut out = VecDeque::new();
    for (first, path) in paths {
        let f = File::open(&path).map_err(|e| io_err(&path, e))?;
        let mut r = BufReader::new(f);
        let (mut end, mut good) = (first, 0u64);
        loop {
            match read_record(&mut r) {
                Ok(Some(rec)) => {
                    end = rec.seq + 1;
                    good = r.stream_position().map_err(|e| io_err(&path, e))?;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "spool segment {} ends in a torn record (a crash mid-write); cut at byte {good}",
                        path.display()
                    );
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io_err(&path, e))?;
                    f.set_len(good).map_err(|e| io_err(&path, e))?;
                    break;
                }
            }
        }
        if end == first {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        out.push_back(Segment {
            first,
            end,
            bytes: good,
            path,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(spool: &Spool, r: &mut SpoolReader) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(rec) = r.read_one(spool).unwrap() {
            out.push(rec.seq);
        }
        out
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_acks_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 64 << 20).unwrap();
        let value = vec![b'x'; 40_000];
        for i in 0..60 {
            assert_eq!(
                spool.append("t", &format!("s{}", i % 2), &value).unwrap(),
                i
            );
        }
        let segs = || std::fs::read_dir(dir.path()).unwrap().count() - 1;
        assert!(segs() >= 2, "60 x 40 kB spans several 1 MiB segments");
        let mut r = spool.reader(0);
        let first = r.read_one(&spool).unwrap().unwrap();
        assert_eq!((first.topic.as_str(), first.key.as_str()), ("t", "s0"));
        assert_eq!(first.value, value);
        assert_eq!(drain(&spool, &mut r), (1..60).collect::<Vec<_>>());
        // Acknowledged out of order: the prefix advances once the gap closes.
        spool.ack(1);
        assert_eq!(spool.first_unacked(), 0);
        spool.ack(0);
        assert_eq!(spool.first_unacked(), 2);
        for i in 2..60 {
            spool.ack(i);
        }
        assert_eq!(spool.pending(), (0, 0));
        assert_eq!(segs(), 0, "every segment deleted");
        // Appending continues with the next sequence number.
        assert_eq!(spool.append("t", "k", b"v").unwrap(), 60);
        assert_eq!(drain(&spool, &mut spool.reader(0)), vec![60]);
    }

    #[test]
    fn a_reopened_spool_resends_what_was_unacknowledged_and_cuts_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            for _ in 0..5 {
                spool.append("t", "k", b"{\"a\":1}").unwrap();
            }
            spool.ack(0);
            spool.ack(1);
            let busy = Spool::open(dir.path(), 1 << 20).unwrap_err();
            assert!(busy.to_string().contains("in use by another"), "{busy}");
        }
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        // Acknowledgements are not persisted: the whole segment is resent (at least once).
        assert_eq!(drain(&spool, &mut spool.reader(0)), vec![0, 1, 2, 3, 4]);
        assert_eq!(spool.append("t", "k", b"v").unwrap(), 5);
        assert_eq!(drain(&spool, &mut spool.reader(5)), vec![5]);
    }

    #[test]
    fn a_full_spool_refuses_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1000).unwrap();
        let mut kept = 0;
        for _ in 0..20 {
            match spool.append("topic", "key", &[b'x'; 100]) {
                Ok(_) => kept += 1,
                Err(AppendOutcome::Full) => {}
                Err(AppendOutcome::Io(e)) => panic!("{e}"),
            }
        }
        assert_eq!(kept, 7, "7 records of 133 bytes fit in 1000");
        spool.ack(0);
        assert!(
            spool.append("topic", "key", &[b'x'; 100]).is_err(),
            "segment not yet freed"
        );
    }
}
