//! Live relay (issue 18): per running job, the chunks its node streams, held in memory so
//! that every subscriber (the waiting `stream: true` request, `GET /v1/jobs/{id}/stream`)
//! gets them at once, and one who comes late or reconnects gets them from where it stood.
//!
//! Memory only: no HTTP, no SQL. The ingest route (`http::relay_in`) appends; subscribers
//! read through a [`Cursor`]. Appending never waits for a subscriber: each job has one
//! shared, bounded buffer and a `watch` that says it moved; each subscriber keeps its own
//! position and takes everything new in one read, so a slow client batches instead of
//! queueing and costs the others nothing.
//!
//! **Bounds.** Per job, at most `chunks` chunks and `bytes` bytes are kept, oldest evicted
//! first; across jobs, `total_bytes`: an append that would pass it evicts its own job's
//! oldest chunks first. A cursor behind the oldest kept chunk reads [`Read::Behind`].
//!
//! **Sequence numbers** are the node's `seq`, from 0; the SSE `id:` of chunk `N` is `N`, and
//! `Last-Event-ID: N` resumes at `N + 1`.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The most bytes one [`Cursor::read`] hands out, so that a far-behind subscriber writes
/// in bounded pieces.
const READ_BYTES: usize = 64 * 1024;

/// A relay untouched for this many lingers (10 minutes by default) is forgotten even if
/// its stream never ended.
const FORSAKEN: u32 = 20;

/// How much a relay keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Chunks kept per job.
    pub chunks: usize,
    /// Bytes of chunks kept per job.
    pub bytes: usize,
    /// Bytes of chunks kept across all jobs.
    pub total_bytes: usize,
    /// How long an ended relay stays for late subscribers before it is swept.
    pub linger: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            chunks: 8_192,
            bytes: 1024 * 1024,
            total_bytes: 64 * 1024 * 1024,
            linger: Duration::from_secs(30),
        }
    }
}

/// How a relay's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Chunks may still come.
    Open,
    /// The node sent its last chunk (`end: true`).
    Complete,
    /// The node's stream broke off without its end.
    Abandoned,
}

/// Every running job's relay.
pub struct Relays {
    jobs: Mutex<HashMap<Arc<str>, Arc<Relay>>>,
    total_bytes: Arc<AtomicUsize>,
    limits: RelayLimits,
}

/// One job's relay.
pub struct Relay {
    inner: Mutex<Inner>,
    /// Bumped on every append and end: subscribers wake on it.
    moved: watch::Sender<u64>,
    total_bytes: Arc<AtomicUsize>,
    limits: RelayLimits,
}

struct Inner {
    /// The lease whose node appends; a newer lease takes the relay over.
    lease: Option<String>,
    generation: u64,
    chunks: VecDeque<(u64, Bytes)>,
    /// The `seq` of the oldest kept chunk (`next_seq` when none is kept).
    first_seq: u64,
    next_seq: u64,
    bytes: usize,
    end: RelayEnd,
    /// The store knows this generation relayed a chunk (`Queue::mark_relayed` returned).
    marked: bool,
    /// When the relay last changed or was subscribed to, for the sweep.
    touched: Instant,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Kept; `unmarked` while the store has not yet recorded that this run relayed a chunk
    /// (its first chunk, or a later one after the mark failed): mark it, then
    /// [`Ingest::marked`].
    Kept { unmarked: bool },
    /// Its `seq` was already taken: dropped.
    Duplicate,
    /// It skipped ahead: the relay expects this `seq` next.
    Gap(u64),
    /// A newer lease took the relay over.
    Stale,
}

/// A node's right to append to a job's relay, for one lease.
pub struct Ingest {
    relay: Arc<Relay>,
    generation: u64,
}

/// What a subscriber's read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The next chunks in order, with their `seq`, up to about 64 KiB.
    Chunks(Vec<(u64, Bytes)>),
    /// The cursor's next chunk was evicted; the oldest kept is `oldest`.
    Behind { oldest: u64 },
    /// Nothing new yet.
    Pending,
    /// Nothing new, and nothing will come.
    End(RelayEnd),
}

/// A subscriber's position in a job's relay.
pub struct Cursor {
    relay: Arc<Relay>,
    next: u64,
    /// The lease generation whose chunks this cursor read: chunks of another run must not
    /// be spliced after them.
    generation: Option<u64>,
    moved: watch::Receiver<u64>,
}

/// Figures for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub relays: usize,
    pub subscribers: usize,
    pub bytes: usize,
}

impl Relays {
    pub fn new(limits: RelayLimits) -> Self {
        Self {
            jobs: Mutex::new(HashMap::new()),
            total_bytes: Arc::new(AtomicUsize::new(0)),
            limits,
        }
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Relay>>> {
        // A panic elsewhere while holding the lock leaves the map whole: keep using it.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry(&self, job: &str) -> Arc<Relay> {
        let mut jobs = self.jobs();
        if let Some(relay) = jobs.get(job) {
            return relay.clone();
        }
        let relay = Arc::new(Relay {
            inner: Mutex::new(Inner {
                lease: None,
                generation: 0,
                chunks: VecDeque::new(),
                first_seq: 0,
                next_seq: 0,
                bytes: 0,
                end: RelayEnd::Open,
                marked: false,
                touched: Instant::now(),
            }),
            moved: watch::channel(0).0,
            total_bytes: self.total_bytes.clone(),
            limits: self.limits,
        });
        jobs.insert(Arc::from(job), relay.clone());
        relay
    }

    /// Opens the relay of `job` for `lease`. The same lease opening again (a node resending
    /// after a broken request) continues where it was; a different lease takes the relay
    /// over, and the older [`Ingest`]'s appends answer `Stale`.
    pub fn open(&self, job: &str, lease: &str) -> Ingest {
        let relay = self.entry(job);
        let generation = {
            let mut inner = relay.inner();
            if inner.lease.as_deref() != Some(lease) {
                if inner.lease.is_some() {
                    // A run that relayed a chunk is not leased again, unless its chunk came
                    // after its lease lapsed (the mark then refused it): a cursor that read
                    // it sees the new generation and ends (`Cursor::read`).
                    relay.clear(&mut inner);
                    inner.first_seq = 0;
                    inner.next_seq = 0;
                }
                inner.lease = Some(lease.to_owned());
                inner.generation += 1;
                inner.marked = false;
            }
            // A node resending after its request broke off takes up the same stream.
            inner.end = RelayEnd::Open;
            inner.touched = Instant::now();
            inner.generation
        };
        Ingest { relay, generation }
    }

    /// A cursor on `job`'s relay that reads from chunk `after + 1`, or from the first.
    pub fn subscribe(&self, job: &str, after: Option<u64>) -> Cursor {
        let relay = self.entry(job);
        relay.inner().touched = Instant::now();
        let moved = relay.moved.subscribe();
        Cursor {
            relay,
            next: after.map_or(0, |n| n.saturating_add(1)),
            generation: None,
            moved,
        }
    }

    /// Forgets relays nobody reads: those ended or never opened and untouched for `linger`,
    /// and any untouched for [`FORSAKEN`] `linger`s, whose node vanished without its
    /// connection closing (its job has failed by then: its lease lapsed long before). A
    /// relay with a subscriber is kept whatever its age.
    pub fn sweep(&self, now: Instant) {
        let linger = self.limits.linger;
        self.jobs().retain(|_, relay| {
            let mut inner = relay.inner();
            let idle = now.saturating_duration_since(inner.touched);
            // A relay someone reads stays: its subscriber holds it, and a new entry for the
            // same job would never reach them. They leave when their stream ends.
            let unheard = relay.moved.receiver_count() == 0;
            let done = inner.end != RelayEnd::Open || inner.lease.is_none();
            let forsaken = idle >= linger * FORSAKEN;
            let keep = !unheard || !(forsaken || (done && idle >= linger));
            if !keep {
                relay.clear(&mut inner);
            }
            keep
        });
    }

    pub fn stats(&self) -> RelayStats {
        let jobs = self.jobs();
        RelayStats {
            relays: jobs.len(),
            subscribers: jobs.values().map(|r| r.moved.receiver_count()).sum(),
            bytes: self.total_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Relay {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Evicts the oldest chunk; false when none is kept.
    fn evict(&self, inner: &mut Inner) -> bool {
        let Some((seq, chunk)) = inner.chunks.pop_front() else {
            return false;
        };
        inner.bytes -= chunk.len();
        self.total_bytes.fetch_sub(chunk.len(), Ordering::Relaxed);
        inner.first_seq = seq + 1;
        true
    }

    /// Evicts every chunk.
    fn clear(&self, inner: &mut Inner) {
        while self.evict(inner) {}
    }

    fn bump(&self) {
        self.moved.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Ingest {
    /// Appends chunk `seq`. Never waits for a subscriber.
    pub fn append(&self, seq: u64, chunk: Bytes) -> Appended {
        let relay = &self.relay;
        let limits = relay.limits;
        let mut inner = relay.inner();
        if inner.generation != self.generation {
            return Appended::Stale;
        }
        if seq < inner.next_seq {
            return Appended::Duplicate;
        }
        if seq > inner.next_seq {
            return Appended::Gap(inner.next_seq);
        }
        let len = chunk.len();
        // Room for it within the job's bounds and the process's, made from this job's own
        // oldest chunks: one busy stream cannot push out everyone else's.
        while !inner.chunks.is_empty()
            && (inner.chunks.len() >= limits.chunks
                || inner.bytes + len > limits.bytes
                || relay.total_bytes.load(Ordering::Relaxed) + len > limits.total_bytes)
        {
            relay.evict(&mut inner);
        }
        let unmarked = !inner.marked;
        if inner.chunks.is_empty() {
            inner.first_seq = seq;
        }
        inner.chunks.push_back((seq, chunk));
        inner.bytes += len;
        relay.total_bytes.fetch_add(len, Ordering::Relaxed);
        inner.next_seq = seq + 1;
        inner.touched = Instant::now();
        drop(inner);
        relay.bump();
        Appended::Kept { unmarked }
    }

    /// The store recorded that this run relayed a chunk.
    pub fn marked(&self) {
        let mut inner = self.relay.inner();
        if inner.generation == self.generation {
            inner.marked = true;
        }
    }

    /// Whether the store has yet to record that this run relayed a chunk, though it did.
    pub fn needs_mark(&self) -> bool {
        let inner = self.relay.inner();
        inner.generation == self.generation && !inner.marked && inner.next_seq > 0
    }

    /// The `seq` the relay expects next.
    pub fn next_seq(&self) -> u64 {
        self.relay.inner().next_seq
    }

    /// Whether a newer lease took the relay over.
    pub fn is_stale(&self) -> bool {
        self.relay.inner().generation != self.generation
    }

    /// Ends the stream, unless a newer lease took the relay over. A break after the end
    /// (an old request of the same run failing late) changes nothing.
    pub fn finish(&self, end: RelayEnd) {
        let mut inner = self.relay.inner();
        if inner.generation != self.generation
            || (end == RelayEnd::Abandoned && inner.end == RelayEnd::Complete)
        {
            return;
        }
        inner.end = end;
        inner.touched = Instant::now();
        drop(inner);
        self.relay.bump();
    }
}

impl Cursor {
    /// The chunks from the cursor's position on, and moves past them.
    pub fn read(&mut self) -> Read {
        let inner = self.relay.inner();
        // Another run took the relay over after this cursor read the first run's chunks:
        // what follows is not the continuation of what it has.
        if self.generation.is_some_and(|seen| seen != inner.generation) {
            return Read::Behind {
                oldest: inner.first_seq,
            };
        }
        if self.next < inner.first_seq {
            return Read::Behind {
                oldest: inner.first_seq,
            };
        }
        if self.next >= inner.next_seq {
            return match inner.end {
                RelayEnd::Open => Read::Pending,
                end => Read::End(end),
            };
        }
        let skip = (self.next - inner.first_seq) as usize;
        let mut taken = Vec::new();
        let mut bytes = 0;
        for (seq, chunk) in inner.chunks.iter().skip(skip) {
            if bytes > 0 && bytes + chunk.len() > READ_BYTES {
                break;
            }
            bytes += chunk.len();
            taken.push((*seq, chunk.clone()));
        }
        self.next += taken.len() as u64;
        self.generation = Some(inner.generation);
        Read::Chunks(taken)
    }

    /// The `seq` of the next chunk this cursor reads.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// How the stream stands, and whether every chunk up to its end was read.
    pub fn end(&self) -> (RelayEnd, bool) {
        let inner = self.relay.inner();
        (inner.end, self.next >= inner.next_seq)
    }

    /// Waits until the relay moves. Cancel-safe.
    pub async fn changed(&mut self) {
        // The sender lives as long as the relay this cursor holds, so this cannot fail.
        let _ = self.moved.changed().await;
    }
}

#[cfg(test)]
mod tests;
