//! Support for tests that need a real PostgreSQL: a fresh, empty database
//! per call, on the server named by `ROLLOUTD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, which `scripts/test`
//! starts). Without a server the caller panics with how to get one: tests
//! that need PostgreSQL fail, they never skip.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sqlx::Connection;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: AtomicBool = AtomicBool::new(false);

/// The server's admin URL.
pub fn admin_url() -> String {
    std::env::var("ROLLOUTD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database named `{prefix}_{pid}_{n}` and returns its URL.
/// The first call of a process drops the databases earlier runs left with
/// the same prefix.
///
/// # Panics
/// When PostgreSQL cannot be reached or refuses: the test needs it.
pub async fn fresh_postgres_database(prefix: &str) -> String {
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL at {admin} (scripts/ensure-postgres.sh starts one): {e}")
    });
    let pid = std::process::id();
    if !SWEPT.swap(true, Ordering::SeqCst) {
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 AND datname NOT LIKE $2",
        )
        .bind(format!("{prefix}\\_%"))
        .bind(format!("{prefix}\\_{pid}\\_%"))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        for name in old {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let db = format!("{prefix}_{pid}_{}", COUNTER.fetch_add(1, Ordering::SeqCst));
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {db}: {e}"));
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("ROLLOUTD_TEST_POSTGRES_URL needs a database path: {admin}"),
    }
}
