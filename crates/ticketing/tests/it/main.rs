//! Integration tests of the ticketing crate, one binary.

mod catalog;
mod sales;
