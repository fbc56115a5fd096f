//! The wallet against a real database on the backend the test run selects
//! (SQLite by default, PostgreSQL with `ENTRADA_TEST_DB=postgres`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod custody;

use entrada_primitives::ManualClock;
use entrada_primitives::ids::UserId;
use entrada_storage::Db;
use time::macros::datetime;

pub fn clock() -> ManualClock {
    ManualClock::new(datetime!(2030-06-01 19:00 UTC))
}

/// A user row, which custodial keys reference.
pub async fn user(db: &Db, name: &str) -> UserId {
    let id = UserId::new();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, platform_role, email_verified, created_at) \
         VALUES ($1, $2, 'x', $3, 'fan', TRUE, 0)",
    )
    .bind(id.to_db())
    .bind(format!("{name}-{id}@example.com"))
    .bind(name)
    .execute(db.writer())
    .await
    .unwrap();
    id
}
