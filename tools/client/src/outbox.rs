//! Retry bookkeeping, as pure state machines with no I/O and no clock: which batches are held
//! for a possible resend ([`Outbox`]) and how long to wait before the next attempt
//! ([`Backoff`]).
//!
//! The one rule that makes retries exactly-once: a batch leaves the outbox only when the server
//! acknowledged it (fresh or duplicate), and after a broken stream every batch still in the
//! outbox is sent again, oldest first, under the seq it was first sent with. The server
//! applies each (producer, seq) once, so resending something that had in fact been applied
//! costs a `duplicate: true` acknowledgement and nothing else. Seqs are given by the caller
//! and must strictly increase; the outbox never renumbers.

use std::collections::VecDeque;
use std::time::Duration;

/// What the outbox refuses: each is a bug in the caller or a server answering out of order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error("seq {seq} pushed after {last}: seqs must be at least 1 and strictly increase")]
    NotIncreasing { seq: u64, last: u64 },
    #[error("the outbox is full ({capacity} batches): wait for an acknowledgement first")]
    Full { capacity: usize },
    #[error("acknowledgement for seq {seq}, but the oldest batch in flight is {expected:?}")]
    UnexpectedAck { seq: u64, expected: Option<u64> },
}

/// Batches sent or to be sent on the current stream and not yet acknowledged, oldest first.
#[derive(Debug)]
pub struct Outbox<T> {
    entries: VecDeque<(u64, T)>,
    /// How many entries, from the front, have been sent on the current stream.
    sent: usize,
    capacity: usize,
    last_seq: u64,
}

impl<T> Outbox<T> {
    /// An outbox holding at most `capacity` (≥ 1) unacknowledged batches.
    pub fn new(capacity: usize) -> Outbox<T> {
        assert!(capacity >= 1, "an outbox must hold at least one batch");
        Outbox { entries: VecDeque::with_capacity(capacity), sent: 0, capacity, last_seq: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// Batches sent on the current stream and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.sent
    }

    /// Adds a batch to be sent; its seq must exceed every seq pushed before.
    pub fn push(&mut self, seq: u64, item: T) -> Result<(), OutboxError> {
        if seq <= self.last_seq {
            return Err(OutboxError::NotIncreasing { seq, last: self.last_seq });
        }
        if self.is_full() {
            return Err(OutboxError::Full { capacity: self.capacity });
        }
        self.last_seq = seq;
        self.entries.push_back((seq, item));
        Ok(())
    }

    /// The oldest batch not yet sent on the current stream, now counted as sent.
    pub fn next_to_send(&mut self) -> Option<(u64, &T)> {
        let (seq, item) = self.entries.get(self.sent)?;
        self.sent += 1;
        Some((*seq, item))
    }

    /// Takes out the batch an acknowledgement is for: always the oldest one in flight, since
    /// the server answers a stream's batches in order.
    pub fn acknowledge(&mut self, seq: u64) -> Result<T, OutboxError> {
        match self.entries.front() {
            Some((oldest, _)) if *oldest == seq && self.sent > 0 => {
                self.sent -= 1;
                Ok(self.entries.pop_front().expect("front exists").1)
            }
            _ => Err(OutboxError::UnexpectedAck {
                seq,
                expected: (self.sent > 0).then(|| self.entries[0].0),
            }),
        }
    }

    /// The stream broke: nothing counts as sent any more, so the next `next_to_send` calls
    /// give every unacknowledged batch again, oldest first. Returns how many will be resent.
    pub fn rewind(&mut self) -> usize {
        self.sent = 0;
        self.entries.len()
    }

    /// The oldest unacknowledged batch (the one a refusal of this stream is about, when the
    /// server's message does not say).
    pub fn oldest(&self) -> Option<(u64, &T)> {
        self.entries.front().map(|(s, t)| (*s, t))
    }

    /// The unacknowledged batch with this seq.
    pub fn get(&self, seq: u64) -> Option<&T> {
        self.entries.iter().find(|(s, _)| *s == seq).map(|(_, t)| t)
    }
}

/// Exponential backoff: `initial`, doubling up to `max`, for at most `retries` attempts in a
/// row; `reset` after progress (an acknowledgement) starts again from `initial`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    retries: u32,
    failures: u32,
}

impl Backoff {
    /// First wait before a retry.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
    /// Longest wait between two attempts: a restarting server or a leader election is back
    /// well within this, and a user waiting on a terminal should not wait longer.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(10);

    pub fn new(retries: u32) -> Backoff {
        Backoff::with_delays(retries, Backoff::DEFAULT_INITIAL, Backoff::DEFAULT_MAX)
    }

    pub fn with_delays(retries: u32, initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, retries, failures: 0 }
    }

    /// Records a failure: the wait before the next attempt, or `None` when the retries are
    /// spent.
    pub fn failed(&mut self) -> Option<Duration> {
        if self.failures >= self.retries {
            return None;
        }
        let doubling = 2u32.saturating_pow(self.failures);
        self.failures += 1;
        Some(self.initial.saturating_mul(doubling).min(self.max))
    }

    /// Failures since the last progress.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Progress was made: the next failure waits `initial` again, with all retries available.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_all<T: Copy>(o: &mut Outbox<T>) -> Vec<u64> {
        std::iter::from_fn(|| o.next_to_send().map(|(s, _)| s)).collect()
    }

    #[test]
    fn after_a_failure_every_unacknowledged_batch_is_resent_oldest_first() {
        let mut o = Outbox::new(8);
        for seq in 1..=5 {
            o.push(seq, seq * 10).unwrap();
        }
        assert_eq!(sent_all(&mut o), vec![1, 2, 3, 4, 5]);
        assert_eq!(o.acknowledge(1).unwrap(), 10);
        assert_eq!(o.acknowledge(2).unwrap(), 20);
        assert_eq!(o.in_flight(), 3);
        // The stream breaks with 3, 4, 5 unacknowledged; 6 arrives meanwhile.
        assert_eq!(o.rewind(), 3);
        o.push(6, 60).unwrap();
        assert_eq!(o.in_flight(), 0);
        assert_eq!(sent_all(&mut o), vec![3, 4, 5, 6]);
        for seq in 3..=6 {
            assert_eq!(o.acknowledge(seq).unwrap(), seq * 10);
        }
        assert!(o.is_empty() && o.next_to_send().is_none());
    }

    #[test]
    fn a_failure_before_anything_was_sent_resends_from_the_oldest() {
        let mut o = Outbox::new(2);
        o.push(7, ()).unwrap();
        o.push(9, ()).unwrap();
        assert!(o.is_full());
        assert_eq!(o.push(10, ()), Err(OutboxError::Full { capacity: 2 }));
        assert_eq!(o.next_to_send().map(|(s, _)| s), Some(7));
        assert_eq!(o.rewind(), 2);
        assert_eq!(sent_all(&mut o), vec![7, 9]);
        assert_eq!(o.oldest().map(|(s, _)| s), Some(7));
        assert!(o.get(9).is_some() && o.get(8).is_none());
    }

    #[test]
    fn seqs_must_increase_and_acks_come_in_order() {
        let mut o = Outbox::new(4);
        assert_eq!(o.push(0, ()), Err(OutboxError::NotIncreasing { seq: 0, last: 0 }));
        o.push(3, ()).unwrap();
        assert_eq!(o.push(3, ()), Err(OutboxError::NotIncreasing { seq: 3, last: 3 }));
        o.push(4, ()).unwrap();
        // Nothing sent yet: no ack is expected.
        assert_eq!(o.acknowledge(3), Err(OutboxError::UnexpectedAck { seq: 3, expected: None }));
        sent_all(&mut o);
        assert_eq!(o.acknowledge(4), Err(OutboxError::UnexpectedAck { seq: 4, expected: Some(3) }));
        o.acknowledge(3).unwrap();
        // An acknowledged seq is never pushed again, even after a rewind.
        o.rewind();
        assert_eq!(o.push(3, ()), Err(OutboxError::NotIncreasing { seq: 3, last: 4 }));
    }

    #[test]
    fn backoff_doubles_is_capped_and_resets_on_progress() {
        let ms = Duration::from_millis;
        let mut b = Backoff::with_delays(6, ms(100), ms(1000));
        let waits: Vec<_> = std::iter::from_fn(|| b.failed()).collect();
        assert_eq!(waits, vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(b.failed(), None);
        b.reset();
        assert_eq!(b.failed(), Some(ms(100)));
        assert_eq!(Backoff::new(0).failed(), None);
        let mut long = Backoff::with_delays(u32::MAX, ms(100), Backoff::DEFAULT_MAX);
        assert_eq!((0..100).filter_map(|_| long.failed()).last(), Some(Backoff::DEFAULT_MAX));
    }
}
