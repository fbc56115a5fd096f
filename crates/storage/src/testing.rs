//! Fresh databases for tests, on the backend the test run selects.
//!
//! `ENTRADA_TEST_DB=postgres` with `ENTRADA_TEST_POSTGRES_URL` pointing at a
//! server (any database on it; the user must be allowed to create databases)
//! gives each call its own new PostgreSQL database; otherwise each call gets
//! a new SQLite file in a temporary directory. The whole suite runs once per
//! backend in CI.

use crate::db::{Backend, Db, DbConfig};

/// Keeps a test database alive (the SQLite directory is removed on drop).
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Which backend this test run uses.
pub fn backend() -> Backend {
    match std::env::var("ENTRADA_TEST_DB").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

/// The URL of a new, empty, migrated database.
pub async fn fresh_url() -> (String, Option<tempfile::TempDir>) {
    match backend() {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}/entrada.db", dir.path().display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            let admin = std::env::var("ENTRADA_TEST_POSTGRES_URL")
                .expect("ENTRADA_TEST_POSTGRES_URL must be set when ENTRADA_TEST_DB=postgres");
            sqlx::any::install_default_drivers();
            let name = format!("entrada_test_{}", uuid::Uuid::now_v7().simple());
            let pool = sqlx::AnyPool::connect(&admin).await.expect("connect to the test PostgreSQL server");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("create test database");
            pool.close().await;
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            (format!("{base}/{name}"), None)
        }
    }
}

/// A new, migrated database.
pub async fn fresh() -> TestDb {
    let (url, dir) = fresh_url().await;
    let db = Db::connect(&DbConfig { url: url.clone(), max_connections: 8 }).await.expect("connect test database");
    db.migrate().await.expect("migrate test database");
    TestDb { db, url, _dir: dir }
}
