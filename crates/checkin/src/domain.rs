//! Check-in's types and rules: names, entry policies, directions, verdict
//! reasons and the pure checks a scan goes through. No I/O.

use entrada_credential::Rejection;
use serde::{Deserialize, Serialize};

/// What can go wrong in a check-in use case; mapped to problem+json in one
/// place (`http::problem`).
#[derive(Debug, thiserror::Error)]
pub enum CheckinError {
    /// Unknown, or not the caller's to see (both answer 404).
    #[error("no such resource")]
    NotFound,
    #[error("{field}: {message}")]
    Validation { field: &'static str, message: String },
    #[error("a zone with this name already exists for the event")]
    ZoneExists,
    #[error("a gate with this name already exists for the event")]
    GateExists,
    #[error("register a device key for this ticket first: its type has no printable credential")]
    DeviceKeyRequired,
    #[error("this ticket type has no printable credential; the app shows the rotating code")]
    NotPrintable,
    #[error("the ticket does not admit: {0}")]
    TicketNotValid(&'static str),
    #[error("the enrolment code is unknown, used or expired")]
    InvalidEnrolmentCode,
    #[error("send the scanner's device token as `Authorization: Device …`")]
    DeviceTokenRequired,
    #[error("the device token is unknown")]
    InvalidDeviceToken,
    #[error("this device has been revoked")]
    DeviceRevoked,
    #[error("no user with this email")]
    UnknownUser,
    #[error("the key is the event's current key; rotate first")]
    KeyInUse,
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
    /// A corrupted row or an impossible state; logged, shown as `internal`.
    #[error("{0}")]
    Internal(String),
}

impl CheckinError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation { field, message: message.into() }
    }
}

/// A short organizer-chosen name (zone, gate, device): trimmed, 1 to 64
/// characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, CheckinError> {
        let t = s.trim();
        if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
            return Err(CheckinError::invalid(field, "must be 1 to 64 characters without control characters"));
        }
        Ok(Self(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How often a ticket of a type may enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPolicy {
    /// One entry, ever (the default).
    Single,
    /// Leaving through an exit scan allows entering again, up to `max_entries` entries in total.
    Reentry { max_entries: i64 },
}

impl EntryPolicy {
    pub fn new(reentry: bool, max_entries: Option<i64>) -> Result<Self, CheckinError> {
        if !reentry {
            return Ok(Self::Single);
        }
        match max_entries {
            Some(m) if (1..=1000).contains(&m) => Ok(Self::Reentry { max_entries: m }),
            Some(_) => Err(CheckinError::invalid("max_entries", "must be between 1 and 1000")),
            None => Err(CheckinError::invalid("max_entries", "is required for re-entry")),
        }
    }

    /// How many entries in total the ticket allows.
    pub fn max_entries(self) -> i64 {
        match self {
            Self::Single => 1,
            Self::Reentry { max_entries } => max_entries,
        }
    }
}

/// Which way a person passes the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// Why a scan was refused (or `Ok`). The codes are stable and shown on the
/// scanner; credential rejections keep the credential crate's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    AlreadyUsed,
    SupersededGeneration,
    WrongEvent,
    WrongZone,
    NotYetOpen,
    Closed,
    Cancelled,
    Unpaid,
    UnknownTicket,
    /// The device is not enrolled for the gate it names.
    GateNotAssigned,
    /// An exit scan of a ticket that is not inside.
    NotInside,
    /// What the pure verifier said (bad_signature, stale_proof, clock_skew, …).
    Credential(Rejection),
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::AlreadyUsed => "already_used",
            Self::SupersededGeneration => "superseded_generation",
            Self::WrongEvent => "wrong_event",
            Self::WrongZone => "wrong_zone",
            Self::NotYetOpen => "not_yet_open",
            Self::Closed => "closed",
            Self::Cancelled => "cancelled",
            Self::Unpaid => "unpaid",
            Self::UnknownTicket => "unknown_ticket",
            Self::GateNotAssigned => "gate_not_assigned",
            Self::NotInside => "not_inside",
            Self::Credential(r) => r.code(),
        }
    }
}

/// What the gate shows beside the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Display {
    pub ticket_type: String,
    pub holder_display_name: String,
    pub seat: Option<String>,
}

/// The answer to one scan, as stored (so a re-upload replays it exactly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub ok: bool,
    pub reason: String,
    pub ticket_id: Option<String>,
    /// For `already_used`: when and where the ticket first entered.
    pub first_used_at_ms: Option<i64>,
    pub first_gate_id: Option<String>,
    pub first_gate: Option<String>,
    /// Entries so far (after this scan).
    pub entries: Option<i64>,
    pub display: Option<Display>,
    /// An offline admission that collided with an earlier admission.
    pub conflict: bool,
}

impl Verdict {
    pub fn new(reason: Reason) -> Self {
        Self {
            ok: reason == Reason::Ok,
            reason: reason.code().to_owned(),
            ticket_id: None,
            first_used_at_ms: None,
            first_gate_id: None,
            first_gate: None,
            entries: None,
            display: None,
            conflict: false,
        }
    }
}

/// When an event's doors open and close, unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doors {
    /// `events.doors_open_at`; without it the doors are open until closing.
    pub open_ms: Option<i64>,
    /// `checkin_settings.doors_close_at`, or the event's end.
    pub close_ms: i64,
}

/// The doors check at instant `now_ms`: before opening is `not_yet_open`,
/// at or after closing is `closed`.
pub fn doors_check(now_ms: i64, doors: Doors) -> Option<Reason> {
    if doors.open_ms.is_some_and(|open| now_ms < open) {
        Some(Reason::NotYetOpen)
    } else if now_ms >= doors.close_ms {
        Some(Reason::Closed)
    } else {
        None
    }
}

/// Whether a ticket type admitting `type_zones` may pass a gate of
/// `gate_zone`. An empty list admits everywhere.
pub fn zone_admits(type_zones: &[String], gate_zone: &str) -> bool {
    type_zones.is_empty() || type_zones.iter().any(|z| z == gate_zone)
}

/// The ticket facts a scan is judged against, read inside the scan's
/// transaction.
#[derive(Debug, Clone)]
pub struct TicketFacts {
    pub event_id: String,
    pub status: String,
    pub order_status: String,
    pub generation: i64,
    pub type_name: String,
    pub zones: Vec<String>,
    pub holder_display_name: String,
    pub policy: EntryPolicy,
}

/// Every check that needs the ticket but not its entry history, in order:
/// event, cancellation, payment, generation, zone, doors.
pub fn ticket_check(
    t: &TicketFacts,
    device_event: &str,
    credential_generation: u32,
    gate_zone: &str,
    direction: Direction,
    now_ms: i64,
    doors: Doors,
) -> Option<Reason> {
    if t.event_id != device_event {
        return Some(Reason::WrongEvent);
    }
    if t.status != "valid" || matches!(t.order_status.as_str(), "refunded" | "cancelled") {
        return Some(Reason::Cancelled);
    }
    if t.order_status != "paid" {
        return Some(Reason::Unpaid);
    }
    if i64::from(credential_generation) != t.generation {
        return Some(Reason::SupersededGeneration);
    }
    if direction == Direction::Out {
        // Leaving is always allowed for a valid ticket: no zone or doors rule.
        return None;
    }
    if !zone_admits(&t.zones, gate_zone) {
        return Some(Reason::WrongZone);
    }
    doors_check(now_ms, doors)
}

/// Parses the `ticket_types.zones` JSON array; a malformed value admits
/// nowhere rather than everywhere.
pub fn parse_zones(json: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(json).unwrap_or_else(|_| vec!["\u{0}invalid".to_owned()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Doors = Doors { open_ms: Some(10), close_ms: 20 };

    fn facts() -> TicketFacts {
        TicketFacts {
            event_id: "e".into(),
            status: "valid".into(),
            order_status: "paid".into(),
            generation: 2,
            type_name: "GA".into(),
            zones: vec!["floor".into()],
            holder_display_name: "Ana".into(),
            policy: EntryPolicy::Single,
        }
    }

    #[test]
    fn ticket_checks_run_in_order() {
        let f = facts();
        let check =
            |f: &TicketFacts, generation, zone, now| ticket_check(f, "e", generation, zone, Direction::In, now, D);
        assert_eq!(check(&f, 2, "floor", 15), None);
        assert_eq!(check(&f, 1, "floor", 15), Some(Reason::SupersededGeneration));
        assert_eq!(check(&f, 2, "vip", 15), Some(Reason::WrongZone));
        assert_eq!(check(&f, 2, "floor", 5), Some(Reason::NotYetOpen));
        assert_eq!(check(&f, 2, "floor", 20), Some(Reason::Closed));
        let mut c = f.clone();
        c.status = "cancelled".into();
        assert_eq!(check(&c, 2, "floor", 15), Some(Reason::Cancelled));
        let mut u = f.clone();
        u.order_status = "pending".into();
        assert_eq!(check(&u, 2, "floor", 15), Some(Reason::Unpaid));
        assert_eq!(ticket_check(&f, "other", 2, "floor", Direction::In, 15, D), Some(Reason::WrongEvent));
        // Exits ignore zones and doors.
        assert_eq!(ticket_check(&f, "e", 2, "vip", Direction::Out, 50, D), None);
    }

    #[test]
    fn zones_and_policies_parse() {
        assert!(zone_admits(&[], "any"));
        assert!(!zone_admits(&parse_zones("not json"), "floor"));
        assert_eq!(EntryPolicy::new(false, Some(9)).map(EntryPolicy::max_entries).ok(), Some(1));
        assert_eq!(EntryPolicy::new(true, Some(3)).map(EntryPolicy::max_entries).ok(), Some(3));
        assert!(EntryPolicy::new(true, None).is_err());
        assert!(EntryPolicy::new(true, Some(0)).is_err());
        assert!(Name::parse("name", "  ").is_err());
        assert_eq!(Name::parse("name", " North ").map(|n| n.as_str().to_owned()).ok().as_deref(), Some("North"));
    }
}
