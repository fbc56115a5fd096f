//! An in-process EVM chain on revm: the real contract bytecode, one block per transaction,
//! receipts with logs, and state kept in the data directory so tokens survive a restart.
//!
//! Persistence is a write-ahead journal over a snapshot. Every block appends its one
//! transaction (sender, target, calldata, timestamp) to `chain-journal.jsonl` and syncs it
//! before the receipt is returned; execution is deterministic, so reopening loads the snapshot
//! of revm's `CacheDB` (accounts, code, storage), the chain head and the receipts from
//! `chain-state.json` and re-executes the journal on top of it. The snapshot is rewritten
//! atomically (temporary file, fsync, rename) and the journal emptied once the journal holds
//! [`COMPACT_AFTER_BLOCKS`] blocks and a quarter of the snapshot's bytes, so a block costs one
//! small append instead of a rewrite of the whole state, a large state is not rewritten every
//! few seconds, and reopening re-executes a journal bounded by the snapshot's size. A torn last
//! line (a crash during the append, before the block was acknowledged) is dropped at open; any other
//! damage is an error. For millions of tokens, a `DatabaseRef` over SQL tables written in the
//! same transaction as the business rows is the shape to grow into.
//!
//! There are no signatures: a transaction's sender is simply the account we execute it as.
//! The platform accounts are fixed, well-known addresses, so a fresh chain always puts the
//! factory at the same address.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::sol_types::{SolCall, SolConstructor, SolValue};
use async_trait::async_trait;
use entrada_primitives::SharedClock;
use revm::context::TxEnv;
use revm::context::result::ExecutionResult;
use revm::database::{Cache, CacheDB, EmptyDB};
use revm::primitives::hardfork::SpecId;
use revm::{Context, Database, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};
use serde::{Deserialize, Serialize};

use crate::client::{ChainClient, ChainError, CollectionParams, Mint, PlatformRoles, Receipt};
use crate::contracts::{EventTickets, TicketFactory, revert_reason};

/// Conventional chain id of local development chains.
pub const EMBEDDED_CHAIN_ID: u64 = 1337;
/// Per-transaction gas limit; a 500-ticket batch needs about 24 M.
const TX_GAS_LIMIT: u64 = 30_000_000;
const BLOCK_GAS_LIMIT: u64 = 60_000_000;
/// Prague: what the public chains run, and before Osaka's 16.7 M per-transaction gas cap.
const SPEC: SpecId = SpecId::PRAGUE;
const STATE_FILE: &str = "chain-state.json";
const JOURNAL_FILE: &str = "chain-journal.jsonl";
/// Blocks journaled before the snapshot may be rewritten and the journal emptied: bounds both
/// the snapshot's cost per block and the blocks re-executed at open.
pub const COMPACT_AFTER_BLOCKS: u64 = 1_000;
/// A large state is rewritten only once the journal holds a quarter of the snapshot's bytes:
/// a snapshot of tens of thousands of tokens is tens of megabytes, and writing it every 1,000
/// blocks stalled everything else on the machine (check-in's tail latency) while the journal
/// stayed small. Each journal byte is then paid for by at most four snapshot bytes.
const JOURNAL_SHARE_OF_SNAPSHOT: u64 = 4;
/// Bumped when the snapshot's shape changes incompatibly.
const STATE_FORMAT: u32 = 1;

/// A local EVM chain that runs in this process. Cheap to clone; clones share the chain.
#[derive(Clone)]
pub struct EmbeddedChain {
    state: Arc<Mutex<State>>,
    clock: SharedClock,
    roles: PlatformRoles,
    factory: Address,
}

/// Everything that makes up the chain. A std mutex, not a Tokio one: execution is CPU work
/// that never awaits, and it always runs on a blocking thread (see [`EmbeddedChain::run`]).
struct State {
    db: CacheDB<EmptyDB>,
    block_number: u64,
    block_timestamp: u64,
    receipts: HashMap<B256, Receipt>,
    /// `None` for a chain that lives in memory only.
    file: Option<PathBuf>,
    /// The open journal, how many blocks and bytes it holds (file-backed chains only), and
    /// whether the next block must rewrite the snapshot (an append failed).
    journal: Option<fs::File>,
    journaled: u64,
    journal_bytes: u64,
    must_compact: bool,
    /// The size of the snapshot last written or read.
    snapshot_bytes: u64,
    factory: Address,
}

/// One block of the journal: enough to re-execute it, and its hash to check the replay.
#[derive(Serialize, Deserialize)]
struct JournalEntry {
    block: u64,
    time: u64,
    from: Address,
    to: Option<Address>,
    data: Bytes,
    tx: B256,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    format: u32,
    chain_id: u64,
    block_number: u64,
    block_timestamp: u64,
    factory: Address,
    cache: &'a Cache,
    receipts: Vec<&'a Receipt>,
}

#[derive(Deserialize)]
struct Snapshot {
    format: u32,
    chain_id: u64,
    block_number: u64,
    block_timestamp: u64,
    factory: Address,
    cache: Cache,
    receipts: Vec<Receipt>,
}

/// A fixed platform address derived from a label (no key exists for it).
fn well_known(label: &str) -> Address {
    Address::from_word(keccak256(label.as_bytes()))
}

impl EmbeddedChain {
    /// The platform accounts of every embedded chain.
    pub fn platform_roles() -> PlatformRoles {
        PlatformRoles {
            admin: well_known("entrada.embedded.admin"),
            minter: well_known("entrada.embedded.minter"),
            custodian: well_known("entrada.embedded.custodian"),
            organizer: well_known("entrada.embedded.organizer"),
        }
    }

    /// Opens the chain kept in `data_dir` (created if missing), or starts a new one there with
    /// the ticket factory deployed.
    pub fn open(data_dir: &Path, clock: SharedClock) -> Result<Self, ChainError> {
        fs::create_dir_all(data_dir).map_err(|e| ChainError::State(format!("{}: {e}", data_dir.display())))?;
        let file = data_dir.join(STATE_FILE);
        match fs::read(&file) {
            Ok(bytes) => Self::restore(&file, &bytes, clock),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::genesis(Some(file), clock),
            Err(e) => Err(ChainError::State(format!("{}: {e}", file.display()))),
        }
    }

    /// A chain that lives in memory only, with the factory deployed.
    pub fn in_memory(clock: SharedClock) -> Result<Self, ChainError> {
        Self::genesis(None, clock)
    }

    fn genesis(file: Option<PathBuf>, clock: SharedClock) -> Result<Self, ChainError> {
        let roles = Self::platform_roles();
        let mut state = State {
            db: CacheDB::new(EmptyDB::default()),
            block_number: 0,
            block_timestamp: unix_secs(&clock),
            receipts: HashMap::new(),
            file,
            journal: None,
            journaled: 0,
            journal_bytes: 0,
            must_compact: false,
            snapshot_bytes: 0,
            factory: Address::ZERO,
        };
        let ctor = TicketFactory::constructorCall { owner_: roles.admin }.abi_encode();
        let mut initcode = TicketFactory::BYTECODE.to_vec();
        initcode.extend_from_slice(&ctor);
        let now = unix_secs(&clock);
        let receipt = state.execute(roles.admin, None, initcode.into(), now)?;
        let factory =
            receipt.contract_address.ok_or_else(|| ChainError::Evm("factory deployment created no contract".into()))?;
        state.factory = factory;
        if let Some(file) = &state.file {
            // A journal without the snapshot it continues cannot be replayed onto a new chain.
            let journal = file.with_file_name(JOURNAL_FILE);
            if fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
                return Err(ChainError::State(format!("{}: a journal without its snapshot", journal.display())));
            }
        }
        state.compact()?;
        tracing::info!(%factory, "embedded chain created with the ticket factory");
        Ok(Self { state: Arc::new(Mutex::new(state)), clock, roles, factory })
    }

    fn restore(file: &Path, bytes: &[u8], clock: SharedClock) -> Result<Self, ChainError> {
        let snap: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| ChainError::State(format!("{}: {e}", file.display())))?;
        if snap.format != STATE_FORMAT || snap.chain_id != EMBEDDED_CHAIN_ID {
            return Err(ChainError::State(format!(
                "{}: format {} chain {} is not format {STATE_FORMAT} chain {EMBEDDED_CHAIN_ID}",
                file.display(),
                snap.format,
                snap.chain_id
            )));
        }
        let mut db = CacheDB::new(EmptyDB::default());
        db.cache = snap.cache;
        let mut state = State {
            db,
            block_number: snap.block_number,
            block_timestamp: snap.block_timestamp,
            receipts: snap.receipts.into_iter().map(|r| (r.tx_hash, r)).collect(),
            file: Some(file.to_path_buf()),
            journal: None,
            journaled: 0,
            journal_bytes: 0,
            must_compact: false,
            snapshot_bytes: bytes.len() as u64,
            factory: snap.factory,
        };
        state.replay_journal()?;
        Ok(Self { state: Arc::new(Mutex::new(state)), clock, roles: Self::platform_roles(), factory: snap.factory })
    }

    /// The ticket factory's address.
    pub fn factory(&self) -> Address {
        self.factory
    }

    /// Sends a transaction as any account (no signature needed on this chain) and produces a
    /// block for it. For tests, tools and holders' own transfers; the platform's calls go
    /// through [`ChainClient`].
    pub async fn transact_as(&self, from: Address, to: Address, data: Bytes) -> Result<Receipt, ChainError> {
        let now = unix_secs(&self.clock);
        self.run(move |s| s.execute_and_persist(from, Some(to), data, now)).await
    }

    /// Deploys a contract from `initcode` (creation bytecode and encoded constructor args).
    pub async fn deploy_as(&self, from: Address, initcode: Bytes) -> Result<Receipt, ChainError> {
        let now = unix_secs(&self.clock);
        self.run(move |s| s.execute_and_persist(from, None, initcode, now)).await
    }

    /// Runs a read-only call against the latest state at the current time; nothing is kept.
    pub async fn call(&self, to: Address, data: Bytes) -> Result<Bytes, ChainError> {
        let now = unix_secs(&self.clock);
        self.run(move |s| s.call(to, data, now)).await
    }

    /// A typed read-only call.
    pub async fn view<C: SolCall + Send + 'static>(&self, to: Address, call: C) -> Result<C::Return, ChainError> {
        let out = self.call(to, call.abi_encode().into()).await?;
        C::abi_decode_returns(&out).map_err(|e| ChainError::Decode(e.to_string()))
    }

    /// A typed transaction sent as `from`.
    pub async fn send<C: SolCall>(&self, from: Address, to: Address, call: C) -> Result<Receipt, ChainError> {
        self.transact_as(from, to, call.abi_encode().into()).await
    }

    /// Runs `f` on the chain state on a blocking thread: EVM execution and the snapshot write
    /// must not stall the async workers.
    async fn run<T, F>(&self, f: F) -> Result<T, ChainError>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> Result<T, ChainError> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || {
            let mut guard = state
                .lock()
                .map_err(|_| ChainError::State("an earlier execution panicked; reopen the chain".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| ChainError::Evm(format!("execution task failed: {e}")))?
    }
}

/// Whether a journal of `blocks` blocks and `journal_bytes` bytes should be folded into a
/// snapshot of `snapshot_bytes` bytes.
fn compaction_due(blocks: u64, journal_bytes: u64, snapshot_bytes: u64) -> bool {
    blocks >= COMPACT_AFTER_BLOCKS && journal_bytes.saturating_mul(JOURNAL_SHARE_OF_SNAPSHOT) >= snapshot_bytes
}

impl State {
    fn execute_and_persist(
        &mut self,
        from: Address,
        to: Option<Address>,
        data: Bytes,
        now: u64,
    ) -> Result<Receipt, ChainError> {
        let receipt = self.execute(from, to, data.clone(), now)?;
        self.persist(JournalEntry {
            block: receipt.block_number,
            time: receipt.block_timestamp,
            from,
            to,
            data,
            tx: receipt.tx_hash,
        })?;
        if receipt.success {
            Ok(receipt)
        } else {
            Err(ChainError::Reverted { reason: revert_reason(&receipt.output), receipt: Box::new(receipt) })
        }
    }

    /// Executes one transaction in a new block and commits it (a revert still uses gas and the
    /// nonce, as on any chain). Does not persist.
    fn execute(&mut self, from: Address, to: Option<Address>, data: Bytes, now: u64) -> Result<Receipt, ChainError> {
        let nonce = match self.db.basic(from) {
            Ok(info) => info.map_or(0, |i| i.nonce),
            Err(never) => match never {},
        };
        let number = self.block_number + 1;
        let timestamp = self.block_timestamp.max(now);
        let tx_hash = keccak256((U256::from(EMBEDDED_CHAIN_ID), from, U256::from(nonce), data.clone()).abi_encode());
        let tx = TxEnv {
            caller: from,
            gas_limit: TX_GAS_LIMIT,
            gas_price: 0,
            kind: to.map_or(TxKind::Create, TxKind::Call),
            data,
            nonce,
            chain_id: Some(EMBEDDED_CHAIN_ID),
            ..TxEnv::default()
        };
        let mut evm = Context::mainnet()
            .with_db(&mut self.db)
            .modify_cfg_chained(|c| {
                c.chain_id = EMBEDDED_CHAIN_ID;
                c.set_spec_and_mainnet_gas_params(SPEC);
            })
            .modify_block_chained(|b| {
                b.number = U256::from(number);
                b.timestamp = U256::from(timestamp);
                b.gas_limit = BLOCK_GAS_LIMIT;
                b.basefee = 0;
                b.prevrandao = Some(B256::ZERO);
            })
            .build_mainnet();
        let result = evm.transact_commit(tx).map_err(|e| ChainError::Evm(e.to_string()))?;
        let gas_used = result.tx_gas_used();
        let (success, logs, output, contract_address) = match result {
            ExecutionResult::Success { logs, output, .. } => {
                let created = output.address().copied();
                (true, logs, output.into_data(), created)
            }
            ExecutionResult::Revert { logs, output, .. } => (false, logs, output, None),
            ExecutionResult::Halt { reason, logs, .. } => {
                (false, logs, Bytes::from(format!("halted: {reason:?}").into_bytes()), None)
            }
        };
        self.block_number = number;
        self.block_timestamp = timestamp;
        let receipt = Receipt {
            tx_hash,
            block_number: number,
            block_timestamp: timestamp,
            from,
            to,
            success,
            gas_used,
            logs,
            contract_address,
            output,
        };
        self.receipts.insert(tx_hash, receipt.clone());
        Ok(receipt)
    }

    fn call(&mut self, to: Address, data: Bytes, now: u64) -> Result<Bytes, ChainError> {
        let tx = TxEnv {
            caller: Address::ZERO,
            gas_limit: TX_GAS_LIMIT,
            gas_price: 0,
            kind: TxKind::Call(to),
            data,
            chain_id: Some(EMBEDDED_CHAIN_ID),
            ..TxEnv::default()
        };
        let number = self.block_number + 1;
        let timestamp = self.block_timestamp.max(now);
        let mut evm = Context::mainnet()
            .with_db(&mut self.db)
            .modify_cfg_chained(|c| {
                c.chain_id = EMBEDDED_CHAIN_ID;
                c.set_spec_and_mainnet_gas_params(SPEC);
                c.disable_nonce_check = true;
            })
            .modify_block_chained(|b| {
                b.number = U256::from(number);
                b.timestamp = U256::from(timestamp);
                b.gas_limit = BLOCK_GAS_LIMIT;
                b.basefee = 0;
                b.prevrandao = Some(B256::ZERO);
            })
            .build_mainnet();
        // `transact` executes and discards the state changes: a read never alters the chain.
        let out = evm.transact(tx).map_err(|e| ChainError::Evm(e.to_string()))?;
        match out.result {
            ExecutionResult::Success { output, .. } => Ok(output.into_data()),
            ExecutionResult::Revert { output, .. } => {
                Err(ChainError::CallReverted { reason: revert_reason(&output), data: output })
            }
            ExecutionResult::Halt { reason, .. } => Err(ChainError::Evm(format!("call halted: {reason:?}"))),
        }
    }

    /// Makes a new block durable: appends it to the journal and syncs, or rewrites the
    /// snapshot once the journal holds [`COMPACT_AFTER_BLOCKS`] blocks.
    fn persist(&mut self, entry: JournalEntry) -> Result<(), ChainError> {
        let Some(file) = self.file.clone() else { return Ok(()) };
        if self.must_compact || compaction_due(self.journaled + 1, self.journal_bytes, self.snapshot_bytes) {
            return self.compact();
        }
        let path = file.with_file_name(JOURNAL_FILE);
        if self.journal.is_none() {
            let f = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| state_error(&path, &e))?;
            self.journal = Some(f);
        }
        let mut line = serde_json::to_vec(&entry).map_err(|e| state_error(&path, &e))?;
        line.push(b'\n');
        let written = self.journal.as_mut().map(|f| f.write_all(&line).and_then(|()| f.sync_data()));
        if let Some(Err(e)) = written {
            // The block is in memory but not durable: a later append must not follow a
            // partial line, so the next block rewrites the snapshot instead.
            self.journal = None;
            self.must_compact = true;
            return Err(state_error(&path, &e));
        }
        self.journaled += 1;
        self.journal_bytes += line.len() as u64;
        Ok(())
    }

    /// Writes the snapshot atomically (a crash leaves either the old or the new file), then
    /// empties the journal it now contains.
    fn compact(&mut self) -> Result<(), ChainError> {
        let Some(file) = self.file.clone() else { return Ok(()) };
        let mut receipts: Vec<&Receipt> = self.receipts.values().collect();
        receipts.sort_by_key(|r| r.block_number);
        let snap = SnapshotRef {
            format: STATE_FORMAT,
            chain_id: EMBEDDED_CHAIN_ID,
            block_number: self.block_number,
            block_timestamp: self.block_timestamp,
            factory: self.factory,
            cache: &self.db.cache,
            receipts,
        };
        let err = |e: &dyn std::fmt::Display| ChainError::State(format!("{}: {e}", file.display()));
        let bytes = serde_json::to_vec(&snap).map_err(|e| err(&e))?;
        let tmp = file.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp).map_err(|e| err(&e))?;
        f.write_all(&bytes).map_err(|e| err(&e))?;
        f.sync_all().map_err(|e| err(&e))?;
        drop(f);
        fs::rename(&tmp, &file).map_err(|e| err(&e))?;
        // The rename itself is durable only once the directory is synced.
        if let Some(dir) = file.parent()
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        // Entries at or below the snapshot's head are skipped at open, so a crash before the
        // journal is emptied loses nothing.
        let path = file.with_file_name(JOURNAL_FILE);
        let journal = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| state_error(&path, &e))?;
        journal.sync_all().map_err(|e| state_error(&path, &e))?;
        drop(journal);
        self.journal = None;
        self.journaled = 0;
        self.journal_bytes = 0;
        self.must_compact = false;
        self.snapshot_bytes = bytes.len() as u64;
        Ok(())
    }

    /// Re-executes the journal's blocks above the snapshot's head, checking each one's
    /// number and transaction hash. A torn last line is cut off; anything else is an error.
    fn replay_journal(&mut self) -> Result<(), ChainError> {
        let Some(file) = self.file.clone() else { return Ok(()) };
        let path = file.with_file_name(JOURNAL_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(state_error(&path, &e)),
        };
        let mut good = 0;
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|b| *b == b'\n') else { break };
            let line = &rest[..end];
            let entry: JournalEntry = match serde_json::from_slice(line) {
                Ok(e) => e,
                // Only the last line can be torn; it was never acknowledged.
                Err(_) if end + 1 == rest.len() => break,
                Err(e) => return Err(state_error(&path, &e)),
            };
            rest = &rest[end + 1..];
            self.journal_bytes += (bytes.len() - rest.len() - good) as u64;
            good = bytes.len() - rest.len();
            if entry.block <= self.block_number {
                continue;
            }
            let receipt = self.execute(entry.from, entry.to, entry.data, entry.time)?;
            if receipt.block_number != entry.block || receipt.tx_hash != entry.tx {
                return Err(state_error(
                    &path,
                    &format!(
                        "block {} replayed as {} {}, not {}",
                        entry.block, receipt.block_number, receipt.tx_hash, entry.tx
                    ),
                ));
            }
            self.journaled += 1;
        }
        if good < bytes.len() {
            tracing::warn!(journal = %path.display(), dropped = bytes.len() - good, "dropped a torn last journal line");
            let f = fs::OpenOptions::new().write(true).open(&path).map_err(|e| state_error(&path, &e))?;
            f.set_len(good as u64).and_then(|()| f.sync_all()).map_err(|e| state_error(&path, &e))?;
        }
        Ok(())
    }
}

fn state_error(path: &Path, e: &dyn std::fmt::Display) -> ChainError {
    ChainError::State(format!("{}: {e}", path.display()))
}

fn unix_secs(clock: &SharedClock) -> u64 {
    u64::try_from(clock.now().unix_timestamp()).unwrap_or(0)
}

fn decode<C: SolCall>(out: &Bytes) -> Result<C::Return, ChainError> {
    C::abi_decode_returns(out).map_err(|e| ChainError::Decode(e.to_string()))
}

#[async_trait]
impl ChainClient for EmbeddedChain {
    fn chain_id(&self) -> u64 {
        EMBEDDED_CHAIN_ID
    }

    fn roles(&self) -> PlatformRoles {
        self.roles
    }

    async fn ensure_factory(&self) -> Result<Address, ChainError> {
        // Deployed at genesis; a chain without it cannot have been opened.
        Ok(self.factory)
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        self.run(|s| Ok(s.block_number)).await
    }

    async fn predict_collection(&self, event_key: B256) -> Result<Address, ChainError> {
        self.view(self.factory, TicketFactory::predictCollectionCall { eventKey: event_key }).await
    }

    async fn collection_of(&self, event_key: B256) -> Result<Option<Address>, ChainError> {
        let a = self.view(self.factory, TicketFactory::collectionOfCall(event_key)).await?;
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
        let call = TicketFactory::createCollectionCall { eventKey: event_key, params: init_params(params, self.roles) };
        let receipt = self.send(self.roles.admin, self.factory, call).await?;
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
        self.send(self.roles.minter, collection, call).await
    }

    async fn transfer(
        &self,
        collection: Address,
        from: Address,
        to: Address,
        token_id: U256,
    ) -> Result<Receipt, ChainError> {
        let call = EventTickets::transferFromCall { from, to, tokenId: token_id };
        self.send(self.roles.custodian, collection, call).await
    }

    async fn burn(&self, collection: Address, token_id: U256) -> Result<Receipt, ChainError> {
        self.send(self.roles.minter, collection, EventTickets::burnCall { tokenId: token_id }).await
    }

    async fn mark_attended(&self, collection: Address, token_ids: &[U256]) -> Result<Receipt, ChainError> {
        self.send(self.roles.minter, collection, EventTickets::markAttendedCall { tokenIds: token_ids.to_vec() }).await
    }

    async fn set_transfer_policy(
        &self,
        collection: Address,
        locked: bool,
        event_end: u64,
    ) -> Result<Receipt, ChainError> {
        let call = EventTickets::setTransferPolicyCall { locked, end: event_end };
        self.send(self.roles.organizer, collection, call).await
    }

    async fn set_default_royalty(
        &self,
        collection: Address,
        receiver: Address,
        bps: u16,
    ) -> Result<Receipt, ChainError> {
        let call = EventTickets::setDefaultRoyaltyCall { receiver, bps: alloy::primitives::Uint::from(bps) };
        self.send(self.roles.organizer, collection, call).await
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
        self.run(move |s| Ok(s.receipts.get(&tx_hash).cloned())).await
    }
}

/// The contract's initialisation struct for `params`, with the platform's roles.
pub(crate) fn init_params(
    p: &CollectionParams,
    roles: PlatformRoles,
) -> crate::contracts::ticket_factory::EventTickets::InitParams {
    crate::contracts::ticket_factory::EventTickets::InitParams {
        name: p.name.clone(),
        symbol: p.symbol.clone(),
        baseURI: p.base_uri.clone(),
        contractURI: p.contract_uri.clone(),
        admin: roles.admin,
        minter: roles.minter,
        custodian: roles.custodian,
        organizer: roles.organizer,
        royaltyReceiver: p.royalty_receiver,
        royaltyBps: alloy::primitives::Uint::from(p.royalty_bps),
        eventEnd: p.event_end,
        transfersLocked: p.transfers_locked,
    }
}

#[cfg(test)]
mod tests {
    use super::{COMPACT_AFTER_BLOCKS, compaction_due};

    /// A small state is rewritten every 1,000 blocks; a 40 MB one (tens of thousands of tokens)
    /// only once 10 MB of blocks wait in the journal, however many blocks that takes.
    #[test]
    fn a_large_snapshot_waits_for_a_proportionate_journal() {
        let kb = 1_000;
        assert!(!compaction_due(COMPACT_AFTER_BLOCKS - 1, 500 * kb, 50 * kb));
        assert!(compaction_due(COMPACT_AFTER_BLOCKS, 500 * kb, 50 * kb));
        let large = 40_000 * kb;
        assert!(!compaction_due(COMPACT_AFTER_BLOCKS, 3_500 * kb, large));
        assert!(!compaction_due(2_800, 9_999 * kb, large));
        assert!(compaction_due(2_900, 10_000 * kb, large));
    }
}
