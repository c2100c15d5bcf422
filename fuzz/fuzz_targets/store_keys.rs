//! The embedded history store's key layout: messages are keyed by `(room, seq)` and read
//! by room-prefixed ranges. Rooms whose names are prefixes of each other (`a`, `a.`,
//! `a.b`, `a:`) must never see each other's messages, seqs must stay 1..n per room, and
//! every page must come back in order. The input drives a random mix of appends
//! (including resends of the same client id) and reads against a model.

#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use chat_history::store::embedded::EmbeddedStore;
use chat_history::{MessageStore, NewMessage, Page};
use chat_model::{ClientMsgId, RoomId, UserId};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// Room names from a tiny alphabet, so prefixes and near-collisions are common.
fn room(byte: u8) -> RoomId {
    const ALPHABET: &[u8] = b"a.:-";
    let len = 1 + (byte as usize % 3);
    let name: String = (0..len)
        .map(|i| ALPHABET[(byte as usize >> (2 + 2 * i)) % ALPHABET.len()] as char)
        .collect();
    RoomId::parse(&name).expect("alphabet is valid")
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::Builder::new()
        .prefix("fuzz-store")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
        .expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("store opens");
    let sender = UserId::parse("fuzzer").expect("valid");
    // The model: every room's bodies in seq order, and client id -> seq.
    let mut model: HashMap<RoomId, Vec<String>> = HashMap::new();
    let mut sent: HashMap<(RoomId, u8), u64> = HashMap::new();
    runtime().block_on(async {
        for op in data.chunks(3).take(64) {
            let [kind, r, arg] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
            let room = room(r);
            match kind % 4 {
                0 | 1 => {
                    // Client ids repeat (arg % 8), so resends happen often.
                    let key = (room.clone(), arg % 8);
                    let msg = NewMessage {
                        room: room.clone(),
                        from: sender.clone(),
                        client_id: ClientMsgId::parse(&format!("c{}", arg % 8)).expect("valid"),
                        body: format!("{room}/{arg}"),
                    };
                    let appended = store.append(msg).await.expect("append");
                    match sent.get(&key) {
                        Some(&seq) => {
                            assert!(appended.duplicate);
                            assert_eq!(appended.message.seq, seq);
                        }
                        None => {
                            assert!(!appended.duplicate);
                            let bodies = model.entry(room.clone()).or_default();
                            bodies.push(appended.message.body.clone());
                            assert_eq!(appended.message.seq, bodies.len() as u64, "gapless");
                            sent.insert(key, appended.message.seq);
                        }
                    }
                    assert_eq!(appended.message.room, room);
                }
                2 => {
                    let after = u64::from(arg % 6);
                    let limit = u32::from(r % 5) + 1;
                    let page = store.list(&room, Page::After(after), limit).await.expect("list");
                    let bodies = model.get(&room).map(Vec::as_slice).unwrap_or_default();
                    let want: Vec<u64> = (after + 1..=bodies.len() as u64).take(limit as usize).collect();
                    let got: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
                    assert_eq!(got, want, "after {after} in {room}");
                    assert!(page.messages.iter().all(|m| m.room == room && m.body == bodies[(m.seq - 1) as usize]));
                    assert_eq!(page.last_seq, bodies.len() as u64);
                    assert_eq!(page.has_more, want.last().is_some_and(|&l| l < bodies.len() as u64));
                }
                _ => {
                    let limit = u32::from(r % 5) + 1;
                    let (page, end) = if arg % 2 == 0 {
                        (Page::Latest, None)
                    } else {
                        (Page::Before(u64::from(arg % 7)), Some(u64::from(arg % 7)))
                    };
                    let listed = store.list(&room, page, limit).await.expect("list");
                    let total = model.get(&room).map_or(0, Vec::len) as u64;
                    let top = end.map_or(total, |e| e.saturating_sub(1).min(total));
                    let first = top.saturating_sub(u64::from(limit)) + 1;
                    let want: Vec<u64> = (first..=top).collect();
                    let got: Vec<u64> = listed.messages.iter().map(|m| m.seq).collect();
                    assert_eq!(got, want, "{page:?} limit {limit} in {room}");
                    assert!(listed.messages.iter().all(|m| m.room == room));
                    assert_eq!(listed.has_more, first > 1 && !want.is_empty());
                }
            }
        }
    });
    drop(store);
});
