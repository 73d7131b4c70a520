//! The completion path: which batches are fully processed *and* have had their outputs acknowledged.
//!
//! Asynchronous outputs (the Kafka producer) number every record they hand to the broker with an [`AckTracker`];
//! the tracker keeps a contiguous watermark of acknowledged records. After the collector has written batch `seq`
//! it asks every sink for a [`Ticket`] ("all my records so far") and files `(seq, tickets)` with [`Progress`]. A
//! batch is complete once every ticket filed with it (and with every batch before it) is acknowledged. The source
//! side polls [`Progress::done`] and commits its input positions only up to complete batches: at-least-once,
//! nothing lost.
//!
//! ```text
//!  collector ──(seq, tickets)──► Progress ◄── done() ── source (commit offsets of batches < done)
//!      │ send                        ▲
//!      ▼                             │ acked_through
//!  producer ──delivery callback──► AckTracker
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, RetryHint};

/// Numbers records handed to an asynchronous output and tracks their acknowledgements.
///
/// Ids are dense from 0. `acked_through` is the number of leading ids that are all acknowledged, so a [`Ticket`]
/// (the id counter at some moment) is satisfied exactly when every record sent before it was delivered, whatever
/// order the acknowledgements came in.
#[derive(Debug, Default)]
pub struct AckTracker {
    state: Mutex<AckState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct AckState {
    next: u64,
    acked_through: u64,
    acked_ahead: BTreeSet<u64>,
    failed: Option<String>,
}

/// "Every record this tracker numbered before this moment."
#[derive(Debug, Clone)]
pub struct Ticket {
    pub tracker: Arc<AckTracker>,
    pub upto: u64,
}

impl Ticket {
    pub fn is_acked(&self) -> bool {
        self.tracker.acked_through() >= self.upto
    }
}

impl AckTracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the id of a record about to be sent.
    pub fn reserve(&self) -> u64 {
        let mut s = self.lock();
        s.next += 1;
        s.next - 1
    }

    /// The record `id` was not handed over after all (the send call itself failed): count it as done.
    pub fn cancel(&self, id: u64) {
        self.ack(id);
    }

    /// The broker acknowledged record `id`.
    pub fn ack(&self, id: u64) {
        let mut s = self.lock();
        if id == s.acked_through {
            s.acked_through += 1;
            while s.acked_ahead.first() == Some(&s.acked_through) {
                s.acked_ahead.pop_first();
                s.acked_through += 1;
            }
        } else if id > s.acked_through {
            s.acked_ahead.insert(id);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Record `id` could not be delivered: the watermark never passes it, and [`AckTracker::check`] fails.
    pub fn fail(&self, id: u64, reason: String) {
        let mut s = self.lock();
        if s.failed.is_none() {
            s.failed = Some(format!("output record {id} was not delivered: {reason}"));
        }
        drop(s);
        self.changed.notify_all();
    }

    pub fn acked_through(&self) -> u64 {
        self.lock().acked_through
    }

    /// Records sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        let s = self.lock();
        s.next - s.acked_through - s.acked_ahead.len() as u64
    }

    pub fn ticket(self: &Arc<Self>) -> Ticket {
        Ticket { tracker: Arc::clone(self), upto: self.lock().next }
    }

    /// An error if any record failed for good.
    pub fn check(&self) -> Result<()> {
        match &self.lock().failed {
            Some(f) => Err(Error::External { system: "kafka", message: f.clone(), retry: RetryHint::NoRetry }),
            None => Ok(()),
        }
    }

    /// Waits until every record sent so far is acknowledged; false on timeout or failure.
    pub fn wait_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        let target = s.next;
        while s.acked_through < target {
            if s.failed.is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

/// Batches the collector has released, with what each still waits for; shared by collector and source.
#[derive(Debug, Default)]
pub struct Progress {
    released: Mutex<VecDeque<(u64, Vec<Ticket>)>>,
    /// Batches `0..done` are complete.
    done: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The collector wrote every output of batch `seq` (released in order), handing them to sinks whose
    /// acknowledgements are still outstanding per `tickets`.
    pub fn released(&self, seq: u64, tickets: Vec<Ticket>) {
        let mut q = self.released.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back((seq, tickets));
        Self::advance(&mut q, &self.done);
    }

    /// Number of leading batches that are complete (scored, outputs written and acknowledged).
    pub fn done(&self) -> u64 {
        let mut q = self.released.lock().unwrap_or_else(|p| p.into_inner());
        Self::advance(&mut q, &self.done);
        self.done.load(Ordering::Acquire)
    }

    fn advance(q: &mut VecDeque<(u64, Vec<Ticket>)>, done: &AtomicU64) {
        while let Some((seq, tickets)) = q.front() {
            if !tickets.iter().all(Ticket::is_acked) {
                break;
            }
            done.store(seq + 1, Ordering::Release);
            q.pop_front();
        }
    }

    /// Waits until batches `0..n` are complete; false on timeout.
    pub fn wait_done(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.done() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_contiguous_whatever_the_ack_order() {
        let t = AckTracker::new();
        let ids: Vec<u64> = (0..5).map(|_| t.reserve()).collect();
        let ticket = t.ticket();
        t.ack(ids[3]);
        t.ack(ids[1]);
        assert_eq!(t.acked_through(), 0);
        assert!(!ticket.is_acked());
        t.ack(ids[0]);
        assert_eq!(t.acked_through(), 2);
        t.ack(ids[2]);
        assert_eq!(t.acked_through(), 4);
        assert_eq!(t.in_flight(), 1);
        t.ack(ids[4]);
        assert!(ticket.is_acked());
        assert!(t.wait_all(Duration::from_millis(1)));
    }

    #[test]
    fn progress_completes_batches_in_order_only_when_acked() {
        let t = AckTracker::new();
        let p = Progress::new();
        let a = t.reserve();
        p.released(0, vec![t.ticket()]);
        let b = t.reserve();
        p.released(1, vec![t.ticket()]);
        p.released(2, vec![]);
        assert_eq!(p.done(), 0);
        t.ack(b);
        assert_eq!(p.done(), 0, "batch 0's record is still outstanding");
        t.ack(a);
        assert_eq!(p.done(), 3);
    }

    #[test]
    fn a_failed_record_blocks_the_watermark_and_reports() {
        let t = AckTracker::new();
        let a = t.reserve();
        t.fail(a, "broker said no".into());
        assert_eq!(t.acked_through(), 0);
        assert!(t.check().is_err());
        assert!(!t.wait_all(Duration::from_millis(5)));
    }
}
