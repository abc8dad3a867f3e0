//! One test suite, run against a real PostgreSQL (a fresh database per
//! test) and SQLite (a fresh file per test). PostgreSQL comes from
//! `ROLLOUTD_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! which `scripts/test` makes sure is running); without it these tests
//! fail, they never skip.

use std::sync::atomic::{AtomicU32, Ordering};

use rollout_core::{CommandKind, Event, EventKind, Phase, RolloutStatus, Time};
use rollout_spec::load;
use rollout_store::{Backend, Change, LeaseClock, StatusWrite, Store, StoreError};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const T0: Time = Time::from_millis(1_795_845_600_000);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

async fn postgres() -> Store {
    let url = rollout_store::testing::fresh_postgres_database("rolloutd_test").await;
    let store = Store::connect(&url)
        .await
        .expect("connect")
        .with_lease_clock(LeaseClock::Caller);
    assert_eq!(store.backend(), Backend::Postgres);
    store.migrate().await.expect("migrate");
    store
}

async fn sqlite() -> Store {
    let dir = std::env::temp_dir().join(unique("rolloutd-store"));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("rolloutd.db").display());
    let store = Store::connect(&url)
        .await
        .expect("connect")
        .with_lease_clock(LeaseClock::Caller);
    assert_eq!(store.backend(), Backend::Sqlite);
    store.migrate().await.expect("migrate");
    store
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::postgres().await).await;
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sqlite().await).await;
                }
            )*
        }
    };
}

both!(
    migrations_are_idempotent_and_ready,
    apply_is_idempotent_and_a_dry_run_changes_nothing,
    status_writes_are_optimistic,
    a_writer_that_lost_its_lease_is_fenced_off,
    leases_pass_on_after_expiry_with_a_larger_token,
    renew_and_release,
    commands_clear_with_the_status_that_applied_them,
    events_are_kept_in_order_and_outlive_the_rollout,
    concurrent_writers_exactly_one_wins,
    status_round_trips,
    a_second_rollout_on_an_owned_target_is_refused,
    every_target_of_a_rollout_is_owned,
    concurrent_applies_on_one_target_exactly_one_owns_it,
    concurrent_creates_of_one_name_all_succeed,
    lease_expiry_is_judged_by_the_database_clock,
    thousands_of_events_are_written_in_chunks,
    commands_are_read_in_bounded_batches,
    delete_hands_traffic_back_first,
    ended_runs_are_kept_with_their_status_newest_n,
);

fn w<'a>(
    uid: &'a str,
    expected: i64,
    status: &'a RolloutStatus,
    events: &'a [Event],
) -> StatusWrite<'a> {
    StatusWrite {
        expected,
        status,
        events,
        applied_commands: true,
        uid,
        ended_runs: &[],
    }
}

/// The base documents applied, and the lease on their rollout taken by
/// replica `a`: (name, a new status, its identity, the lease).
async fn leased(store: &Store) -> (String, RolloutStatus, String, rollout_store::Lease) {
    let (name, status) = seeded(store).await;
    let uid = uid_of(store, &name).await;
    let lease = store
        .acquire_lease(&name, "a", T0, 15_000)
        .await
        .expect("lease")
        .expect("free");
    (name, status, uid, lease)
}

async fn uid_of(store: &Store, name: &str) -> String {
    store
        .rollout(name)
        .await
        .expect("read")
        .expect("exists")
        .uid
}

const DOCS: &str = include_str!("../../rollout-spec/tests/valid-base.yaml");

fn documents(revision: &str) -> rollout_spec::SpecSet {
    let text = DOCS.replace("revision: \"r1\"", &format!("revision: \"{revision}\""));
    load([("base.yaml", text.as_str())], &[]).expect("valid")
}

async fn seeded(store: &Store) -> (String, RolloutStatus) {
    store
        .apply(&documents("r1"), "test", T0, false)
        .await
        .expect("apply");
    let name = "checkout-api".to_string();
    (name, RolloutStatus::new("r1", "canary", T0))
}

async fn migrations_are_idempotent_and_ready(store: Store) {
    assert!(store.ready().await.expect("ready"));
    store.migrate().await.expect("again");
    assert!(store.ready().await.expect("ready"));
}

async fn apply_is_idempotent_and_a_dry_run_changes_nothing(store: Store) {
    let set = documents("r1");
    let first = store.apply(&set, "a.yaml", T0, false).await.expect("apply");
    assert!(first.iter().all(|a| a.change == Change::Created));
    assert_eq!(first.len(), 2);
    let again = store.apply(&set, "a.yaml", T0, false).await.expect("apply");
    assert!(again.iter().all(|a| a.change == Change::Unchanged));
    let r = store
        .rollout("checkout-api")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(r.generation, 1);

    let next = documents("r2");
    let dry = store
        .apply(&next, "a.yaml", T0, true)
        .await
        .expect("dry run");
    let rollout = dry.iter().find(|a| a.kind == "Rollout").expect("rollout");
    assert_eq!(rollout.change, Change::Configured);
    let r = store
        .rollout("checkout-api")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (r.generation, r.rollout.spec.revision.as_str()),
        (1, "r1"),
        "dry run wrote"
    );

    store
        .apply(&next, "a.yaml", T0, false)
        .await
        .expect("apply");
    let r = store
        .rollout("checkout-api")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((r.generation, r.rollout.spec.revision.as_str()), (2, "r2"));
    assert_eq!(store.templates().await.expect("templates").len(), 1);
}

async fn status_writes_are_optimistic(store: Store) {
    let (name, mut status, uid, lease) = leased(&store).await;
    let v1 = store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await
        .expect("first write");
    assert_eq!(v1, 1);
    // A second writer that also read version 0 loses.
    let stale = store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    status.phase = Phase::Progressing;
    let v2 = store
        .write_status(&name, w(&uid, v1, &status, &[]), &lease, T0)
        .await
        .expect("second write");
    assert_eq!(v2, 2);
    let stale = store
        .write_status(&name, w(&uid, v1, &status, &[]), &lease, T0)
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))));
    let read = store.rollout(&name).await.expect("read").expect("exists");
    assert_eq!(read.version, 2);
    assert_eq!(read.status.map(|s| s.phase), Some(Phase::Progressing));
}

async fn a_writer_that_lost_its_lease_is_fenced_off(store: Store) {
    let (name, status) = seeded(&store).await;
    let uid = uid_of(&store, &name).await;
    let old = store
        .acquire_lease(&name, "a", T0, 15_000)
        .await
        .expect("lease")
        .expect("free");
    store
        .write_status(&name, w(&uid, 0, &status, &[]), &old, T0)
        .await
        .expect("write");
    // Replica a stalls past its lease; b takes over.
    let later = T0.plus_ms(20_000);
    let new = store
        .acquire_lease(&name, "b", later, 15_000)
        .await
        .expect("lease")
        .expect("expired, so free");
    assert!(new.token > old.token);
    // a wakes up and writes with its old token: refused, even at the right version.
    let fenced = store
        .write_status(&name, w(&uid, 1, &status, &[]), &old, later)
        .await;
    assert!(matches!(fenced, Err(StoreError::Conflict(_))), "{fenced:?}");
    store
        .write_status(&name, w(&uid, 1, &status, &[]), &new, later)
        .await
        .expect("the new holder writes");
    // A writer whose lease ran out is refused too.
    let much_later = later.plus_ms(60_000);
    let expired = store
        .write_status(&name, w(&uid, 2, &status, &[]), &new, much_later)
        .await;
    assert!(matches!(expired, Err(StoreError::Conflict(_))));
}

async fn leases_pass_on_after_expiry_with_a_larger_token(store: Store) {
    let a = store
        .acquire_lease("x", "a", T0, 15_000)
        .await
        .expect("lease")
        .expect("free");
    assert!(
        store
            .acquire_lease("x", "b", T0.plus_ms(14_999), 15_000)
            .await
            .expect("lease")
            .is_none(),
        "held until it expires"
    );
    let again = store
        .acquire_lease("x", "a", T0.plus_ms(5_000), 15_000)
        .await
        .expect("lease")
        .expect("the holder keeps it");
    assert_eq!(again.token, a.token, "keeping a lease keeps its token");
    let b = store
        .acquire_lease("x", "b", T0.plus_ms(20_001), 15_000)
        .await
        .expect("lease")
        .expect("expired");
    assert_eq!(b.token, a.token + 1);
}

async fn renew_and_release(store: Store) {
    for r in ["r1", "r2", "r3"] {
        store
            .acquire_lease(r, "a", T0, 15_000)
            .await
            .expect("lease")
            .expect("free");
    }
    let mut held = store
        .renew_leases("a", T0.plus_ms(10_000), 15_000)
        .await
        .expect("renew");
    held.sort();
    assert_eq!(held, vec!["r1", "r2", "r3"]);
    // Renewed to 25s: still held at 20s.
    assert!(store
        .acquire_lease("r1", "b", T0.plus_ms(20_000), 15_000)
        .await
        .expect("lease")
        .is_none());
    assert_eq!(store.release_leases("a").await.expect("release"), 3);
    assert!(store
        .acquire_lease("r1", "b", T0.plus_ms(20_000), 15_000)
        .await
        .expect("lease")
        .is_some());
    // An expired lease is not renewed.
    assert!(store
        .renew_leases("a", T0.plus_ms(21_000), 15_000)
        .await
        .expect("renew")
        .is_empty());
}

async fn commands_clear_with_the_status_that_applied_them(store: Store) {
    let (name, mut status) = seeded(&store).await;
    let uid = uid_of(&store, &name).await;
    let id1 = store
        .enqueue_command(&name, CommandKind::Pause, "alice", Some("look"), T0)
        .await
        .expect("enqueue");
    let id2 = store
        .enqueue_command(&name, CommandKind::Promote { full: true }, "bob", None, T0)
        .await
        .expect("enqueue");
    assert!(id2 > id1);
    let queued = store.commands(&name).await.expect("commands");
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[1].kind, CommandKind::Promote { full: true });
    assert_eq!(queued[0].reason.as_deref(), Some("look"));
    let lease = store
        .acquire_lease(&name, "a", T0, 15_000)
        .await
        .expect("lease")
        .expect("free");
    status.last_command_id = id1;
    store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await
        .expect("write");
    let left = store.commands(&name).await.expect("commands");
    assert_eq!(left.iter().map(|c| c.id).collect::<Vec<_>>(), vec![id2]);
    // A refused write (stale version) removes no command.
    status.last_command_id = id2;
    let refused = store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let left = store.commands(&name).await.expect("commands");
    assert_eq!(left.iter().map(|c| c.id).collect::<Vec<_>>(), vec![id2]);
}

async fn events_are_kept_in_order_and_outlive_the_rollout(store: Store) {
    let (name, status, uid, lease) = leased(&store).await;
    let events: Vec<Event> = (0..3)
        .map(|i| Event {
            at: T0.plus_ms(i),
            run: 1,
            revision: "r1".into(),
            kind: if i == 0 {
                EventKind::RunStarted
            } else {
                EventKind::WeightSet
            },
            message: format!("event {i}"),
            actor: (i == 2).then(|| "carol".to_string()),
            weight_before: 0,
            weight_after: 5,
        })
        .collect();
    store
        .write_status(&name, w(&uid, 0, &status, &events), &lease, T0)
        .await
        .expect("write");
    assert_eq!(store.events(&name).await.expect("events"), events);
    // A refused write records no events.
    let refused = store
        .write_status(&name, w(&uid, 0, &status, &events), &lease, T0)
        .await;
    assert!(refused.is_err());
    assert_eq!(store.events(&name).await.expect("events").len(), 3);
    assert!(store.delete_rollout(&name).await.expect("delete"));
    assert!(store.rollout(&name).await.expect("read").is_none());
    assert!(!store.delete_rollout(&name).await.expect("delete again"));
    // The name applied again is a new rollout: a new identity, whose
    // events never mix with the old one's.
    let (_, status) = seeded(&store).await;
    let again = uid_of(&store, &name).await;
    assert_ne!(again, uid, "a re-applied name is a new identity");
    assert!(store.events(&name).await.expect("events").is_empty());
    let lease = store
        .acquire_lease(&name, "a", T0, 15_000)
        .await
        .expect("lease")
        .expect("free");
    // A writer that read the old identity writes nothing for the new one.
    assert!(store
        .write_status(&name, w(&uid, 0, &status, &events), &lease, T0)
        .await
        .is_err());
    store
        .write_status(&name, w(&again, 0, &status, &events[..1]), &lease, T0)
        .await
        .expect("write");
    assert_eq!(store.events(&name).await.expect("events").len(), 1);
}

async fn concurrent_writers_exactly_one_wins(store: Store) {
    let (name, status, uid, lease) = leased(&store).await;
    store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await
        .expect("write");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, name, lease, uid) = (store.clone(), name.clone(), lease.clone(), uid.clone());
        let mut status = status.clone();
        status.message = format!("writer {i}");
        tasks.push(tokio::spawn(async move {
            store
                .write_status(&name, w(&uid, 1, &status, &[]), &lease, T0)
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(v) => {
                assert_eq!(v, 2);
                wins += 1;
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer of version 1 wins");
}

async fn status_round_trips(store: Store) {
    let (name, mut status) = seeded(&store).await;
    let uid = uid_of(&store, &name).await;
    status.phase = Phase::Paused;
    status.canary_weight = 25;
    status.message = "paused by dave: ünïcode ✓".into();
    let lease = store
        .acquire_lease(&name, "a", T0, 15_000)
        .await
        .expect("lease")
        .expect("free");
    store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await
        .expect("write");
    let read = store.rollout(&name).await.expect("read").expect("exists");
    assert_eq!(read.status, Some(status));
    assert_eq!(store.rollouts().await.expect("list").len(), 1);
    assert_eq!(
        store.rollout_names().await.expect("names"),
        vec![name.clone()]
    );
}

/// The base documents under another name, on the same listener (or, with
/// `rule`, on a rule of it).
fn other_rollout(name: &str, rule: Option<&str>) -> rollout_spec::SpecSet {
    let mut text = DOCS.replace("name: checkout-api", &format!("name: {name}"));
    if let Some(rule) = rule {
        let listener = "listenerArn: ";
        let at = text.find(listener).expect("a listener");
        let end = at + text[at..].find('\n').expect("line end");
        let line = text[at..end].to_string();
        let arn = line.trim_start_matches(listener).trim().trim_matches('"');
        let rule_arn = arn.replace(":listener/", ":listener-rule/") + "/" + rule;
        text.insert_str(end, &format!("\n      ruleArn: {rule_arn}"));
    }
    load([("other.yaml", text.as_str())], &[]).expect("valid")
}

async fn a_second_rollout_on_an_owned_target_is_refused(store: Store) {
    seeded(&store).await;
    for dry_run in [true, false] {
        match store
            .apply(&other_rollout("intruder", None), "api", T0, dry_run)
            .await
        {
            Err(StoreError::Owned {
                rollout,
                owner,
                target,
            }) => {
                assert_eq!(rollout, "intruder");
                assert_eq!(owner, "checkout-api");
                assert!(target.contains("default action of listener"), "{target}");
            }
            other => panic!("expected the target to be owned, got {other:?}"),
        }
    }
    assert!(store.rollout("intruder").await.expect("read").is_none());
    // A rule of the same listener is another target.
    store
        .apply(
            &other_rollout("on-a-rule", Some("9f8e7d6c5b4a3210")),
            "api",
            T0,
            false,
        )
        .await
        .expect("a rule is its own target");
    // Once the owner is gone, the target is free.
    assert!(store.delete_rollout("checkout-api").await.expect("delete"));
    store
        .apply(&other_rollout("intruder", None), "api", T0, false)
        .await
        .expect("free now");
}

const EU_LISTENER: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shop/6a7b8c9d0e1f2a3b/4c5d6e7f8a9b0c1d";

/// A rollout named `name` on the listener `main` (the base's, when `None`),
/// with an additional target on `extra` (none when `None`).
fn rollout_on(name: &str, main: Option<&str>, extra: Option<&str>) -> rollout_spec::SpecSet {
    let base_listener = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2";
    let mut text = DOCS.replace("name: checkout-api", &format!("name: {name}"));
    if let Some(main) = main {
        text = text.replace(base_listener, main);
        // Target groups of the main listener's region and their own.
        let region = main.split(':').nth(3).expect("a region");
        text = text
            .replace(
                "us-east-1:123456789012:targetgroup/shop-blue",
                &format!("{region}:123456789012:targetgroup/{name}-blue"),
            )
            .replace(
                "us-east-1:123456789012:targetgroup/shop-green",
                &format!("{region}:123456789012:targetgroup/{name}-green"),
            );
    }
    if let Some(extra) = extra {
        let region = extra.split(':').nth(3).expect("a region");
        let target = format!(
            "  additionalTargets:\n    - name: two\n      trafficRouting: {{alb: {{listenerArn: {extra}}}}}\n      stable: {{targetGroupArn: arn:aws:elasticloadbalancing:{region}:123456789012:targetgroup/{name}-b2/1a2b3c4d5e6f7a8b}}\n      canary: {{targetGroupArn: arn:aws:elasticloadbalancing:{region}:123456789012:targetgroup/{name}-g2/2b3c4d5e6f7a8b9c}}\n"
        );
        text = text.replacen("  strategy:\n", &format!("{target}  strategy:\n"), 1);
    }
    load([("targets.yaml", text.as_str())], &[]).unwrap_or_else(|d| panic!("{d:?}"))
}

/// Every target of a rollout with `additionalTargets` is its own: another
/// rollout naming one, as its main or as an additional target, is refused
/// naming the owner; a target dropped from the spec (or the rollout
/// deleted) is free again.
async fn every_target_of_a_rollout_is_owned(store: Store) {
    seeded(&store).await;
    let elsewhere = "arn:aws:elasticloadbalancing:us-west-2:123456789012:listener/app/web/0a1b2c3d4e5f6a7b/8c9d0e1f2a3b4c5d";
    let apply = |name: &str, main: &str, extra: Option<&str>| {
        let set = rollout_on(name, Some(main), extra);
        let store = store.clone();
        async move { store.apply(&set, "api", T0, false).await }
    };
    let refused =
        |r: Result<Vec<rollout_store::Applied>, StoreError>, owner: &str, listener: &str| match r {
            Err(StoreError::Owned {
                owner: o, target, ..
            }) => {
                assert_eq!(o, owner);
                assert!(target.contains(listener), "{target}");
            }
            other => panic!("expected the target to be owned by {owner}, got {other:?}"),
        };
    apply("multi", elsewhere, Some(EU_LISTENER))
        .await
        .expect("a rollout over two free listeners");
    // Its additional target, as another rollout's main one.
    refused(
        apply("intruder", EU_LISTENER, None).await,
        "multi",
        EU_LISTENER,
    );
    // Another rollout's main target, as an additional one.
    let base = "listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2";
    let taken = format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:{base}");
    let free = "arn:aws:elasticloadbalancing:ap-south-1:123456789012:listener/app/x/0a0a0a0a0a0a0a0a/0b0b0b0b0b0b0b0b";
    refused(
        apply("grabber", free, Some(&taken)).await,
        "checkout-api",
        base,
    );
    assert!(store.rollout("intruder").await.expect("read").is_none());
    assert!(store.rollout("grabber").await.expect("read").is_none());
    // The target dropped from multi's spec is free.
    apply("multi", elsewhere, None)
        .await
        .expect("multi without its second target");
    apply("intruder", EU_LISTENER, None)
        .await
        .expect("free now");
    // A deleted rollout's targets are free.
    assert!(store.delete_rollout("intruder").await.expect("delete"));
    apply("multi", elsewhere, Some(EU_LISTENER))
        .await
        .expect("free again");
}

async fn concurrent_applies_on_one_target_exactly_one_owns_it(store: Store) {
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .apply(&other_rollout(&format!("r{i}"), None), "api", T0, false)
                .await
        }));
    }
    let mut owners = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => owners += 1,
            Err(StoreError::Owned { .. }) => {}
            // SQLite serialises the transactions; PostgreSQL may answer a
            // loser with a serialization or unique error mapped to Owned.
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(owners, 1, "exactly one rollout owns the listener");
    assert_eq!(store.rollout_names().await.expect("names").len(), 1);
}

/// Several applies creating the same rollout at once (CI retrying, two
/// replicas' specs directories): one creates it, the others find it; none
/// fails (on PostgreSQL the losers used to get a unique violation: 503).
async fn concurrent_creates_of_one_name_all_succeed(store: Store) {
    for round in 0..5 {
        let name = format!("same-{round}");
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let store = store.clone();
            let set = other_rollout(&name, Some(&format!("{round:016x}")));
            tasks.push(tokio::spawn(async move {
                store.apply(&set, "api", T0, false).await
            }));
        }
        let mut created = 0;
        for t in tasks {
            let applied = t.await.expect("join").unwrap_or_else(|e| panic!("{e}"));
            created += applied
                .iter()
                .filter(|a| a.kind == "Rollout" && a.change == rollout_store::Change::Created)
                .count();
        }
        assert_eq!(created, 1, "round {round}: one apply created it");
    }
}

async fn lease_expiry_is_judged_by_the_database_clock(store: Store) {
    let store = store.with_lease_clock(LeaseClock::Database);
    let (name, _) = seeded(&store).await;
    let a = store
        .acquire_lease(&name, "a", T0, 15_000)
        .await
        .expect("lease")
        .expect("free");
    // Replica b's clock runs an hour ahead: by its own clock a's lease ran
    // out long ago, by the database's it did not.
    assert!(store
        .acquire_lease(&name, "b", T0.plus_ms(3_600_000), 15_000)
        .await
        .expect("lease")
        .is_none());
    assert!(store.lease_valid(&a, T0, 1_000).await.expect("check"));
    assert!(
        !store.lease_valid(&a, T0, 20_000).await.expect("check"),
        "a lease with less than the margin left is not good for a write"
    );
    // A replica whose clock runs behind cannot keep a lease the database
    // says ran out.
    let short = store
        .acquire_lease("other", "a", T0, 1)
        .await
        .expect("lease")
        .expect("free");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!store.lease_valid(&short, T0, 0).await.expect("check"));
    let b = store
        .acquire_lease(
            "other",
            "b",
            Time::from_millis(T0.millis() - 3_600_000),
            15_000,
        )
        .await
        .expect("lease")
        .expect("expired by the database's clock");
    assert!(b.token > short.token);
}

async fn thousands_of_events_are_written_in_chunks(store: Store) {
    let (name, status, uid, lease) = leased(&store).await;
    // More than either database binds in one statement (9 parameters an
    // event: 81,000 > 65,535 and > SQLite's 32,766).
    let events: Vec<Event> = (0..9_000)
        .map(|i| Event {
            at: T0.plus_ms(i),
            run: 1,
            revision: "r1".into(),
            kind: EventKind::CommandIgnored,
            message: format!("event {i}"),
            actor: None,
            weight_before: 0,
            weight_after: 0,
        })
        .collect();
    store
        .write_status(&name, w(&uid, 0, &status, &events), &lease, T0)
        .await
        .expect("write");
    let read = store.events(&name).await.expect("events");
    assert_eq!(read.len(), 9_000);
    assert_eq!(read[8_999].message, "event 8999", "in order");
}

async fn commands_are_read_in_bounded_batches(store: Store) {
    let (name, _) = seeded(&store).await;
    for _ in 0..250 {
        store
            .enqueue_command(&name, CommandKind::Abort, "alice", None, T0)
            .await
            .expect("queue");
    }
    let first = store.commands(&name).await.expect("commands");
    assert_eq!(
        first.len(),
        rollout_core::decide::MAX_COMMANDS_PER_DECISION,
        "one decision's worth"
    );
    assert!(first.windows(2).all(|p| p[0].id < p[1].id), "oldest first");
}

async fn delete_hands_traffic_back_first(store: Store) {
    let (name, mut status, uid, lease) = leased(&store).await;
    status.phase = Phase::Progressing;
    status.started_at = Some(T0);
    status.canary_weight = 5;
    status.weight_verified_at = Some(T0);
    store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await
        .expect("write");
    let outcome = store
        .delete_or_hand_back(&name, "alice", false, T0)
        .await
        .expect("delete");
    assert_eq!(outcome, rollout_store::Deleted::HandingBack);
    assert!(store.rollout(&name).await.expect("read").is_some());
    let queued = store.commands(&name).await.expect("commands");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].kind, CommandKind::Delete);
    // `orphan` removes it at once, traffic as it is.
    let outcome = store
        .delete_or_hand_back(&name, "alice", true, T0)
        .await
        .expect("delete");
    assert_eq!(outcome, rollout_store::Deleted::Gone);
    assert!(store.rollout(&name).await.expect("read").is_none());
    // A rollout that holds no traffic goes at once.
    seeded(&store).await;
    let outcome = store
        .delete_or_hand_back(&name, "alice", false, T0)
        .await
        .expect("delete");
    assert_eq!(outcome, rollout_store::Deleted::Gone);
}

fn record(run: u32) -> rollout_core::status::RunRecord {
    rollout_core::status::RunRecord {
        run,
        revision: format!("r{run}"),
        outcome: "Succeeded".into(),
        started_at: Some(T0),
        ended_at: T0.plus_ms(u64::from(run) * 60_000),
        message: format!("run {run} done"),
        canary_requests: 1_000.0 * f64::from(run),
        checks: Default::default(),
        under_chaos: Default::default(),
    }
}

/// A run's record is written with the status that ended it (not when that
/// write is refused), a repeated write keeps the first record, and only the
/// newest `run_history` runs are kept; a deleted rollout's runs go with it.
async fn ended_runs_are_kept_with_their_status_newest_n(store: Store) {
    let store = store.with_run_history(3);
    let (name, status, uid, lease) = leased(&store).await;
    let mut version = store
        .write_status(&name, w(&uid, 0, &status, &[]), &lease, T0)
        .await
        .expect("first write");
    assert!(store.runs(&name).await.expect("runs").is_empty());
    // A stale write that would end run 1 records nothing.
    let one = [record(1)];
    let stale = StatusWrite {
        ended_runs: &one,
        ..w(&uid, version + 5, &status, &[])
    };
    let refused = store.write_status(&name, stale, &lease, T0).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(store.runs(&name).await.expect("runs").is_empty());
    for run in 1..=5 {
        let ended = [record(run)];
        let write = StatusWrite {
            ended_runs: &ended,
            ..w(&uid, version, &status, &[])
        };
        version = store
            .write_status(&name, write, &lease, T0)
            .await
            .expect("write");
    }
    // Run 5 again (a write repeated after a crash): the first record stays.
    let mut again = record(5);
    again.message = "a second copy".into();
    let again = [again];
    let write = StatusWrite {
        ended_runs: &again,
        ..w(&uid, version, &status, &[])
    };
    store
        .write_status(&name, write, &lease, T0)
        .await
        .expect("write");
    let kept = store.runs(&name).await.expect("runs");
    let runs: Vec<u32> = kept.iter().map(|r| r.run).collect();
    assert_eq!(runs, [5, 4, 3]);
    assert_eq!(kept[0], record(5));
    assert!(store.delete_rollout(&name).await.expect("delete"));
    assert!(store.runs(&name).await.expect("runs").is_empty());
}
