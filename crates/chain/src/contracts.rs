//! Typed bindings over the committed contract artifacts in `contracts/out`.
//!
//! `sol!` reads the ABI and bytecode straight from the JSON the Solidity build wrote, so the
//! Rust side needs no Node and cannot drift from what was compiled; `scripts/check-contracts`
//! keeps the artifacts in step with the sources. The `include_str!` copies make Cargo rebuild
//! this crate when an artifact changes (the macro itself does not tell Cargo it read a file).

#![allow(missing_docs, clippy::too_many_arguments)]

// One module per artifact: the factory's ABI names `EventTickets.InitParams`, which `sol!`
// turns into its own `EventTickets` item that would clash with the collection's bindings.
pub mod event_tickets {
    alloy::sol!(
        #[derive(Debug, PartialEq, Eq)]
        EventTickets,
        "../../contracts/out/EventTickets.json"
    );
}

pub mod ticket_factory {
    alloy::sol!(
        #[derive(Debug, PartialEq, Eq)]
        TicketFactory,
        "../../contracts/out/TicketFactory.json"
    );
}

pub use event_tickets::EventTickets;
pub use ticket_factory::TicketFactory;

/// Test-only contracts (`contracts/test`): a hostile `onERC721Received` receiver and a plain
/// OpenZeppelin ERC-721 used as the gas reference.
pub mod test_contracts {
    alloy::sol!(
        #[derive(Debug, PartialEq, Eq)]
        ReentrantReceiver,
        "../../contracts/out/ReentrantReceiver.json"
    );

    alloy::sol!(
        #[derive(Debug, PartialEq, Eq)]
        BaselineERC721,
        "../../contracts/out/BaselineERC721.json"
    );
}

/// The artifacts as committed (ABI, creation and runtime bytecode), for tools and the
/// metadata endpoints.
pub mod artifacts {
    pub const EVENT_TICKETS: &str = include_str!("../../../contracts/out/EventTickets.json");
    pub const TICKET_FACTORY: &str = include_str!("../../../contracts/out/TicketFactory.json");
    pub const REENTRANT_RECEIVER: &str = include_str!("../../../contracts/out/ReentrantReceiver.json");
    pub const BASELINE_ERC721: &str = include_str!("../../../contracts/out/BaselineERC721.json");
}

/// A readable name for revert data: the custom error's name (`TransfersLocked`,
/// `AccessControlUnauthorizedAccount`, …), a `require` message or panic, or the raw hex.
pub fn revert_reason(data: &[u8]) -> String {
    if let Some(selector) = data.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok())
        && let Some(name) = EventTickets::EventTicketsErrors::name_by_selector(selector)
            .or_else(|| TicketFactory::TicketFactoryErrors::name_by_selector(selector))
    {
        return name.to_owned();
    }
    alloy::sol_types::decode_revert_reason(data).unwrap_or_else(|| format!("0x{}", alloy::hex::encode(data)))
}
