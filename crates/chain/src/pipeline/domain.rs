//! The pipeline's states, settings and decisions, without I/O: when a batch is due, how long
//! to back off, what a collection is created with.

use alloy::primitives::{Address, B256, keccak256};

use crate::client::CollectionParams;

/// Where a ticket's token is. Moves forward only: pending → submitted → confirmed → burned,
/// except that a submitted mint whose outcome turned out to be "not on chain" goes back to
/// pending (the contract refuses a second mint, so a resend can never make two tokens), and
/// the reconciler sends a confirmed token that the chain lost back to pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Waiting for its batch (or for its collection).
    Pending,
    /// In a mint transaction whose outcome is not recorded yet.
    Submitted,
    /// Minted: the chain has it.
    Confirmed,
    /// Burned after a refund or cancellation, or cancelled before it was ever minted.
    Burned,
    /// Refused by the chain `max_attempts` times even when sent alone; needs an operator.
    Failed,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::Confirmed => "confirmed",
            Self::Burned => "burned",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "submitted" => Self::Submitted,
            "confirmed" => Self::Confirmed,
            "burned" => Self::Burned,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// What an operation does to a minted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Custodian moves it to a new holder's custodial address or an exported address.
    Transfer,
    /// Refund or cancellation.
    Burn,
    /// Checked in: the metadata switches to the attended variant.
    Attend,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Burn => "burn",
            Self::Attend => "attend",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "transfer" => Self::Transfer,
            "burn" => Self::Burn,
            "attend" => Self::Attend,
            _ => return None,
        })
    }
}

/// The pipeline's settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// `embedded` or `rpc`: shown on tickets beside the chain id.
    pub network: String,
    /// The deployment's public address: token and contract metadata URIs point under it.
    pub public_url: String,
    /// Most tickets in one mint transaction.
    pub batch_size: usize,
    /// A smaller batch is sent once its oldest ticket has waited this long (milliseconds).
    pub batch_window_ms: i64,
    /// How long a send may stay unanswered before another process treats its outcome as
    /// unknown and reads the chain (milliseconds).
    pub send_lease_ms: i64,
    /// True when no other process can be sending to this chain (the embedded chain lives in
    /// this process): a send left open by an earlier process is then resolved at once.
    pub single_process: bool,
    /// Refusals of a ticket sent alone before it is parked as failed.
    pub max_attempts: i64,
    /// Tokens compared against the chain per reconciliation step.
    pub reconcile_page: i64,
}

impl PipelineConfig {
    /// Defaults: 100 tickets or 2 seconds per batch, a minute's lease per send.
    pub fn new(network: impl Into<String>, public_url: impl Into<String>) -> Self {
        Self {
            network: network.into(),
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            batch_size: 100,
            batch_window_ms: 2_000,
            send_lease_ms: 60_000,
            single_process: true,
            max_attempts: 5,
            reconcile_page: 50,
        }
    }
}

/// Whether an event's pending tickets make a batch now: a full batch is always due; a
/// smaller one once its oldest ticket waited `batch_window_ms`, or when the caller flushes
/// (shutdown, tests).
pub fn batch_due(pending: usize, oldest_created_ms: i64, now_ms: i64, cfg: &PipelineConfig, flush: bool) -> bool {
    pending > 0
        && (flush || pending >= cfg.batch_size || now_ms.saturating_sub(oldest_created_ms) >= cfg.batch_window_ms)
}

/// Splits due tickets (ordered, retried ones flagged) into the mint transactions to send:
/// fresh tickets in chunks of `batch_size`; tickets that were refused before one per
/// transaction, so a ticket the chain will never accept cannot hold a whole batch back.
pub fn plan_batches<T: Clone>(due: &[(T, bool)], batch_size: usize) -> Vec<Vec<T>> {
    let size = batch_size.max(1);
    let fresh: Vec<T> = due.iter().filter(|(_, retried)| !retried).map(|(t, _)| t.clone()).collect();
    let mut out: Vec<Vec<T>> = fresh.chunks(size).map(<[T]>::to_vec).collect();
    out.extend(due.iter().filter(|(_, retried)| *retried).map(|(t, _)| vec![t.clone()]));
    out
}

/// Delay before trying a refused or unreachable item again: 1 s doubling to 5 minutes.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = attempts.clamp(0, 20) as u32;
    1_000i64.saturating_mul(1i64 << exp.min(9)).min(300_000)
}

/// The factory key of an event's collection: a hash of the event id, so the clone address is
/// known before the creation lands and a second creation for the same event reverts.
pub fn event_key(event_id: &str) -> B256 {
    keccak256(format!("entrada:event:{event_id}").as_bytes())
}

/// What the chain pipeline needs to know of an event to create its collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFacts {
    pub name: String,
    pub ends_at_ms: i64,
    /// The organizer's resale royalty, basis points.
    pub royalty_bps: i64,
    /// Whether fans may take tickets out to their own wallets.
    pub export_allowed: bool,
}

/// A short upper-case symbol from the event's name: the initials of its words (at most 8),
/// or `TICKET`.
pub fn symbol_for(name: &str) -> String {
    let s: String = name
        .split(|c: char| !c.is_alphanumeric())
        .filter_map(|w| w.chars().next())
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .take(8)
        .collect();
    if s.is_empty() { "TICKET".to_owned() } else { s }
}

/// The collection an event gets.
///
/// Transfers are locked while the event is upcoming unless the organizer allows exports:
/// locked, only the platform's custodian moves tokens, so resale keeps the market's price caps
/// and royalties; an organizer who lets fans take tickets to their own wallets has accepted
/// that they move freely there, and a locked exported token would be stuck until the end.
/// After `event_end` the contract frees every token either way. The royalty goes to the
/// platform's organizer account, which pays organizers out off chain.
pub fn collection_params(
    event_id: &str,
    facts: &EventFacts,
    public_url: &str,
    royalty_receiver: Address,
) -> CollectionParams {
    let name: String = facts.name.chars().take(100).collect();
    CollectionParams {
        symbol: symbol_for(&name),
        name,
        base_uri: format!("{public_url}/api/v1/nft/{event_id}/"),
        contract_uri: format!("{public_url}/api/v1/nft/{event_id}/contract"),
        royalty_receiver,
        royalty_bps: u16::try_from(facts.royalty_bps.clamp(0, 10_000)).unwrap_or(0),
        event_end: u64::try_from(facts.ends_at_ms.max(0) / 1000).unwrap_or(0),
        transfers_locked: !facts.export_allowed,
    }
}

/// An address as stored and shown: EIP-55 checksummed hex.
pub fn address_text(a: Address) -> String {
    a.to_checksum(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> PipelineConfig {
        PipelineConfig::new("embedded", "http://x/")
    }

    /// A batch waits for 100 tickets or 2 seconds, whichever comes first; a flush sends at once.
    #[test]
    fn a_batch_is_due_when_full_or_old_or_flushed() {
        let c = cfg();
        assert!(!batch_due(0, 0, 10_000, &c, true), "nothing pending is never due");
        assert!(!batch_due(5, 1_000, 2_000, &c, false), "young and small waits");
        assert!(batch_due(5, 1_000, 3_000, &c, false), "the window elapsed");
        assert!(batch_due(100, 1_000, 1_000, &c, false), "a full batch goes at once");
        assert!(batch_due(1, 1_000, 1_000, &c, true), "a flush sends what there is");
    }

    /// Fresh tickets share transactions; retried ones go alone.
    #[test]
    fn batches_are_chunks_of_fresh_tickets_and_singletons_of_retried_ones() {
        let due: Vec<(u32, bool)> = (0..250).map(|i| (i, i == 7 || i == 200)).collect();
        let plan = plan_batches(&due, 100);
        let sizes: Vec<usize> = plan.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 48, 1, 1]);
        assert_eq!(plan[3], vec![7]);
        let mut all: Vec<u32> = plan.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..250).collect::<Vec<_>>(), "every ticket exactly once");
        assert!(plan_batches::<u32>(&[], 100).is_empty());
    }

    /// Backoff doubles from a second and stops at five minutes.
    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(3), 8_000);
        assert_eq!(backoff_ms(50), 300_000);
        assert_eq!(backoff_ms(-3), 1_000);
    }

    /// Every state name round-trips, unknown names are refused.
    #[test]
    fn states_and_kinds_round_trip() {
        for s in
            [TokenState::Pending, TokenState::Submitted, TokenState::Confirmed, TokenState::Burned, TokenState::Failed]
        {
            assert_eq!(TokenState::parse(s.as_str()), Some(s));
        }
        for k in [OpKind::Transfer, OpKind::Burn, OpKind::Attend] {
            assert_eq!(OpKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TokenState::parse("minted"), None);
        assert_eq!(OpKind::parse("mint"), None);
    }

    /// The collection points its metadata at the deployment, caps the royalty and locks
    /// transfers unless exports are allowed.
    #[test]
    fn collection_parameters_follow_the_event() {
        let facts = EventFacts {
            name: "Noche de Prueba".into(),
            ends_at_ms: 1_900_000_000_123,
            royalty_bps: 25_000,
            export_allowed: false,
        };
        let p = collection_params("ev1", &facts, "https://t.example", Address::repeat_byte(1));
        assert_eq!(p.base_uri, "https://t.example/api/v1/nft/ev1/");
        assert_eq!(p.contract_uri, "https://t.example/api/v1/nft/ev1/contract");
        assert_eq!(p.symbol, "NDP");
        assert_eq!(p.royalty_bps, 10_000);
        assert_eq!(p.event_end, 1_900_000_000);
        assert!(p.transfers_locked);
        let free = collection_params("ev1", &EventFacts { export_allowed: true, ..facts }, "", Address::ZERO);
        assert!(!free.transfers_locked);
        assert_eq!(symbol_for("¡¿ !!"), "TICKET");
        assert_ne!(event_key("a"), event_key("b"));
    }
}
