//! Storage and the event bus: one database handle for SQLite and PostgreSQL,
//! the embedded migrations, the transactional outbox with its dispatcher,
//! the audit log and idempotency records.
//!
//! Architecture invariant: SQL here and in the contexts' `store.rs` is written
//! once for both backends (`$1` placeholders, `ON CONFLICT`, `RETURNING`,
//! integer instants and money; statements assembled at run time take their
//! placeholders from [`Params`]). Where the dialects must differ the code asks
//! [`Db::backend`] and says why.

pub mod audit;
pub mod db;
pub mod events;
pub mod idempotency;
mod lite;
pub mod outbox;
pub mod read;
pub mod script;
#[allow(clippy::expect_used)]
pub mod testing;
pub mod write;

pub use db::{Backend, Db, DbConfig, Params, Tx, WriteConn};
pub use events::DomainEvent;
pub use outbox::{Consumer, Dispatcher, Envelope};
pub use read::{Fetch, Run};
pub use script::Script;
pub use write::WriteError;

/// True when the error is a unique or primary-key violation, which call
/// sites turn into a 409 instead of a 500.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation() || d.code().is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}

/// Maps a storage error to the API's internal problem, logging the cause.
pub fn internal(e: impl std::fmt::Display) -> entrada_primitives::Problem {
    entrada_primitives::Problem::internal(e)
}
