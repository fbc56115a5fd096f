//! Holds, orders, payment outcomes and issued tickets.
