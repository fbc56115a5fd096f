//! The black-box suite: the real app on a random port, a fresh database
//! (SQLite, or PostgreSQL with `ENTRADA_TEST_DB=postgres`), the sandbox
//! payment provider and a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod api;
mod auth;
mod chain;
mod chain_rpc;
mod checkin;
mod cli;
mod crash;
mod market;
mod robustness;
mod sale;
mod wallet;
