//! Integration tests of the credential format: the committed vectors and property tests over random input.

mod fixtures;
mod properties;
mod vectors;
