//! The gateway: the one HTTP surface and the app builder that decides which
//! components a process runs.
//!
//! Architecture invariant: this is the only crate that knows every context;
//! contexts know nothing of each other's HTTP and meet only through the
//! outbox, the payments API and identity's membership functions.

pub mod app;
pub mod config;
pub mod middleware;
pub mod openapi;
pub mod web;

pub use app::{App, BuildError};
pub use config::Config;
