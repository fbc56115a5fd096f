//! [`RpcChain`]: the ticket contracts on any EVM node reached over JSON-RPC (HTTP), with the
//! platform's keys signing locally.
//!
//! What a send does, in order:
//! 1. If an earlier send of the same call (sender, target, calldata) ended with an unknown
//!    outcome, reconcile it first by reading the chain: its receipt by hash; else the sender's
//!    nonce (used by another transaction → ours was dropped and a fresh send is safe); else
//!    re-broadcast the *same signed bytes* (same hash, same nonce: it can be included at most
//!    once). A timed-out send is never blindly re-signed.
//! 2. Simulate (`eth_call`) for the return or revert data, estimate gas with headroom, take
//!    EIP-1559 fees from the node capped by configuration.
//! 3. Take the sender's nonce from a local counter (read from the node's pending count at first
//!    use and after any error), sign, remember the transaction as "unknown", broadcast.
//! 4. Wait for the receipt and the configured number of confirmations, then map it to the
//!    same [`Receipt`]/[`ChainError`] the embedded chain gives.
//!
//! A transaction the node predicts to revert is still sent (with the gas cap as its limit):
//! the revert then happens on the chain, uses the nonce and has a receipt, exactly as on the
//! embedded chain, so callers cannot tell the two apart. Callers that want to avoid paying for
//! a revert read first (the mint pipeline checks ownership before a retry).
//!
//! Keys live in [`entrada_primitives::Secret`] until they become signers; neither is ever
//! formatted into a log line or an error.

pub mod anvil;

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{TransactionInput, TransactionReceipt, TransactionRequest};
use alloy::signers::Signer as _;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor};
use alloy::transports::{RpcError, TransportErrorKind};
use async_trait::async_trait;
use entrada_primitives::Secret;
use serde::{Deserialize, Serialize};

use crate::client::{ChainClient, ChainError, CollectionParams, Mint, PlatformRoles, Receipt};
use crate::contracts::{EventTickets, TicketFactory, revert_reason};

/// The platform's signing keys, one per role (hex secp256k1 private keys, `0x` optional).
///
/// One key may hold every role ([`RoleKeys::single`]): the simplest install, one account to
/// fund. Separate keys limit what a leaked key can do (a leaked minter key cannot change
/// policies or roles) and give each role its own nonce sequence, so mints never queue behind
/// an organizer's change. Both work; the client keeps one nonce counter per distinct address.
#[derive(Debug, Clone, Deserialize)]
pub struct RoleKeys {
    pub admin: Secret<String>,
    pub minter: Secret<String>,
    pub custodian: Secret<String>,
    pub organizer: Secret<String>,
}

impl RoleKeys {
    /// One key for all four roles.
    pub fn single(key: Secret<String>) -> Self {
        Self { admin: key.clone(), minter: key.clone(), custodian: key.clone(), organizer: key }
    }
}

/// How to reach and use a JSON-RPC chain.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// HTTP(S) endpoint of the node.
    pub url: String,
    /// EIP-155 chain id the node must report at connect (a wrong network is refused).
    pub chain_id: u64,
    pub keys: RoleKeys,
    /// Blocks that must contain or follow a transaction's block before it counts (1 = included).
    pub confirmations: u64,
    /// Limit for one JSON-RPC request, the broadcast included. A broadcast that exceeds it has
    /// an unknown outcome.
    pub request_timeout: Duration,
    /// Limit for a broadcast transaction to be included and confirmed.
    pub receipt_timeout: Duration,
    /// How often receipts and the chain head are polled while waiting.
    pub poll_interval: Duration,
    /// Cap on EIP-1559 `maxFeePerGas` (wei); the node's estimate is used below it.
    pub max_fee_per_gas: u128,
    /// Cap on `maxPriorityFeePerGas` (wei).
    pub max_priority_fee_per_gas: u128,
    /// Added to the node's gas estimate, in percent.
    pub gas_headroom_percent: u64,
    /// Highest gas limit a transaction gets (also the limit of a send predicted to revert).
    pub max_gas_per_tx: u64,
    /// The ticket factory to use. `None`: use the one recorded in `data_dir`, or deploy one.
    pub factory: Option<Address>,
    /// Where the address of a factory this client deployed is recorded
    /// (`chain-rpc-<chain id>.json`), so a restart finds it. `None`: not recorded.
    pub data_dir: Option<PathBuf>,
}

impl RpcConfig {
    /// A configuration with the defaults: one confirmation, 10 s per request, 120 s to be
    /// confirmed, 500 ms polling, fees capped at 500 gwei (2 gwei tip), 20 % gas headroom,
    /// 30 M gas per transaction.
    pub fn new(url: impl Into<String>, chain_id: u64, keys: RoleKeys) -> Self {
        Self {
            url: url.into(),
            chain_id,
            keys,
            confirmations: 1,
            request_timeout: Duration::from_secs(10),
            receipt_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(500),
            max_fee_per_gas: 500_000_000_000,
            max_priority_fee_per_gas: 2_000_000_000,
            gas_headroom_percent: 20,
            max_gas_per_tx: 30_000_000,
            factory: None,
            data_dir: None,
        }
    }
}

/// Where a factory deployed by this client is recorded in the data directory.
#[derive(Debug, Serialize, Deserialize)]
struct FactoryRecord {
    chain_id: u64,
    factory: Address,
    deployer: Address,
    /// The deployer's nonce of the deployment: the factory's address is `CREATE(deployer,
    /// nonce)`, so an interrupted deployment is finished with the same nonce, never doubled.
    deploy_nonce: u64,
}

/// Identity of a send, for reconciling a retry with an earlier unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SendKey {
    from: Address,
    to: Option<Address>,
    data: B256,
}

/// A signed transaction whose fate is not known yet.
#[derive(Debug, Clone)]
struct InFlight {
    hash: B256,
    nonce: u64,
    raw: Bytes,
    /// What the simulation before signing returned (`Err` = revert data).
    simulated: Result<Bytes, Bytes>,
}

/// What reading the chain says about an earlier send.
enum Fate {
    Included(Box<TransactionReceipt>),
    /// Its nonce was used by another transaction: it can never be included.
    Dropped,
    /// Not included yet; the node has (again) been given the same signed bytes.
    Pending,
}

/// A chain reached over JSON-RPC. Cheap to clone; clones share nonce counters and the
/// record of unknown sends.
#[derive(Clone)]
pub struct RpcChain {
    inner: Arc<Inner>,
}

struct Inner {
    provider: RootProvider,
    config: RpcConfig,
    roles: PlatformRoles,
    signers: HashMap<Address, PrivateKeySigner>,
    /// Next nonce per sender; `None` = read it from the node before the next send.
    nonces: HashMap<Address, tokio::sync::Mutex<Option<u64>>>,
    unknown: Mutex<HashMap<SendKey, InFlight>>,
    factory: tokio::sync::Mutex<Option<Address>>,
}

type TransportError = RpcError<TransportErrorKind>;

impl RpcChain {
    /// Connects to the node and checks that it is the configured chain. Does not deploy
    /// anything; [`ChainClient::ensure_factory`] does, at first use.
    pub async fn connect(config: RpcConfig) -> Result<Self, ChainError> {
        let url = config.url.parse().map_err(|e| ChainError::Invalid(format!("chain url {:?}: {e}", config.url)))?;
        if config.confirmations == 0 {
            return Err(ChainError::Invalid("confirmations must be at least 1".into()));
        }
        let provider = RootProvider::new_http(url);
        let signer = |role: &str, key: &Secret<String>| {
            PrivateKeySigner::from_str(key.expose().trim())
                .map(|s| s.with_chain_id(Some(config.chain_id)))
                // The key itself never goes into the message.
                .map_err(|_| ChainError::Invalid(format!("the {role} key is not a secp256k1 private key")))
        };
        let list = [
            signer("admin", &config.keys.admin)?,
            signer("minter", &config.keys.minter)?,
            signer("custodian", &config.keys.custodian)?,
            signer("organizer", &config.keys.organizer)?,
        ];
        let roles = PlatformRoles {
            admin: list[0].address(),
            minter: list[1].address(),
            custodian: list[2].address(),
            organizer: list[3].address(),
        };
        let signers: HashMap<Address, PrivateKeySigner> = list.into_iter().map(|s| (s.address(), s)).collect();
        let nonces = signers.keys().map(|a| (*a, tokio::sync::Mutex::new(None))).collect();
        let chain = Self {
            inner: Arc::new(Inner {
                provider,
                roles,
                signers,
                nonces,
                unknown: Mutex::new(HashMap::new()),
                factory: tokio::sync::Mutex::new(config.factory),
                config,
            }),
        };
        let id = chain.rpc(chain.inner.provider.get_chain_id()).await?;
        if id != chain.inner.config.chain_id {
            return Err(ChainError::Invalid(format!(
                "the node at {} is chain {id}, not the configured chain {}",
                chain.inner.config.url, chain.inner.config.chain_id
            )));
        }
        tracing::info!(url = %chain.inner.config.url, chain_id = id, ?roles, "connected to the JSON-RPC chain");
        Ok(chain)
    }

    /// The underlying provider, for tools and tests that need a raw JSON-RPC call.
    pub fn provider(&self) -> &RootProvider {
        &self.inner.provider
    }

    pub fn config(&self) -> &RpcConfig {
        &self.inner.config
    }

    /// Runs one JSON-RPC request under the request timeout.
    async fn rpc<T>(&self, fut: impl IntoFuture<Output = Result<T, TransportError>>) -> Result<T, ChainError> {
        match tokio::time::timeout(self.inner.config.request_timeout, fut.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_rpc_error(e)),
            Err(_) => Err(ChainError::Unavailable(format!(
                "no answer within {:?} from {}",
                self.inner.config.request_timeout, self.inner.config.url
            ))),
        }
    }

    /// A read-only call against the latest block.
    pub async fn call(&self, to: Address, data: Bytes) -> Result<Bytes, ChainError> {
        self.call_at(None, to, data, BlockId::latest()).await
    }

    /// A typed read-only call.
    pub async fn view<C: SolCall + Send>(&self, to: Address, call: C) -> Result<C::Return, ChainError> {
        let out = self.call(to, call.abi_encode().into()).await?;
        C::abi_decode_returns(&out).map_err(|e| ChainError::Decode(e.to_string()))
    }

    async fn call_at(
        &self,
        from: Option<Address>,
        to: Address,
        data: Bytes,
        block: BlockId,
    ) -> Result<Bytes, ChainError> {
        let mut req = TransactionRequest::default().to(to).input(TransactionInput::new(data));
        req.from = from;
        self.rpc(self.inner.provider.call(req).block(block)).await
    }

    /// Simulates a transaction: `Ok(Ok(output))`, `Ok(Err(revert data))`, or a chain error.
    async fn simulate(
        &self,
        from: Address,
        to: Option<Address>,
        data: &Bytes,
        block: BlockId,
    ) -> Result<Result<Bytes, Bytes>, ChainError> {
        let req = request(from, to, data.clone());
        match self.rpc(self.inner.provider.call(req).block(block)).await {
            Ok(out) => Ok(Ok(out)),
            Err(ChainError::CallReverted { data, .. }) => Ok(Err(data)),
            Err(e) => Err(e),
        }
    }

    /// Sends a transaction as one of the platform's accounts and waits until it counts.
    async fn transact(&self, from: Address, to: Option<Address>, data: Bytes) -> Result<Receipt, ChainError> {
        let key = SendKey { from, to, data: keccak256(&data) };
        if let Some(earlier) = self.unknown_get(&key) {
            match self.fate(from, &earlier).await? {
                Fate::Included(r) => {
                    tracing::info!(tx = %earlier.hash, "an earlier send with an unknown outcome was included");
                    let r = self.confirmed(earlier.hash, Some(*r)).await?;
                    self.unknown_remove(&key);
                    return self.finish(r, earlier.simulated, from, to, data).await;
                }
                Fate::Pending => {
                    let r = self.confirmed(earlier.hash, None).await?;
                    self.unknown_remove(&key);
                    return self.finish(r, earlier.simulated, from, to, data).await;
                }
                Fate::Dropped => {
                    tracing::warn!(tx = %earlier.hash, "an earlier send was dropped; sending afresh");
                    self.unknown_remove(&key);
                }
            }
        }
        self.send_fresh(key, from, to, data, None).await
    }

    /// Signs and broadcasts a new transaction (with `nonce` when the caller must pin it) and
    /// waits for it.
    async fn send_fresh(
        &self,
        key: SendKey,
        from: Address,
        to: Option<Address>,
        data: Bytes,
        nonce: Option<u64>,
    ) -> Result<Receipt, ChainError> {
        let signer =
            self.inner.signers.get(&from).ok_or_else(|| ChainError::Invalid(format!("no key for sender {from}")))?;
        let cfg = &self.inner.config;
        let simulated = self.simulate(from, to, &data, BlockId::latest()).await?;
        let gas_limit = match &simulated {
            Ok(_) => {
                let estimate = self.rpc(self.inner.provider.estimate_gas(request(from, to, data.clone()))).await?;
                (estimate.saturating_mul(100 + cfg.gas_headroom_percent) / 100).min(cfg.max_gas_per_tx)
            }
            Err(_) => cfg.max_gas_per_tx,
        };
        let fees = self.rpc(self.inner.provider.estimate_eip1559_fees()).await?;
        let priority = fees.max_priority_fee_per_gas.min(cfg.max_priority_fee_per_gas);
        let max_fee = fees.max_fee_per_gas.max(priority).min(cfg.max_fee_per_gas);

        let counter =
            self.inner.nonces.get(&from).ok_or_else(|| ChainError::Invalid(format!("no nonce for {from}")))?;
        // Held from nonce choice to broadcast: nonces leave in order, one at a time per sender.
        let mut next = counter.lock().await;
        let mut attempt = 0;
        let (hash, nonce) = loop {
            let n = match (nonce, *next) {
                (Some(n), _) => n,
                (None, Some(n)) => n,
                (None, None) => self.rpc(self.inner.provider.get_transaction_count(from).pending()).await?,
            };
            let mut tx = TxEip1559 {
                chain_id: cfg.chain_id,
                nonce: n,
                gas_limit,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: priority,
                to: to.map_or(TxKind::Create, TxKind::Call),
                value: U256::ZERO,
                access_list: Default::default(),
                input: data.clone(),
            };
            let signature =
                signer.sign_transaction_sync(&mut tx).map_err(|e| ChainError::Evm(format!("signing: {e}")))?;
            let signed = tx.into_signed(signature);
            let hash = *signed.hash();
            let raw: Bytes = TxEnvelope::from(signed).encoded_2718().into();
            // Recorded before the broadcast: from here on the outcome may be unknown.
            self.unknown_insert(key, InFlight { hash, nonce: n, raw: raw.clone(), simulated: simulated.clone() });
            match self.rpc(self.inner.provider.send_raw_transaction(&raw)).await {
                Ok(_) => {
                    *next = Some(n + 1);
                    break (hash, n);
                }
                Err(ChainError::Unavailable(e)) => {
                    *next = None;
                    tracing::warn!(tx = %hash, nonce = n, %from, "broadcast outcome unknown: {e}");
                    return Err(ChainError::Unavailable(format!(
                        "broadcast of {hash} (nonce {n}) has an unknown outcome: {e}; a retry reconciles it first"
                    )));
                }
                Err(e) => {
                    // The node refused the transaction: it was not accepted, so it cannot be
                    // included. Resync the nonce (another process may share the key) and try
                    // once more when the refusal was about the nonce.
                    self.unknown_remove(&key);
                    *next = None;
                    let msg = e.to_string();
                    if attempt == 0 && nonce.is_none() && msg.to_lowercase().contains("nonce") {
                        attempt += 1;
                        tracing::warn!(%from, nonce = n, "node refused the nonce; resyncing: {msg}");
                        continue;
                    }
                    return Err(e);
                }
            }
        };
        drop(next);
        tracing::debug!(tx = %hash, nonce, %from, gas_limit, max_fee, "sent");
        let r = self.confirmed(hash, None).await?;
        self.unknown_remove(&key);
        self.finish(r, simulated, from, to, data).await
    }

    /// What became of an earlier send whose outcome is unknown, read from the chain.
    async fn fate(&self, from: Address, earlier: &InFlight) -> Result<Fate, ChainError> {
        if let Some(r) = self.rpc(self.inner.provider.get_transaction_receipt(earlier.hash)).await? {
            return Ok(Fate::Included(Box::new(r)));
        }
        let used = self.rpc(self.inner.provider.get_transaction_count(from).latest()).await?;
        if used > earlier.nonce {
            // The nonce is spent; unless ours spent it in the meantime, another one did.
            return match self.rpc(self.inner.provider.get_transaction_receipt(earlier.hash)).await? {
                Some(r) => Ok(Fate::Included(Box::new(r))),
                None => Ok(Fate::Dropped),
            };
        }
        // Not included and the nonce is free: hand the node the very same signed bytes.
        match self.rpc(self.inner.provider.send_raw_transaction(&earlier.raw)).await {
            Ok(_) => Ok(Fate::Pending),
            Err(ChainError::Unavailable(e)) => Err(ChainError::Unavailable(e)),
            // "already known" and the like: the node has it.
            Err(e) if e.to_string().to_lowercase().contains("known") => Ok(Fate::Pending),
            Err(e) => {
                let used = self.rpc(self.inner.provider.get_transaction_count(from).latest()).await?;
                match self.rpc(self.inner.provider.get_transaction_receipt(earlier.hash)).await? {
                    Some(r) => Ok(Fate::Included(Box::new(r))),
                    None if used > earlier.nonce => Ok(Fate::Dropped),
                    None => Err(ChainError::Unavailable(format!(
                        "transaction {} still unknown, the node refused it again: {e}",
                        earlier.hash
                    ))),
                }
            }
        }
    }

    /// Waits until the transaction is included and has the configured confirmations, within
    /// the receipt timeout. Transient node errors are retried until then; running out of time
    /// is `Unavailable` (the outcome stays unknown).
    async fn confirmed(&self, hash: B256, known: Option<TransactionReceipt>) -> Result<TransactionReceipt, ChainError> {
        let cfg = &self.inner.config;
        let deadline = tokio::time::Instant::now() + cfg.receipt_timeout;
        let mut receipt = known;
        loop {
            if receipt.is_none() {
                receipt = self.rpc(self.inner.provider.get_transaction_receipt(hash)).await.unwrap_or(None);
            }
            if let Some(r) = &receipt {
                let included = r.block_number.unwrap_or(u64::MAX);
                let head = self.rpc(self.inner.provider.get_block_number()).await.unwrap_or(0);
                if head >= included && head - included + 1 >= cfg.confirmations {
                    if cfg.confirmations == 1 {
                        return receipt.ok_or_else(|| ChainError::Unavailable("receipt vanished".into()));
                    }
                    // Still in the same block after the confirmations (no reorg took it)?
                    match self.rpc(self.inner.provider.get_transaction_receipt(hash)).await {
                        Ok(Some(again)) if again.block_hash == r.block_hash => return Ok(again),
                        Ok(_) => receipt = None,
                        Err(_) => {}
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChainError::Unavailable(format!(
                    "transaction {hash} not confirmed ({} confirmations) within {:?}; its outcome is unknown \
                     until a retry reconciles it",
                    cfg.confirmations, cfg.receipt_timeout
                )));
            }
            tokio::time::sleep(cfg.poll_interval).await;
        }
    }

    /// Turns a node receipt into the platform's [`Receipt`], and a failed one into
    /// [`ChainError::Reverted`] with the revert's name, as the embedded chain does.
    async fn finish(
        &self,
        r: TransactionReceipt,
        simulated: Result<Bytes, Bytes>,
        from: Address,
        to: Option<Address>,
        data: Bytes,
    ) -> Result<Receipt, ChainError> {
        let mut receipt = self.convert(&r).await?;
        if receipt.success {
            receipt.output = simulated.unwrap_or_default();
            return Ok(receipt);
        }
        // The revert data is not in a receipt: replay the call on the parent block's state,
        // falling back on what the simulation before the send said.
        let parent = BlockId::number(receipt.block_number.saturating_sub(1));
        let replayed = self.simulate(from, to, &data, parent).await.ok().and_then(Result::err);
        receipt.output = replayed.or_else(|| simulated.err()).unwrap_or_default();
        let reason = if receipt.output.is_empty() && r.gas_used >= self.inner.config.max_gas_per_tx {
            "halted: OutOfGas".to_owned()
        } else {
            revert_reason(&receipt.output)
        };
        Err(ChainError::Reverted { reason, receipt: Box::new(receipt) })
    }

    /// The fields a node receipt carries, plus the block's timestamp. `output` is left empty.
    async fn convert(&self, r: &TransactionReceipt) -> Result<Receipt, ChainError> {
        let block_number = r.block_number.ok_or_else(|| ChainError::Decode("receipt without a block".into()))?;
        let block = self
            .rpc(self.inner.provider.get_block_by_number(BlockNumberOrTag::Number(block_number)))
            .await?
            .ok_or_else(|| ChainError::Unavailable(format!("block {block_number} not found")))?;
        Ok(Receipt {
            tx_hash: r.transaction_hash,
            block_number,
            block_timestamp: block.header.timestamp,
            from: r.from,
            to: r.to,
            success: r.status(),
            gas_used: r.gas_used,
            logs: r.inner.logs().iter().map(|l| l.inner.clone()).collect(),
            contract_address: r.contract_address,
            output: Bytes::new(),
        })
    }

    /// Sends a transaction from an account the node signs for (a development node's unlocked
    /// or impersonated account) and waits for it like any other. For tests and tools: holders'
    /// own transfers, hostile contracts; the platform's calls are signed locally.
    pub async fn send_unlocked(&self, from: Address, to: Option<Address>, data: Bytes) -> Result<Receipt, ChainError> {
        let simulated = self.simulate(from, to, &data, BlockId::latest()).await?;
        let mut req = request(from, to, data.clone());
        req.gas = Some(self.inner.config.max_gas_per_tx);
        let hash: B256 = self.rpc(self.inner.provider.raw_request("eth_sendTransaction".into(), (req,))).await?;
        let r = self.confirmed(hash, None).await?;
        self.finish(r, simulated, from, to, data).await
    }

    /// Sends as `from`: signed locally when it is one of the platform's accounts (with the
    /// same nonce handling and reconciliation as every platform call), else through
    /// [`RpcChain::send_unlocked`]. The JSON-RPC twin of `EmbeddedChain::transact_as`.
    pub async fn send_as(&self, from: Address, to: Option<Address>, data: Bytes) -> Result<Receipt, ChainError> {
        if self.inner.signers.contains_key(&from) {
            self.transact(from, to, data).await
        } else {
            self.send_unlocked(from, to, data).await
        }
    }

    fn unknown_get(&self, key: &SendKey) -> Option<InFlight> {
        self.inner.unknown.lock().ok().and_then(|m| m.get(key).cloned())
    }

    fn unknown_insert(&self, key: SendKey, tx: InFlight) {
        if let Ok(mut m) = self.inner.unknown.lock() {
            m.insert(key, tx);
        }
    }

    fn unknown_remove(&self, key: &SendKey) {
        if let Ok(mut m) = self.inner.unknown.lock() {
            m.remove(key);
        }
    }

    /// How many sends have an unknown outcome right now.
    pub fn unknown_sends(&self) -> usize {
        self.inner.unknown.lock().map(|m| m.len()).unwrap_or(0)
    }

    async fn factory(&self) -> Result<Address, ChainError> {
        self.ensure_factory().await
    }

    fn record_path(&self) -> Option<PathBuf> {
        let cfg = &self.inner.config;
        cfg.data_dir.as_ref().map(|d| d.join(format!("chain-rpc-{}.json", cfg.chain_id)))
    }

    async fn has_code(&self, at: Address) -> Result<bool, ChainError> {
        Ok(!self.rpc(self.inner.provider.get_code_at(at)).await?.is_empty())
    }

    /// Deploys the factory with the admin's `nonce`, recording its address first.
    async fn deploy_factory(&self, nonce: u64) -> Result<Address, ChainError> {
        let admin = self.inner.roles.admin;
        let factory = admin.create(nonce);
        if let Some(path) = self.record_path() {
            let record =
                FactoryRecord { chain_id: self.inner.config.chain_id, factory, deployer: admin, deploy_nonce: nonce };
            write_record(&path, &record)?;
        }
        let mut initcode = TicketFactory::BYTECODE.to_vec();
        initcode.extend_from_slice(&TicketFactory::constructorCall { owner_: admin }.abi_encode());
        let data: Bytes = initcode.into();
        let key = SendKey { from: admin, to: None, data: keccak256(&data) };
        let receipt = match self.unknown_get(&key) {
            // An earlier deployment in this process timed out: reconcile, never redeploy.
            Some(_) => self.transact(admin, None, data).await?,
            None => self.send_fresh(key, admin, None, data, Some(nonce)).await?,
        };
        if receipt.contract_address != Some(factory) {
            return Err(ChainError::Evm(format!(
                "factory landed at {:?}, expected {factory}",
                receipt.contract_address
            )));
        }
        tracing::info!(%factory, "ticket factory deployed");
        Ok(factory)
    }
}

fn request(from: Address, to: Option<Address>, data: Bytes) -> TransactionRequest {
    let mut req = TransactionRequest::default().from(from).input(TransactionInput::new(data));
    req.to = Some(to.map_or(TxKind::Create, TxKind::Call));
    req
}

/// Node errors as [`ChainError`]s: no answer → `Unavailable`; an answer with revert data →
/// `CallReverted` with the custom error's name; anything else the node said → `Evm`.
fn map_rpc_error(e: TransportError) -> ChainError {
    if let Some(payload) = e.as_error_resp() {
        if let Some(data) = payload.as_revert_data() {
            return ChainError::CallReverted { reason: revert_reason(&data), data };
        }
        let message = payload.message.to_string();
        if message.contains("revert") {
            return ChainError::CallReverted { reason: revert_reason(&[]), data: Bytes::new() };
        }
        return ChainError::Evm(format!("node refused: {message} (code {})", payload.code));
    }
    match e {
        RpcError::Transport(t) => ChainError::Unavailable(t.to_string()),
        RpcError::NullResp => ChainError::Unavailable("empty answer from the node".into()),
        RpcError::DeserError { err, .. } => ChainError::Decode(err.to_string()),
        other => ChainError::Unavailable(other.to_string()),
    }
}

fn write_record(path: &std::path::Path, record: &FactoryRecord) -> Result<(), ChainError> {
    let err = |e: &dyn std::fmt::Display| ChainError::State(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| err(&e))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| err(&e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| err(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&e))
}

fn decode<C: SolCall>(out: &Bytes) -> Result<C::Return, ChainError> {
    C::abi_decode_returns(out).map_err(|e| ChainError::Decode(e.to_string()))
}

#[async_trait]
impl ChainClient for RpcChain {
    fn chain_id(&self) -> u64 {
        self.inner.config.chain_id
    }

    fn roles(&self) -> PlatformRoles {
        self.inner.roles
    }

    async fn ensure_factory(&self) -> Result<Address, ChainError> {
        let mut slot = self.inner.factory.lock().await;
        if let Some(factory) = *slot {
            if self.inner.config.factory == Some(factory) && !self.has_code(factory).await? {
                return Err(ChainError::Invalid(format!("no contract at the configured factory {factory}")));
            }
            return Ok(factory);
        }
        let admin = self.inner.roles.admin;
        let recorded = match self.record_path() {
            Some(path) => match std::fs::read(&path) {
                Ok(bytes) => Some(
                    serde_json::from_slice::<FactoryRecord>(&bytes)
                        .map_err(|e| ChainError::State(format!("{}: {e}", path.display())))?,
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(ChainError::State(format!("{}: {e}", path.display()))),
            },
            None => None,
        };
        let factory = match recorded {
            Some(r) if r.chain_id != self.inner.config.chain_id || r.deployer != admin => {
                return Err(ChainError::State(format!(
                    "the recorded factory belongs to chain {} and deployer {}, not this chain and admin",
                    r.chain_id, r.deployer
                )));
            }
            Some(r) if self.has_code(r.factory).await? => r.factory,
            Some(r) => {
                let used = self.rpc(self.inner.provider.get_transaction_count(admin).latest()).await?;
                if used > r.deploy_nonce {
                    return Err(ChainError::State(format!(
                        "the recorded factory {} has no code on this chain although its deployment nonce is \
                         spent: another node or a reset chain; remove the record to deploy a new factory",
                        r.factory
                    )));
                }
                // The recorded deployment never landed: finish it with the same nonce.
                self.deploy_factory(r.deploy_nonce).await?
            }
            None => {
                let nonce = self.rpc(self.inner.provider.get_transaction_count(admin).pending()).await?;
                self.deploy_factory(nonce).await?
            }
        };
        *slot = Some(factory);
        Ok(factory)
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        self.rpc(self.inner.provider.get_block_number()).await
    }

    async fn predict_collection(&self, event_key: B256) -> Result<Address, ChainError> {
        let factory = self.factory().await?;
        self.view(factory, TicketFactory::predictCollectionCall { eventKey: event_key }).await
    }

    async fn collection_of(&self, event_key: B256) -> Result<Option<Address>, ChainError> {
        let factory = self.factory().await?;
        let a = self.view(factory, TicketFactory::collectionOfCall(event_key)).await?;
        Ok((a != Address::ZERO).then_some(a))
    }

    async fn create_collection(
        &self,
        event_key: B256,
        params: &CollectionParams,
    ) -> Result<(Address, Receipt), ChainError> {
        if params.royalty_bps > 10_000 {
            return Err(ChainError::Invalid("royalty above 10,000 basis points".into()));
        }
        let factory = self.factory().await?;
        let roles = self.inner.roles;
        let call = TicketFactory::createCollectionCall {
            eventKey: event_key,
            params: crate::embedded::init_params(params, roles),
        };
        let receipt = self.transact(roles.admin, Some(factory), call.abi_encode().into()).await?;
        let collection = decode::<TicketFactory::createCollectionCall>(&receipt.output)?;
        Ok((collection, receipt))
    }

    async fn mint_batch(&self, collection: Address, mints: &[Mint]) -> Result<Receipt, ChainError> {
        if mints.is_empty() {
            return Err(ChainError::Invalid("empty mint batch".into()));
        }
        let call = EventTickets::mintBatchCall {
            to: mints.iter().map(|m| m.to).collect(),
            tokenIds: mints.iter().map(|m| m.token_id).collect(),
        };
        self.transact(self.inner.roles.minter, Some(collection), call.abi_encode().into()).await
    }

    async fn transfer(
        &self,
        collection: Address,
        from: Address,
        to: Address,
        token_id: U256,
    ) -> Result<Receipt, ChainError> {
        let call = EventTickets::transferFromCall { from, to, tokenId: token_id };
        self.transact(self.inner.roles.custodian, Some(collection), call.abi_encode().into()).await
    }

    async fn burn(&self, collection: Address, token_id: U256) -> Result<Receipt, ChainError> {
        let call = EventTickets::burnCall { tokenId: token_id };
        self.transact(self.inner.roles.minter, Some(collection), call.abi_encode().into()).await
    }

    async fn mark_attended(&self, collection: Address, token_ids: &[U256]) -> Result<Receipt, ChainError> {
        let call = EventTickets::markAttendedCall { tokenIds: token_ids.to_vec() };
        self.transact(self.inner.roles.minter, Some(collection), call.abi_encode().into()).await
    }

    async fn set_transfer_policy(
        &self,
        collection: Address,
        locked: bool,
        event_end: u64,
    ) -> Result<Receipt, ChainError> {
        let call = EventTickets::setTransferPolicyCall { locked, end: event_end };
        self.transact(self.inner.roles.organizer, Some(collection), call.abi_encode().into()).await
    }

    async fn set_default_royalty(
        &self,
        collection: Address,
        receiver: Address,
        bps: u16,
    ) -> Result<Receipt, ChainError> {
        let call = EventTickets::setDefaultRoyaltyCall { receiver, bps: alloy::primitives::Uint::from(bps) };
        self.transact(self.inner.roles.organizer, Some(collection), call.abi_encode().into()).await
    }

    async fn owner_of(&self, collection: Address, token_id: U256) -> Result<Option<Address>, ChainError> {
        match self.view(collection, EventTickets::ownerOfCall { tokenId: token_id }).await {
            Ok(owner) => Ok(Some(owner)),
            Err(ChainError::CallReverted { reason, .. }) if reason == "ERC721NonexistentToken" => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn owners_of(&self, collection: Address, token_ids: &[U256]) -> Result<Vec<Option<Address>>, ChainError> {
        let mut owners = Vec::with_capacity(token_ids.len());
        for chunk in token_ids.chunks(crate::client::OWNERS_PER_CALL) {
            owners.extend(crate::client::owners_from(
                self.view(collection, EventTickets::ownersOfCall { tokenIds: chunk.to_vec() }).await?,
            ));
        }
        Ok(owners)
    }

    async fn balance_of(&self, collection: Address, holder: Address) -> Result<u64, ChainError> {
        let n = self.view(collection, EventTickets::balanceOfCall { owner: holder }).await?;
        u64::try_from(n).map_err(|e| ChainError::Decode(e.to_string()))
    }

    async fn total_supply(&self, collection: Address) -> Result<u64, ChainError> {
        let n = self.view(collection, EventTickets::totalSupplyCall {}).await?;
        u64::try_from(n).map_err(|e| ChainError::Decode(e.to_string()))
    }

    async fn token_uri(&self, collection: Address, token_id: U256) -> Result<String, ChainError> {
        self.view(collection, EventTickets::tokenURICall { tokenId: token_id }).await
    }

    async fn transfers_locked(&self, collection: Address) -> Result<bool, ChainError> {
        self.view(collection, EventTickets::transfersLockedCall {}).await
    }

    async fn receipt(&self, tx_hash: B256) -> Result<Option<Receipt>, ChainError> {
        let Some(r) = self.rpc(self.inner.provider.get_transaction_receipt(tx_hash)).await? else {
            return Ok(None);
        };
        let mut receipt = self.convert(&r).await?;
        // The output is not part of a node's receipt: replay the call on the parent block.
        if let Some(tx) = self.rpc(self.inner.provider.get_transaction_by_hash(tx_hash)).await? {
            use alloy::consensus::Transaction as _;
            let parent = BlockId::number(receipt.block_number.saturating_sub(1));
            let to = tx.to();
            let input = tx.input().clone();
            receipt.output = match self.simulate(receipt.from, to, &input, parent).await? {
                Ok(out) | Err(out) => out,
            };
        }
        Ok(Some(receipt))
    }
}
