//! Check-in: per-event issuing keys and holder credentials, zones, gates and
//! entry policies, scanner devices and access staff, online and offline
//! validation with first-scan-wins admissions, and live attendance.
//!
//! The credential format and its verification are the pure
//! `entrada-credential` crate; this crate adds keys, state and HTTP.

pub mod domain;
pub mod http;
pub mod qr;
pub mod service;
pub mod store;

pub use http::{DeviceAuth, router};
pub use service::{Checkin, CheckinConfig, Device, VERIFY_CHUNK};
