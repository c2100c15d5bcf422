//! The correctness checker: per receiver and room, missing messages, duplicates and
//! out-of-order deliveries.
//!
//! - Chat protocol: the order is the room's `seq`. A receiver that joined with
//!   `last_seq = f` must get every acked seq above `f`; the coordinator unions the acked
//!   seqs of all senders (from every worker) and compares.
//! - Peer protocols have no seqs: the order is each sender's counter, and a receiver
//!   (joined before the send phase) must get every message written to its room.
//!
//! A duplicate is a seq (or sender counter) seen before; out of order is a new one below
//! the highest seen. Each round is checked on its own; duplicates across rounds count too.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::plan::Protocol;
use crate::rangeset::RangeSet;

/// One receiver's view of one room.
#[derive(Debug, Clone, Default)]
pub struct ReceiverTrack {
    /// `last_seq` of `joined`: seqs up to it were never expected.
    floor: u64,
    /// Chat: seqs seen over the whole run (for duplicates).
    seen: RangeSet,
    /// Chat: the highest seq seen.
    highest: u64,
    /// Chat: seqs seen this round.
    round: RangeSet,
    /// Peers: per sender, counters seen over the whole run and the highest one.
    senders: HashMap<u32, (RangeSet, u64)>,
    /// Peers: distinct messages this round.
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl ReceiverTrack {
    /// A receiver that joined when the room's last seq was `floor`.
    pub fn new(floor: u64) -> Self {
        Self {
            floor,
            ..Self::default()
        }
    }

    /// A message with room seq `seq` arrived (chat).
    pub fn on_seq(&mut self, seq: u64) {
        if !self.seen.insert(seq) {
            self.duplicates += 1;
            return;
        }
        if seq < self.highest {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(seq);
        self.round.insert(seq);
    }

    /// Message number `counter` of `sender` arrived (peer protocols).
    pub fn on_counter(&mut self, sender: u32, counter: u64) {
        let (seen, highest) = self.senders.entry(sender).or_default();
        if !seen.insert(counter) {
            self.duplicates += 1;
            return;
        }
        if counter < *highest {
            self.out_of_order += 1;
        }
        *highest = (*highest).max(counter);
        self.distinct += 1;
    }

    /// This round's findings; starts the next round.
    pub fn take_round(&mut self, conn: u32, room: u32) -> ReceiverRound {
        ReceiverRound {
            conn,
            room,
            floor: self.floor,
            seqs: std::mem::take(&mut self.round),
            distinct: std::mem::take(&mut self.distinct),
            duplicates: std::mem::take(&mut self.duplicates),
            out_of_order: std::mem::take(&mut self.out_of_order),
        }
    }
}

/// What one receiver saw of one room in one round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverRound {
    pub conn: u32,
    pub room: u32,
    pub floor: u64,
    /// Chat: the seqs received.
    pub seqs: RangeSet,
    /// Peers: distinct messages received.
    pub distinct: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// What the senders of one room put in during one round (from one worker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emitted {
    pub room: u32,
    /// Chat: the seqs acked to our senders.
    pub acked: RangeSet,
    /// Peers: messages written to the socket.
    pub written: u64,
}

/// One receiver-room pair with a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub conn: u32,
    pub room: u32,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// The verdict of one round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correctness {
    /// Receiver-room pairs checked.
    pub receivers: u64,
    /// Deliveries that should have happened.
    pub expected: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Receiver-room pairs with any problem.
    pub problem_receivers: u64,
    /// The first few of them.
    pub examples: Vec<Problem>,
}

impl Correctness {
    /// Nothing missing, duplicated or out of order.
    pub fn is_clean(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0
    }
}

/// Examples kept in a report.
const EXAMPLES: usize = 10;

/// Checks every receiver against what was emitted to its room, over all workers.
pub fn check<'a>(
    protocol: Protocol,
    emitted: impl IntoIterator<Item = &'a Emitted>,
    receivers: impl IntoIterator<Item = &'a ReceiverRound>,
) -> Correctness {
    let mut acked: HashMap<u32, RangeSet> = HashMap::new();
    let mut written: HashMap<u32, u64> = HashMap::new();
    for e in emitted {
        acked.entry(e.room).or_default().union_with(&e.acked);
        *written.entry(e.room).or_default() += e.written;
    }
    let empty = RangeSet::new();
    let mut verdict = Correctness::default();
    for r in receivers {
        let (expected, missing) = match protocol {
            Protocol::Chat => {
                let acked = acked.get(&r.room).unwrap_or(&empty);
                let expected = acked.count_above(r.floor);
                let got = acked.count_common_above(&r.seqs, r.floor);
                (expected, expected - got)
            }
            Protocol::Raw | Protocol::Socketio => {
                let expected = written.get(&r.room).copied().unwrap_or(0);
                (expected, expected.saturating_sub(r.distinct))
            }
        };
        verdict.receivers += 1;
        verdict.expected += expected;
        verdict.missing += missing;
        verdict.duplicates += r.duplicates;
        verdict.out_of_order += r.out_of_order;
        if missing > 0 || r.duplicates > 0 || r.out_of_order > 0 {
            verdict.problem_receivers += 1;
            if verdict.examples.len() < EXAMPLES {
                verdict.examples.push(Problem {
                    conn: r.conn,
                    room: r.room,
                    missing,
                    duplicates: r.duplicates,
                    out_of_order: r.out_of_order,
                });
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(room: u32, seqs: &[u64]) -> Emitted {
        let mut acked = RangeSet::new();
        for &s in seqs {
            acked.insert(s);
        }
        Emitted {
            room,
            acked,
            written: 0,
        }
    }

    #[test]
    fn chat_receivers_are_checked_against_acked_seqs_above_their_floor() {
        let mut good = ReceiverTrack::new(0);
        let mut bad = ReceiverTrack::new(0);
        let mut late = ReceiverTrack::new(3);
        for s in 1..=6 {
            good.on_seq(s);
        }
        for s in [1, 3, 2, 2, 6] {
            bad.on_seq(s);
        }
        for s in 4..=6 {
            late.on_seq(s);
        }
        // Acks come from two workers.
        let emitted = [acked(0, &[1, 2, 3]), acked(0, &[4, 5, 6])];
        let rounds = [
            good.take_round(0, 0),
            bad.take_round(1, 0),
            late.take_round(2, 0),
        ];
        let v = check(Protocol::Chat, &emitted, &rounds);
        assert_eq!(v.receivers, 3);
        assert_eq!(v.expected, 6 + 6 + 3);
        assert_eq!((v.missing, v.duplicates, v.out_of_order), (2, 1, 1));
        assert_eq!(v.problem_receivers, 1);
        assert_eq!(v.examples[0].conn, 1);
        // The next round starts empty, but duplicates of old seqs still count.
        bad.on_seq(3);
        let r = bad.take_round(1, 0);
        assert_eq!((r.seqs.len(), r.duplicates), (0, 1));
    }

    #[test]
    fn peer_receivers_are_checked_per_sender_counter() {
        let mut r = ReceiverTrack::new(0);
        for (sender, counter) in [(1, 1), (2, 1), (1, 3), (1, 2), (2, 1)] {
            r.on_counter(sender, counter);
        }
        let emitted = [Emitted {
            room: 0,
            acked: RangeSet::new(),
            written: 5,
        }];
        let v = check(Protocol::Raw, &emitted, &[r.take_round(0, 0)]);
        assert_eq!((v.missing, v.duplicates, v.out_of_order), (1, 1, 1));
        assert!(!v.is_clean());
    }
}
