//! Verdicts over the participants' ledgers: [`check`] (acks consistent, every message
//! received once and in order) and [`bench_check`] (chat-bench's own checker).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::participant::Participant;

/// What the checker counted.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Distinct messages acked, per room (= the room's last seq).
    pub messages: BTreeMap<String, u64>,
    /// Messages received over all participants and rooms.
    pub deliveries: usize,
    /// Acked messages a participant that was joined never received.
    pub lost: usize,
    /// Messages a participant received more than once.
    pub duplicated: usize,
    /// Messages received after a higher seq of the same room.
    pub out_of_order: usize,
    /// Human-readable findings, empty when all is well.
    pub problems: Vec<String>,
}

/// Checks the ledgers: acks are consistent (one seq per client_id, one client_id per
/// seq, seqs 1..n per room with no gap), and every participant received every room's
/// messages from its first expected seq to the room's last, each once, in order, with the
/// client_id that was acked for that seq.
pub fn check(participants: &[Participant]) -> Verdict {
    let mut verdict = Verdict::default();
    // room -> seq -> client_id, and room -> client_id -> seq
    let mut by_seq: HashMap<String, BTreeMap<u64, String>> = HashMap::new();
    let mut by_id: HashMap<(String, String), u64> = HashMap::new();
    for p in participants {
        for ack in &p.acks {
            let key = (ack.room.clone(), ack.client_id.clone());
            if let Some(seq) = by_id.insert(key, ack.seq)
                && seq != ack.seq
            {
                verdict.problems.push(format!(
                    "{} acked twice with different seqs ({seq}, {})",
                    ack.client_id, ack.seq
                ));
            }
            let seqs = by_seq.entry(ack.room.clone()).or_default();
            if let Some(other) = seqs.insert(ack.seq, ack.client_id.clone())
                && other != ack.client_id
            {
                verdict.problems.push(format!(
                    "{} seq {} acked for {other} and {}",
                    ack.room, ack.seq, ack.client_id
                ));
            }
        }
    }
    for (room, seqs) in &by_seq {
        let last = seqs.keys().next_back().copied().unwrap_or(0);
        if seqs.len() as u64 != last {
            verdict.problems.push(format!(
                "{room}: {} messages acked but the last seq is {last}",
                seqs.len()
            ));
        }
        verdict.messages.insert(room.clone(), last);
    }
    for p in participants {
        for (room, seqs) in &by_seq {
            let last = verdict.messages[room];
            let first = p.first_expected.get(room).copied().unwrap_or(1);
            let got = p.received.get(room).map(Vec::as_slice).unwrap_or_default();
            verdict.deliveries += got.len();
            let mut seen = HashSet::new();
            let mut highest = 0;
            for (seq, client_id) in got {
                if !seen.insert(*seq) {
                    verdict.duplicated += 1;
                }
                if *seq < highest {
                    verdict.out_of_order += 1;
                }
                highest = highest.max(*seq);
                match seqs.get(seq) {
                    Some(acked) if acked == client_id => {}
                    acked => verdict.problems.push(format!(
                        "{}: {room} seq {seq} received as {client_id}, acked as {acked:?}",
                        p.user
                    )),
                }
            }
            let missing: Vec<u64> = (first..=last).filter(|s| !seen.contains(s)).collect();
            verdict.lost += missing.len();
            if !missing.is_empty() {
                verdict.problems.push(format!(
                    "{}: {room} never received seqs {missing:?}",
                    p.user
                ));
            }
        }
    }
    if verdict.duplicated > 0 {
        verdict
            .problems
            .push(format!("{} duplicate deliveries", verdict.duplicated));
    }
    if verdict.out_of_order > 0 {
        verdict
            .problems
            .push(format!("{} out-of-order deliveries", verdict.out_of_order));
    }
    verdict
}

/// The participants' ledgers through chat-bench's correctness checker
/// ([`chat_bench::check`], the one `chat-bench run` reports with), so end-to-end tests
/// and load runs count missing, duplicate and out-of-order deliveries the same way: every
/// participant is a receiver of each of its rooms from the `last_seq` of its first
/// `joined`, and every acked seq (from any participant) is expected above that floor.
///
/// chat-bench's senders never resend, so that checker takes acks as given; whether the
/// acks themselves are consistent (one seq per `client_id`, one `client_id` per seq, no
/// gap) is [`check`]'s part.
pub fn bench_check(participants: &[Participant]) -> chat_bench::check::Correctness {
    use chat_bench::check::{Emitted, ReceiverTrack};
    use chat_bench::rangeset::RangeSet;

    let rooms: BTreeSet<&str> = participants
        .iter()
        .flat_map(|p| p.rooms.iter().map(String::as_str))
        .collect();
    let index = |room: &str| rooms.iter().position(|r| *r == room).unwrap_or(0) as u32;
    let mut emitted: BTreeMap<u32, RangeSet> = BTreeMap::new();
    for ack in participants.iter().flat_map(|p| &p.acks) {
        emitted.entry(index(&ack.room)).or_default().insert(ack.seq);
    }
    let emitted: Vec<Emitted> = emitted
        .into_iter()
        .map(|(room, acked)| Emitted {
            room,
            acked,
            written: 0,
        })
        .collect();
    let mut receivers = Vec::new();
    for (conn, p) in participants.iter().enumerate() {
        for room in &p.rooms {
            let floor = p.first_expected.get(room).map_or(0, |first| first - 1);
            let mut track = ReceiverTrack::new(floor);
            for (seq, _) in p.received.get(room).map(Vec::as_slice).unwrap_or_default() {
                track.on_seq(*seq);
            }
            receivers.push(track.take_round(conn as u32, index(room)));
        }
    }
    chat_bench::check::check(chat_bench::Protocol::Chat, &emitted, &receivers)
}
