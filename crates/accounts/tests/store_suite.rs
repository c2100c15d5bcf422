//! The behaviour every `AccountStore` backend must show, run against each of them:
//! `embedded::*` on a fresh redb file, `mongo::*` on a fresh database of a real
//! MongoDB-wire server (`nx-27017`, or `CHAT_TEST_MONGODB_URL`).

use std::collections::BTreeSet;
use std::sync::Arc;

use chat_accounts::store::embedded::EmbeddedStore;
use chat_accounts::store::mongo::MongoStore;
use chat_accounts::store::{
    AccountStore, Rotation, SessionRecord, SigningKeyRecord, UserRecord, UserUpdate,
};
use chat_model::UserId;

fn id(s: &str) -> UserId {
    UserId::parse(s).expect("valid id")
}

fn user(n: &str, display: &str) -> UserRecord {
    UserRecord {
        id: id(&format!("u_{n}")),
        username: n.to_owned(),
        display_name: display.to_owned(),
        password_hash: format!("$argon2id$hash-of-{n}"),
        created_at: 1_700_000_000_000,
        disabled: false,
    }
}

fn session(sid: &str, owner: &str, digest: u8, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id: sid.to_owned(),
        user_id: id(owner),
        refresh_hash: [digest; 32],
        previous_hash: None,
        sealed_next: None,
        rotated_at: None,
        created_at: 1_000,
        expires_at,
    }
}

/// How many of `tasks` returned true.
async fn winners(tasks: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.expect("task"));
    }
    won
}

fn names(users: &[UserRecord]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

// ---- the behaviours ----

async fn users_are_stored_and_found(fx: Fixture) {
    let store = &*fx.store;
    let alice = user("alice", "Alice Liddell");
    assert!(store.create_user(&alice).await.expect("create"));
    assert!(
        store
            .create_user(&user("bob", "Bob"))
            .await
            .expect("create")
    );
    assert_eq!(
        store.user(&alice.id).await.expect("get"),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_username("alice").await.expect("get"),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_username("carol").await.expect("get"), None);
    assert_eq!(store.user(&id("u_nobody")).await.expect("get"), None);
    let mut found = store
        .users(&[id("u_bob"), id("u_nobody"), alice.id.clone()])
        .await
        .expect("users");
    found.sort_by(|a, b| a.username.cmp(&b.username));
    assert_eq!(names(&found), ["alice", "bob"]);
}

async fn usernames_are_unique_also_when_disabled(fx: Fixture) {
    let store = &*fx.store;
    assert!(
        store
            .create_user(&user("alice", "A"))
            .await
            .expect("create")
    );
    let mut again = user("alice", "Another Alice");
    again.id = id("u_other");
    assert!(!store.create_user(&again).await.expect("create"));
    assert!(
        store
            .update_user(&id("u_alice"), UserUpdate::Disabled(true))
            .await
            .expect("disable")
    );
    assert!(!store.create_user(&again).await.expect("create"));
    // Disabled users are found by id and name (the name stays reserved) but are left
    // out of lookups by many ids and of searches.
    let stored = store
        .user(&id("u_alice"))
        .await
        .expect("get")
        .expect("kept");
    assert!(stored.disabled);
    assert!(
        store
            .users(&[id("u_alice")])
            .await
            .expect("users")
            .is_empty()
    );
    assert!(
        store
            .search_users("al", 10)
            .await
            .expect("search")
            .is_empty()
    );
    assert_eq!(store.user(&id("u_other")).await.expect("get"), None);
}

async fn concurrent_sign_ups_of_one_name_store_one(fx: Fixture) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&fx.store);
            tokio::spawn(async move {
                let mut u = user("popular", "P");
                u.id = id(&format!("u_{i}"));
                store.create_user(&u).await.expect("create")
            })
        })
        .collect();
    assert_eq!(winners(tasks).await, 1);
}

async fn updates_apply(fx: Fixture) {
    let store = &*fx.store;
    store
        .create_user(&user("alice", "Alice"))
        .await
        .expect("create");
    let alice = id("u_alice");
    assert!(
        store
            .update_user(&alice, UserUpdate::PasswordHash("$argon2id$new".into()))
            .await
            .expect("update")
    );
    assert!(
        store
            .update_user(&alice, UserUpdate::DisplayName("Queen of Hearts".into()))
            .await
            .expect("update")
    );
    let stored = store.user(&alice).await.expect("get").expect("user");
    assert_eq!(stored.password_hash, "$argon2id$new");
    assert_eq!(stored.display_name, "Queen of Hearts");
    // The search follows the new display name, not the old one.
    assert_eq!(
        names(&store.search_users("queen", 5).await.expect("search")),
        ["alice"]
    );
    assert!(store.search_users("alice", 5).await.expect("search").len() == 1);
    assert!(store.search_users("ali", 5).await.expect("search").len() == 1);
    assert!(
        store
            .search_users("Queen", 5)
            .await
            .expect("search")
            .is_empty()
    );
    assert!(
        !store
            .update_user(&id("u_nobody"), UserUpdate::Disabled(true))
            .await
            .expect("update")
    );
}

async fn search_by_prefix(fx: Fixture) {
    let store = &*fx.store;
    for (n, display) in [
        ("zed", "Anna Zed"),
        ("anna", "Anna"),
        ("annabel", "Bel"),
        ("bob", "anne-marie"),
        ("carol", "Carol"),
        ("an", "x"),
    ] {
        store.create_user(&user(n, display)).await.expect("create");
    }
    let found = store.search_users("ann", 10).await.expect("search");
    // Username or display name, by username, each once.
    assert_eq!(names(&found), ["anna", "annabel", "bob", "zed"]);
    assert_eq!(
        names(&store.search_users("ann", 2).await.expect("search")),
        ["anna", "annabel"]
    );
    assert_eq!(
        names(&store.search_users("an", 10).await.expect("search")).len(),
        5
    );
    assert!(
        store
            .search_users("annx", 10)
            .await
            .expect("search")
            .is_empty()
    );
    assert!(
        store
            .search_users("é", 10)
            .await
            .expect("search")
            .is_empty()
    );
}

async fn sessions_rotate_by_compare_and_set(fx: Fixture) {
    let store = &*fx.store;
    let s = session("s_1", "u_alice", 1, 10_000);
    store.create_session(&s).await.expect("create");
    assert_eq!(store.session("s_1").await.expect("get"), Some(s.clone()));
    assert_eq!(store.session("s_2").await.expect("get"), None);
    let rotation = Rotation {
        expected: [1; 32],
        refresh_hash: [2; 32],
        sealed_next: vec![7; 32],
        rotated_at: 5_000,
        expires_at: 20_000,
    };
    assert!(
        store
            .rotate_session("s_1", &rotation)
            .await
            .expect("rotate")
    );
    // The same token again, or a rotation of a session that does not exist, does nothing.
    assert!(
        !store
            .rotate_session("s_1", &rotation)
            .await
            .expect("rotate")
    );
    assert!(
        !store
            .rotate_session("s_2", &rotation)
            .await
            .expect("rotate")
    );
    let rotated = store.session("s_1").await.expect("get").expect("session");
    assert_eq!(
        rotated,
        SessionRecord {
            refresh_hash: [2; 32],
            previous_hash: Some([1; 32]),
            sealed_next: Some(vec![7; 32]),
            rotated_at: Some(5_000),
            expires_at: 20_000,
            ..s
        }
    );
}

async fn concurrent_rotations_with_one_token_let_one_win(fx: Fixture) {
    fx.store
        .create_session(&session("s_1", "u_alice", 1, 10_000))
        .await
        .expect("create");
    let tasks: Vec<_> = (0..6u8)
        .map(|i| {
            let store = Arc::clone(&fx.store);
            tokio::spawn(async move {
                let rotation = Rotation {
                    expected: [1; 32],
                    refresh_hash: [10 + i; 32],
                    sealed_next: vec![i; 32],
                    rotated_at: 2_000,
                    expires_at: 20_000,
                };
                store
                    .rotate_session("s_1", &rotation)
                    .await
                    .expect("rotate")
            })
        })
        .collect();
    assert_eq!(winners(tasks).await, 1);
}

async fn sessions_end_one_all_or_expired(fx: Fixture) {
    let store = &*fx.store;
    for (sid, owner, expires_at) in [
        ("s_a1", "u_alice", 10_000),
        ("s_a2", "u_alice", 10_000),
        ("s_a3", "u_alice", 3_000),
        ("s_b1", "u_bob", 2_000),
        ("s_b2", "u_bob", 10_000),
    ] {
        store
            .create_session(&session(sid, owner, 1, expires_at))
            .await
            .expect("create");
    }
    assert_eq!(store.count_sessions().await.expect("count"), 5);
    let ids = |sessions: Vec<SessionRecord>| -> BTreeSet<String> {
        sessions.into_iter().map(|s| s.id).collect()
    };
    assert_eq!(
        ids(store.user_sessions(&id("u_alice")).await.expect("list")),
        BTreeSet::from(["s_a1".into(), "s_a2".into(), "s_a3".into()])
    );
    assert!(store.delete_session("s_a1").await.expect("delete"));
    assert!(!store.delete_session("s_a1").await.expect("delete again"));
    // Expired before 3,000 (inclusive): s_b1 and s_a3.
    assert_eq!(store.purge_sessions(3_000).await.expect("purge"), 2);
    assert_eq!(
        ids(store.user_sessions(&id("u_alice")).await.expect("list")),
        BTreeSet::from(["s_a2".into()])
    );
    store
        .create_session(&session("s_a4", "u_alice", 1, 10_000))
        .await
        .expect("create");
    // Everything of alice except s_a4; bob is untouched.
    assert_eq!(
        store
            .delete_user_sessions(&id("u_alice"), Some("s_a4"))
            .await
            .expect("delete all but one"),
        ["s_a2"]
    );
    assert_eq!(
        ids(store.user_sessions(&id("u_alice")).await.expect("list")),
        BTreeSet::from(["s_a4".into()])
    );
    store
        .create_session(&session("s_a5", "u_alice", 1, 10_000))
        .await
        .expect("create");
    let ended = store
        .delete_user_sessions(&id("u_alice"), None)
        .await
        .expect("delete all");
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert_eq!(
        ended.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from(["s_a4".into(), "s_a5".into()])
    );
    assert!(
        store
            .delete_user_sessions(&id("u_alice"), None)
            .await
            .expect("none left")
            .is_empty()
    );
    assert_eq!(store.count_sessions().await.expect("count"), 1);
    assert!(store.session("s_b2").await.expect("get").is_some());
}

async fn signing_key_generations_are_unique(fx: Fixture) {
    let store = &*fx.store;
    assert!(store.signing_keys().await.expect("keys").is_empty());
    let key = |generation: u64, kid: &str| SigningKeyRecord {
        generation,
        kid: kid.to_owned(),
        private_key: vec![generation as u8; 32],
        public_key: vec![9; 32],
        created_at: 1_000 * generation as i64,
    };
    assert!(
        store
            .insert_signing_key(&key(1, "1-a"))
            .await
            .expect("insert")
    );
    assert!(
        !store
            .insert_signing_key(&key(1, "1-b"))
            .await
            .expect("insert")
    );
    assert!(
        store
            .insert_signing_key(&key(2, "2-a"))
            .await
            .expect("insert")
    );
    let mut keys = store.signing_keys().await.expect("keys");
    keys.sort_by_key(|k| k.generation);
    assert_eq!(keys, [key(1, "1-a"), key(2, "2-a")]);
    store.delete_signing_key(1).await.expect("delete");
    assert_eq!(store.signing_keys().await.expect("keys"), [key(2, "2-a")]);
}

async fn ping_answers(fx: Fixture) {
    fx.store.ping().await.expect("ping");
}

chat_testkit::store_suite! {
    store: AccountStore,
    embedded: EmbeddedStore::open,
    mongo: MongoStore::connect,
    cases: [
        users_are_stored_and_found,
        usernames_are_unique_also_when_disabled,
        concurrent_sign_ups_of_one_name_store_one,
        updates_apply,
        search_by_prefix,
        sessions_rotate_by_compare_and_set,
        concurrent_rotations_with_one_token_let_one_win,
        sessions_end_one_all_or_expired,
        signing_key_generations_are_unique,
        ping_answers,
    ],
}

// ---- backend-specific behaviour ----

/// Two accounts replicas on one database signing up the same name at once: exactly one
/// user is stored, and the first signing key is created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_two_replicas_agree_on_names_and_keys() {
    let fx = open_mongo().await;
    let (server, db) = fx.mongo.as_ref().expect("mongo fixture");
    let other: Arc<dyn AccountStore> = Arc::new(
        MongoStore::connect(&server.url(), db)
            .await
            .expect("second replica"),
    );
    let replicas = [Arc::clone(&fx.store), other];
    let mut tasks = Vec::new();
    for (r, store) in replicas.iter().enumerate() {
        for i in 0..4 {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let mut u = user("shared", "S");
                u.id = id(&format!("u_r{r}_{i}"));
                store.create_user(&u).await.expect("create")
            }));
        }
    }
    assert_eq!(winners(tasks).await, 1);
    let a = replicas[0].user_by_username("shared").await.expect("get");
    let b = replicas[1].user_by_username("shared").await.expect("get");
    assert!(a.is_some());
    assert_eq!(a, b);

    // chat-accounts' start-up on two replicas at once: one first key.
    let starts: Vec<_> = replicas
        .iter()
        .map(|store| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                chat_accounts::tokens::Keys::load(
                    store,
                    "iss",
                    "aud",
                    std::time::Duration::from_secs(60),
                    1_000,
                )
                .await
                .expect("load keys")
            })
        })
        .collect();
    for start in starts {
        start.await.expect("task");
    }
    assert_eq!(replicas[0].signing_keys().await.expect("keys").len(), 1);
}

/// Users, sessions and keys survive closing and reopening the file.
#[tokio::test]
async fn embedded_is_durable_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        store
            .create_user(&user("alice", "Alice"))
            .await
            .expect("create");
        store
            .create_session(&session("s_1", "u_alice", 1, 10_000))
            .await
            .expect("create");
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert!(
        store
            .user_by_username("alice")
            .await
            .expect("get")
            .is_some()
    );
    assert!(store.session("s_1").await.expect("get").is_some());
    assert!(
        !store
            .create_user(&user("alice", "Again"))
            .await
            .expect("create")
    );
}
