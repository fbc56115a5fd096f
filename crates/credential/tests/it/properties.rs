//! Property tests: arbitrary input never panics, and no mutation of a valid QR payload verifies.
