//! A scratch database on the local PostgreSQL (127.0.0.1:5432, trust
//! authentication; `RELANCE_TEST_PG` names another server), created for
//! one test and dropped when it ends. An unreachable server fails the test
//! with a message saying so: nothing is skipped.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The server the tests use, as a URL without a database.
pub fn server() -> String {
    std::env::var("RELANCE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs one statement on the server's `postgres` database.
fn admin(sql: &str) {
    execute(&format!("{}/postgres", server()), sql);
}

/// Runs statements (`;`-separated) on database `url`.
pub fn execute(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the PostgreSQL tests need a server at {url} (trust authentication; \
                     tests/servers/setup.sh starts one): {e}"
                )
            });
        let driver = tokio::spawn(conn);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
    });
}

/// The first column of each row `sql` returns on database `url`, as text
/// (cast in the query: `SELECT idem_key ...`, `SELECT count(*)::text`).
pub fn column(url: &str, sql: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let driver = tokio::spawn(conn);
        let rows = client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    })
}

/// The number one query counts on database `url`.
pub fn count(url: &str, sql: &str) -> u64 {
    column(url, &format!("SELECT ({sql})::text"))
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: no count"))
}

/// A database of its own, dropped (with whatever is still connected to
/// it) when this goes out of scope.
#[derive(Debug)]
pub struct Scratch {
    pub name: String,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "relance_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(&format!("CREATE DATABASE {name}"));
        Self { name }
    }

    /// Its URL, for `[store] url`.
    pub fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}
