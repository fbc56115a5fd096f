//! Injected time. Holds, sale windows, tokens and rotating codes read the
//! clock through this trait so tests move time instead of sleeping.

use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// A source of the current instant, always in UTC.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;

    /// The current instant as unix milliseconds, the storage representation.
    fn now_ms(&self) -> i64 {
        to_ms(self.now())
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; used by tests and demos.
///
/// A std `Mutex`, not a Tokio one: the critical section is a copy of 16 bytes
/// and is never held across an await.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self { now: Arc::new(Mutex::new(start)) }
    }

    pub fn set(&self, to: OffsetDateTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unix milliseconds: how instants are stored in both databases, so that
/// comparisons and indexes behave the same on SQLite and PostgreSQL.
pub fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`to_ms`]. Out-of-range values clamp to the unix epoch
/// rather than panic; they can only come from a corrupted row.
pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 text in UTC with a `Z`, the wire format for every instant.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Parses RFC 3339 text; the offset is kept, callers normalise to UTC.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.to_offset(time::UtcOffset::UTC))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(time::macros::datetime!(2030-01-01 00:00 UTC));
        let a = c.now();
        c.advance(Duration::seconds(90));
        assert_eq!(c.now() - a, Duration::seconds(90));
        assert_eq!(from_ms(to_ms(c.now())), c.now());
        assert_eq!(rfc3339(c.now()), "2030-01-01T00:01:30Z");
    }
}
