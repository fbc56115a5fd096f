//! Identity over real HTTP on 127.0.0.1:0, with a fresh database (SQLite, or
//! PostgreSQL with `ENTRADA_TEST_DB=postgres`) and a manual clock.

#![allow(clippy::unwrap_used)]

mod helpers;

mod accounts;
mod members;
mod one_time_tokens;
mod tokens;
