//! The behaviour every `MessageStore` backend must show, run against each of them by
//! `chat_testkit::backend_suite!`: `embedded::*` on a fresh redb file, `mongo::*` on a
//! fresh database of a real MongoDB-wire server (`nx-27017`, or `CHAT_TEST_MONGODB_URL`).
//!
//! Mongo cases stay small: the stand-in server does about 1k inserts/s.

use std::collections::BTreeSet;
use std::sync::Arc;

use chat_history::store::embedded::EmbeddedStore;
use chat_history::store::mongo::MongoStore;
use chat_history::{Listed, MessageStore, NewMessage, Page};
use chat_model::{ClientMsgId, RoomId, Seq, Timestamp, UserId};

fn room(s: &str) -> RoomId {
    RoomId::parse(s).expect("valid room")
}

fn msg(room_id: &str, from: &str, client_id: &str, body: &str) -> NewMessage {
    NewMessage {
        room: room(room_id),
        from: UserId::parse(from).expect("valid user"),
        client_id: ClientMsgId::parse(client_id).expect("valid client id"),
        body: body.to_owned(),
    }
}

fn seqs(listed: &Listed) -> Vec<Seq> {
    listed.messages.iter().map(|m| m.seq).collect()
}

async fn append_ok(store: &dyn MessageStore, m: NewMessage) -> chat_model::Message {
    let appended = store.append(m).await.expect("append");
    assert!(
        !appended.duplicate,
        "unexpected duplicate: {:?}",
        appended.message
    );
    appended.message
}

/// The seq `m` is stored under (a new message).
async fn append_seq(store: &dyn MessageStore, m: NewMessage) -> Seq {
    append_ok(store, m).await.seq
}

// ---- the behaviours ----

async fn append_assigns_1_to_n(fx: Fixture) {
    let store = &*fx.store;
    let before = Timestamp::now();
    let mut ids = BTreeSet::new();
    for i in 1..=5u64 {
        let m = append_ok(
            store,
            msg("general", "alice", &format!("c{i}"), &format!("hello {i}")),
        )
        .await;
        assert_eq!(m.seq, i);
        assert_eq!(m.room.as_str(), "general");
        assert_eq!(m.from.as_str(), "alice");
        assert_eq!(m.client_id.as_str(), format!("c{i}"));
        assert_eq!(m.body, format!("hello {i}"));
        assert!(m.ts >= Timestamp(before.0 - 1000) && m.ts <= Timestamp(Timestamp::now().0 + 1000));
        assert!(ids.insert(m.id.clone()), "message ids must be unique");
    }
    let listed = store
        .list(&room("general"), Page::After(0), 100)
        .await
        .expect("list");
    assert_eq!(seqs(&listed), vec![1, 2, 3, 4, 5]);
    assert_eq!(listed.last_seq, 5);
    assert!(!listed.has_more);
    // What list returns is exactly what append returned.
    let ids_listed: BTreeSet<_> = listed.messages.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids_listed, ids);
}

async fn resend_is_idempotent(fx: Fixture) {
    let store = &*fx.store;
    let first = append_ok(store, msg("general", "alice", "c1", "original")).await;
    append_ok(store, msg("general", "bob", "c9", "other")).await;

    // Same key, even with another body: the original comes back, nothing is stored.
    let again = store
        .append(msg("general", "alice", "c1", "changed"))
        .await
        .expect("resend");
    assert!(again.duplicate);
    assert_eq!(again.message, first);

    // The duplicate consumed no seq.
    let next = append_ok(store, msg("general", "alice", "c2", "next")).await;
    assert_eq!(next.seq, 3);
    // The key is (room, sender, client_id): same client_id elsewhere is a new message.
    assert_eq!(
        append_seq(store, msg("general", "bob", "c1", "bob's c1")).await,
        4
    );
    assert_eq!(
        append_seq(store, msg("random", "alice", "c1", "other room")).await,
        1
    );

    let listed = store
        .list(&room("general"), Page::After(0), 100)
        .await
        .expect("list");
    assert_eq!(seqs(&listed), vec![1, 2, 3, 4]);
    assert_eq!(listed.messages[0].body, "original");
}

async fn concurrent_appends_are_gapless(fx: Fixture) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&fx.store);
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let m = msg("busy", &format!("user{t}"), &format!("c{i}"), "x");
                    let appended = store.append(m).await.expect("append");
                    assert!(!appended.duplicate);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("append task");
    }
    let listed = fx
        .store
        .list(&room("busy"), Page::After(0), 1000)
        .await
        .expect("list");
    let total = (TASKS * PER_TASK) as u64;
    assert_eq!(seqs(&listed), (1..=total).collect::<Vec<_>>());
    assert_eq!(listed.last_seq, total);
    assert!(!listed.has_more);
    let keys: BTreeSet<_> = listed
        .messages
        .iter()
        .map(|m| (m.from.to_string(), m.client_id.to_string()))
        .collect();
    assert_eq!(
        keys.len(),
        TASKS * PER_TASK,
        "every message stored exactly once"
    );
}

async fn concurrent_resends_store_once(fx: Fixture) {
    append_ok(&*fx.store, msg("general", "bob", "warmup", "first")).await;
    // All in flight at once: with the embedded store they share one write batch.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&fx.store);
            tokio::spawn(async move {
                store
                    .append(msg("general", "alice", "same", "once"))
                    .await
                    .expect("append")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("append task"));
    }
    assert_eq!(outcomes.iter().filter(|a| !a.duplicate).count(), 1);
    assert!(outcomes.iter().all(|a| a.message.seq == 2));
    let original = &outcomes[0].message;
    assert!(outcomes.iter().all(|a| &a.message == original));
    let listed = fx
        .store
        .list(&room("general"), Page::Latest, 50)
        .await
        .expect("list");
    assert_eq!(seqs(&listed), vec![1, 2]);
}

async fn paging(fx: Fixture) {
    let store = &*fx.store;
    let r = room("paged");
    let empty = store.list(&r, Page::Latest, 10).await.expect("list empty");
    assert_eq!(empty, Listed::default());
    let empty = store
        .list(&r, Page::After(0), 10)
        .await
        .expect("list empty");
    assert_eq!(empty, Listed::default());

    for i in 1..=7 {
        append_ok(
            store,
            msg("paged", "alice", &format!("c{i}"), &format!("m{i}")),
        )
        .await;
    }
    let cases: &[(Page, u32, &[Seq], bool)] = &[
        (Page::Latest, 3, &[5, 6, 7], true),
        (Page::Latest, 7, &[1, 2, 3, 4, 5, 6, 7], false),
        (Page::Latest, 100, &[1, 2, 3, 4, 5, 6, 7], false),
        (Page::Before(5), 3, &[2, 3, 4], true),
        (Page::Before(4), 3, &[1, 2, 3], false),
        (Page::Before(2), 3, &[1], false),
        (Page::Before(1), 3, &[], false),
        (Page::Before(100), 2, &[6, 7], true),
        (Page::After(0), 3, &[1, 2, 3], true),
        (Page::After(4), 3, &[5, 6, 7], false),
        (Page::After(5), 1, &[6], true),
        (Page::After(7), 3, &[], false),
        (Page::After(u64::MAX), 3, &[], false),
    ];
    for &(page, limit, want, has_more) in cases {
        let listed = store.list(&r, page, limit).await.expect("list");
        assert_eq!(seqs(&listed), want, "{page:?} limit {limit}");
        assert_eq!(
            listed.has_more, has_more,
            "{page:?} limit {limit}: has_more"
        );
        assert_eq!(listed.last_seq, 7, "{page:?} limit {limit}: last_seq");
        for m in &listed.messages {
            assert_eq!(m.body, format!("m{}", m.seq));
        }
    }
}

async fn rooms_are_independent(fx: Fixture) {
    let store = &*fx.store;
    for i in 1..=3 {
        append_ok(store, msg("room-a", "alice", &format!("c{i}"), "a")).await;
    }
    assert_eq!(
        append_seq(store, msg("dm:alice:bob", "alice", "c1", "b")).await,
        1
    );
    assert_eq!(
        append_seq(store, msg("dm:alice:bob", "bob", "c1", "b")).await,
        2
    );
    // A room whose name extends another's must not see its messages.
    assert_eq!(
        append_seq(store, msg("room-a2", "alice", "c1", "c")).await,
        1
    );

    let a = store
        .list(&room("room-a"), Page::Latest, 50)
        .await
        .expect("list a");
    assert_eq!(seqs(&a), vec![1, 2, 3]);
    assert_eq!(a.last_seq, 3);
    assert!(a.messages.iter().all(|m| m.room.as_str() == "room-a"));
    let dm = store
        .list(&room("dm:alice:bob"), Page::After(0), 50)
        .await
        .expect("list dm");
    assert_eq!(seqs(&dm), vec![1, 2]);
    assert_eq!(dm.last_seq, 2);
    let none = store
        .list(&room("room"), Page::Latest, 50)
        .await
        .expect("list prefix");
    assert_eq!(none, Listed::default());
}

async fn bodies_round_trip(fx: Fixture) {
    let store = &*fx.store;
    let bodies = [
        String::new(),
        "plain".to_owned(),
        "émoji 🎉👩‍👩‍👧 中文 العربية\n\ttabs \"quotes\" \\ back\u{0}nul".to_owned(),
        "x".repeat(chat_model::limits::MAX_BODY_BYTES),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let m = append_ok(store, msg("bodies", "alice", &format!("c{i}"), body)).await;
        assert_eq!(&m.body, body);
    }
    let listed = store
        .list(&room("bodies"), Page::After(0), 10)
        .await
        .expect("list");
    let got: Vec<_> = listed.messages.iter().map(|m| m.body.clone()).collect();
    assert_eq!(got, bodies);
}

async fn ping_answers(fx: Fixture) {
    fx.store.ping().await.expect("ping");
}

chat_testkit::store_suite! {
    store: MessageStore,
    embedded: EmbeddedStore::open,
    mongo: MongoStore::connect,
    cases: [
        append_assigns_1_to_n,
        resend_is_idempotent,
        concurrent_appends_are_gapless,
        concurrent_resends_store_once,
        paging,
        rooms_are_independent,
        bodies_round_trip,
        ping_answers,
    ],
}

// ---- backend-specific behaviour ----
//
// Plain tests, not suite cases: each needs what only one backend has (a second replica
// on the same database, a file to reopen or lock).

/// Two history replicas on one database, appending to one room at once: every seq is used
/// exactly once, with no gap, and a resend through the other replica is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_two_replicas_stay_gapless() {
    const TASKS_PER_REPLICA: usize = 4;
    const PER_TASK: usize = 20;
    let fx = open_mongo().await;
    let (server, db) = fx.mongo.as_ref().expect("mongo fixture");
    let other: Arc<dyn MessageStore> = Arc::new(
        MongoStore::connect(&server.url(), db)
            .await
            .expect("second replica"),
    );
    let replicas = [Arc::clone(&fx.store), Arc::clone(&other)];
    let mut tasks = Vec::new();
    for (r, store) in replicas.iter().enumerate() {
        for t in 0..TASKS_PER_REPLICA {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let m = msg("shared", &format!("r{r}u{t}"), &format!("c{i}"), "x");
                    let appended = store.append(m).await.expect("append");
                    assert!(!appended.duplicate);
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("append task");
    }
    let total = (2 * TASKS_PER_REPLICA * PER_TASK) as u64;
    for store in &replicas {
        let listed = store
            .list(&room("shared"), Page::After(0), 1000)
            .await
            .expect("list");
        assert_eq!(seqs(&listed), (1..=total).collect::<Vec<_>>());
        assert_eq!(listed.last_seq, total);
    }
    // A resend landing on the other replica (cold or warm hint) finds the original.
    let resent = other
        .append(msg("shared", "r0u0", "c0", "x"))
        .await
        .expect("resend");
    assert!(resent.duplicate);
    let next = fx
        .store
        .append(msg("shared", "r0u0", "c-next", "x"))
        .await
        .expect("append after the race");
    assert_eq!(next.message.seq, total + 1);
}

/// A cold replica (no hint yet) continues a room another replica filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_new_replica_continues_the_room() {
    let fx = open_mongo().await;
    for i in 1..=3 {
        append_ok(&*fx.store, msg("general", "alice", &format!("c{i}"), "x")).await;
    }
    let (server, db) = fx.mongo.as_ref().expect("mongo fixture");
    let late = MongoStore::connect(&server.url(), db)
        .await
        .expect("late replica");
    assert_eq!(
        append_ok(&late, msg("general", "bob", "c1", "x")).await.seq,
        4
    );
    // The first replica's hint is now stale (3): it collides, catches up, and continues.
    assert_eq!(
        append_ok(&*fx.store, msg("general", "alice", "c4", "x"))
            .await
            .seq,
        5
    );
}

/// Acked messages, heads and idempotency keys survive closing and reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_is_durable_across_reopen() {
    let fx = open_embedded().await;
    let data = fx.data_path();
    let mut originals = Vec::new();
    for i in 1..=3 {
        originals.push(
            append_ok(
                &*fx.store,
                msg("general", "alice", &format!("c{i}"), &format!("m{i}")),
            )
            .await,
        );
    }
    append_ok(&*fx.store, msg("other", "bob", "c1", "o")).await;
    let Fixture { store, dir, .. } = fx;
    // Dropping the last handle stops the writer and releases the file.
    drop(store);

    let store = EmbeddedStore::open(&data).expect("reopen");
    let listed = store
        .list(&room("general"), Page::After(0), 50)
        .await
        .expect("list");
    assert_eq!(listed.messages, originals);
    assert_eq!(listed.last_seq, 3);
    let again = store
        .append(msg("general", "alice", "c2", "changed"))
        .await
        .expect("resend after reopen");
    assert!(again.duplicate);
    assert_eq!(again.message, originals[1]);
    assert_eq!(
        append_seq(&store, msg("general", "alice", "c4", "m4")).await,
        4
    );
    assert_eq!(append_seq(&store, msg("other", "bob", "c2", "o")).await, 2);
    drop(store);
    drop(dir);
}

/// The file is locked while a store has it open.
#[tokio::test]
async fn embedded_refuses_a_second_open() {
    let fx = open_embedded().await;
    let data = fx.data_path();
    let err = EmbeddedStore::open(&data).expect_err("second open must fail");
    assert!(
        matches!(err, chat_history::StoreError::Internal(_)),
        "{err}"
    );
}
