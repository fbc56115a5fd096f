//! The one interface the platform uses to talk to a chain, whichever chain it is.
//!
//! Every state-changing call is sent by the platform account that holds the matching role
//! (minter, custodian, organizer), so callers never pick a sender; the embedded chain and a
//! JSON-RPC client differ only in how the transaction reaches a block.

use alloy::primitives::{Address, B256, Bytes, Log, U256};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The platform's accounts and the role each one holds in every collection it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformRoles {
    /// Owns the factory and administers every collection's roles.
    pub admin: Address,
    /// Mints, burns and marks tickets attended.
    pub minter: Address,
    /// The market operator: the only sender that moves tokens while transfers are locked.
    pub custodian: Address,
    /// Acts for the organizer: transfer policy, royalty, metadata locations.
    pub organizer: Address,
}

/// What a new event collection is created with; roles come from the client's
/// [`PlatformRoles`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionParams {
    pub name: String,
    pub symbol: String,
    /// `tokenURI(id)` is `{base_uri}{id}`, or `{base_uri}{id}/attended` after check-in.
    pub base_uri: String,
    /// ERC-7572 contract-level metadata.
    pub contract_uri: String,
    pub royalty_receiver: Address,
    /// ERC-2981 default royalty in basis points (0 = none, at most 10,000).
    pub royalty_bps: u16,
    /// Unix seconds after which transfers are free whatever the lock says; 0 = not set.
    pub event_end: u64,
    /// While true (and before `event_end`), only the custodian moves tokens.
    pub transfers_locked: bool,
}

/// One token to mint: `token_id` (the ticket's serial) to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mint {
    pub to: Address,
    pub token_id: U256,
}

/// The outcome of a transaction that made it into a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub tx_hash: B256,
    pub block_number: u64,
    /// Unix seconds of the block.
    pub block_timestamp: u64,
    pub from: Address,
    /// `None` for a contract creation.
    pub to: Option<Address>,
    /// EIP-658 status: false when the transaction reverted or halted.
    pub success: bool,
    pub gas_used: u64,
    pub logs: Vec<Log>,
    pub contract_address: Option<Address>,
    /// Return data of a successful call or revert data of a failed one.
    pub output: Bytes,
}

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The transaction was included and reverted; nothing changed on chain except the
    /// sender's nonce. `reason` is the custom error's name where the ABI knows it.
    #[error("transaction reverted: {reason}")]
    Reverted { reason: String, receipt: Box<Receipt> },
    /// A read reverted (e.g. `ownerOf` of a token that does not exist).
    #[error("call reverted: {reason}")]
    CallReverted { reason: String, data: Bytes },
    /// The chain could not be reached or did not answer in time; the outcome of a send is
    /// unknown and must be reconciled by reading the chain before any retry.
    #[error("chain unavailable: {0}")]
    Unavailable(String),
    /// The answer did not decode as the ABI says.
    #[error("undecodable chain response: {0}")]
    Decode(String),
    /// The EVM refused the transaction before executing it, or its database failed.
    #[error("evm: {0}")]
    Evm(String),
    /// The chain's state could not be read from or written to the data directory.
    #[error("chain state file: {0}")]
    State(String),
    /// Bad input that no chain would accept (empty batch, royalty over 100 %, …).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ChainError {
    /// The revert reason of a failed transaction or read, if that is what happened.
    pub fn revert_reason(&self) -> Option<&str> {
        match self {
            ChainError::Reverted { reason, .. } | ChainError::CallReverted { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Everything the platform asks of a chain. Object-safe: held as `Arc<dyn ChainClient>`.
/// Token ids per `ownersOf` call: a page of the reconciler in one read, well inside a node's
/// call gas limit (about 2,600 gas per id).
pub const OWNERS_PER_CALL: usize = 500;

/// `ownersOf`'s answer with the zero address read as "no token".
pub(crate) fn owners_from(addresses: Vec<Address>) -> Vec<Option<Address>> {
    addresses.into_iter().map(|a| (a != Address::ZERO).then_some(a)).collect()
}

#[async_trait]
pub trait ChainClient: Send + Sync {
    /// EIP-155 chain id.
    fn chain_id(&self) -> u64;

    /// The platform accounts that send each kind of transaction.
    fn roles(&self) -> PlatformRoles;

    /// The ticket factory in use, deploying one first if this chain has none.
    async fn ensure_factory(&self) -> Result<Address, ChainError>;

    /// Latest block number.
    async fn block_number(&self) -> Result<u64, ChainError>;

    /// Where the collection of `event_key` is or will be deployed (deterministic clone address).
    async fn predict_collection(&self, event_key: B256) -> Result<Address, ChainError>;

    /// The collection created for `event_key`, if any.
    async fn collection_of(&self, event_key: B256) -> Result<Option<Address>, ChainError>;

    /// Clones a collection for the event in one transaction; reverts (`CollectionExists`) if
    /// the event already has one. Returns the collection's address and the receipt.
    async fn create_collection(
        &self,
        event_key: B256,
        params: &CollectionParams,
    ) -> Result<(Address, Receipt), ChainError>;

    /// Mints every token of `mints` in one transaction, as the minter. All or nothing: a token
    /// id minted before (even if burned since) reverts the whole batch.
    async fn mint_batch(&self, collection: Address, mints: &[Mint]) -> Result<Receipt, ChainError>;

    /// Moves a token as the custodian (gift, resale, export), whatever the transfer lock says.
    async fn transfer(
        &self,
        collection: Address,
        from: Address,
        to: Address,
        token_id: U256,
    ) -> Result<Receipt, ChainError>;

    /// Burns a token (refund, cancellation), as the minter.
    async fn burn(&self, collection: Address, token_id: U256) -> Result<Receipt, ChainError>;

    /// Marks tokens attended in one transaction, switching their metadata to the attended
    /// variant; ids without a token and tokens already attended are skipped.
    async fn mark_attended(&self, collection: Address, token_ids: &[U256]) -> Result<Receipt, ChainError>;

    /// Sets the transfer lock and the event's end (unix seconds, 0 = not set), as the organizer.
    async fn set_transfer_policy(
        &self,
        collection: Address,
        locked: bool,
        event_end: u64,
    ) -> Result<Receipt, ChainError>;

    /// Sets the collection's ERC-2981 default royalty (basis points of a sale, to `receiver`),
    /// as the organizer.
    async fn set_default_royalty(
        &self,
        collection: Address,
        receiver: Address,
        bps: u16,
    ) -> Result<Receipt, ChainError>;

    /// The holder of a token, or `None` if it was never minted or has been burned.
    async fn owner_of(&self, collection: Address, token_id: U256) -> Result<Option<Address>, ChainError>;

    /// The holders of many tokens of one collection, `None` for an id without a token. The
    /// chains answer in one call per [`OWNERS_PER_CALL`] ids (the contract's `ownersOf`); this
    /// default asks token by token.
    async fn owners_of(&self, collection: Address, token_ids: &[U256]) -> Result<Vec<Option<Address>>, ChainError> {
        let mut owners = Vec::with_capacity(token_ids.len());
        for id in token_ids {
            owners.push(self.owner_of(collection, *id).await?);
        }
        Ok(owners)
    }

    /// How many tokens of the collection `holder` has.
    async fn balance_of(&self, collection: Address, holder: Address) -> Result<u64, ChainError>;

    /// Tokens in existence (minted minus burned).
    async fn total_supply(&self, collection: Address) -> Result<u64, ChainError>;

    /// The token's metadata URI (`{base}{id}` or `{base}{id}/attended`).
    async fn token_uri(&self, collection: Address, token_id: U256) -> Result<String, ChainError>;

    /// Whether only the custodian may move tokens right now.
    async fn transfers_locked(&self, collection: Address) -> Result<bool, ChainError>;

    /// The receipt of an included transaction, or `None` if the chain does not know it.
    async fn receipt(&self, tx_hash: B256) -> Result<Option<Receipt>, ChainError>;
}
