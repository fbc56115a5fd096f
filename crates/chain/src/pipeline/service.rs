//! The pipeline's steps: create collections, mint due batches, apply transfers, burns and
//! attended marks in order, resolve sends whose outcome is unknown, and reconcile the
//! database against the chain.
//!
//! Every send follows the same discipline: record the transaction (`sending`) and claim its
//! items in one database transaction, commit, call the chain with no database transaction
//! open, then record the outcome. A crash or a lost answer in between leaves a `sending` or
//! `unknown` record, which is resolved by reading the chain (`owner_of`, `token_uri`) before
//! anything is sent again. A second mint of a token id reverts in the contract itself, so
//! even a resend that races a late first send cannot make two tokens.

use alloy::primitives::{Address, B256, U256};
use entrada_primitives::SharedClock;
use entrada_storage::audit::{self, Actor};
use entrada_storage::{Consumer, Db, Run, WriteError};
use serde_json::json;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use super::consumer::TokensConsumer;
use super::domain::{OpKind, PipelineConfig, address_text, backoff_ms, batch_due, collection_params, plan_batches};
use super::store::{self, OpRow, PendingToken};
use crate::client::{ChainClient, ChainError, Mint, Receipt};
use crate::custody::AddressBook;

/// Why a pipeline step stopped. Chain trouble is not an error: it is reported in the
/// [`StepReport`] and retried later.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// What one round of the pipeline did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Collections created, tokens minted or resolved, operations applied or queued.
    pub progress: usize,
    /// Mint transactions sent in this round.
    pub transactions: usize,
    /// The chain could not be reached; the worker backs off.
    pub chain_unavailable: bool,
}

impl StepReport {
    /// Counts what reading the chain resolved; `None` (the chain could not be
    /// read) marks it unavailable. True when the round can go on.
    fn resolved(&mut self, resolved: Option<usize>) -> bool {
        match resolved {
            Some(n) => self.progress += n,
            None => self.chain_unavailable = true,
        }
        resolved.is_some()
    }
}

/// What one reconciliation step found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub checked: usize,
    pub repaired: usize,
    /// The pass reached the last token; the next step starts over.
    pub pass_complete: bool,
    pub chain_unavailable: bool,
}

/// The mint pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    clock: SharedClock,
    chain: Arc<dyn ChainClient>,
    book: Arc<dyn AddressBook>,
    cfg: PipelineConfig,
    /// This process's name on the transactions it sends.
    instance: String,
    /// One round at a time in this process (the background worker and `App::settle` may both
    /// run); a Tokio mutex because a round awaits the chain. Guards the reconciler's cursor.
    round: tokio::sync::Mutex<String>,
    /// When `admissions` was last polled (clock ms): every few seconds is enough for a
    /// collectible's attended mark, and the poll reads every unmarked minted token.
    attended_polled: std::sync::atomic::AtomicI64,
    /// When events' export settings and ends were last compared with their collections.
    policies_polled: std::sync::atomic::AtomicI64,
}

/// Pause between polls of check-in's admissions outside a flush.
const ATTENDED_POLL_MS: i64 = 5_000;
/// Pause between comparisons of events' transfer policies with their collections'.
const POLICY_POLL_MS: i64 = 2_000;

/// One part of a collection's policy, as confirmed on chain.
enum PolicyPart {
    Transfers { locked: bool, end_s: i64 },
    Royalty { bps: i64, receiver: Address },
}

/// A chain failure, sorted by what the pipeline does about it.
enum Outcome {
    /// The chain refused the transaction: read the chain to see why.
    Reverted(String),
    /// The chain could not be reached: back off, resolve by reading later.
    Unavailable(String),
    /// Anything else: the outcome is unknown; resolve by reading later.
    Unknown(String),
}

fn outcome(e: ChainError) -> Outcome {
    match e {
        ChainError::Reverted { reason, .. } => Outcome::Reverted(reason),
        ChainError::Unavailable(m) => Outcome::Unavailable(m),
        other => Outcome::Unknown(other.to_string()),
    }
}

fn u256(token_id: i64) -> U256 {
    U256::from(u64::try_from(token_id).unwrap_or(0))
}

fn parse_address(s: &str) -> Option<Address> {
    Address::from_str(s).ok()
}

impl Pipeline {
    pub fn new(
        db: Db,
        clock: SharedClock,
        chain: Arc<dyn ChainClient>,
        book: Arc<dyn AddressBook>,
        cfg: PipelineConfig,
    ) -> Self {
        let instance = uuid::Uuid::now_v7().to_string();
        Self {
            inner: Arc::new(Inner {
                db,
                clock,
                chain,
                book,
                cfg,
                instance,
                round: tokio::sync::Mutex::new(String::new()),
                attended_polled: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
                policies_polled: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
            }),
        }
    }

    /// The `chain.tokens` consumer to register with the dispatcher.
    pub fn consumer(&self) -> Arc<dyn Consumer> {
        Arc::new(TokensConsumer::new(self.inner.cfg.network.clone(), self.inner.chain.chain_id()))
    }

    pub fn chain(&self) -> &Arc<dyn ChainClient> {
        &self.inner.chain
    }

    /// The address `user`'s tokens go to, from the configured address book.
    pub async fn custodial_address(&self, user: entrada_primitives::ids::UserId) -> Result<Address, String> {
        self.inner.book.custodial_address(user).await
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.inner.cfg
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// One round: resolve open sends, create collections, mint due batches (all pending ones
    /// when `flush`), apply operations, queue attended marks.
    pub async fn run_once(&self, flush: bool) -> Result<StepReport, PipelineError> {
        let _round = self.inner.round.lock().await;
        let mut r = StepReport::default();
        self.recover(&mut r).await?;
        if !r.chain_unavailable {
            self.collections(&mut r).await?;
        }
        if !r.chain_unavailable {
            let now = self.now();
            let last = self.inner.policies_polled.load(std::sync::atomic::Ordering::Relaxed);
            if flush || now.saturating_sub(last) >= POLICY_POLL_MS {
                self.inner.policies_polled.store(now, std::sync::atomic::Ordering::Relaxed);
                self.policies(&mut r).await?;
            }
        }
        if !r.chain_unavailable {
            self.mints(flush, &mut r).await?;
        }
        if !r.chain_unavailable {
            let now = self.now();
            let last = self.inner.attended_polled.load(std::sync::atomic::Ordering::Relaxed);
            if flush || now.saturating_sub(last) >= ATTENDED_POLL_MS {
                self.inner.attended_polled.store(now, std::sync::atomic::Ordering::Relaxed);
                self.attended(&mut r).await?;
            }
            self.ops(&mut r).await?;
        }
        Ok(r)
    }

    // ---- unknown outcomes ----

    async fn recover(&self, r: &mut StepReport) -> Result<(), PipelineError> {
        let now = self.now();
        let open = {
            let mut conn = self.inner.db.read();
            store::open_txs(&mut conn, &self.inner.instance, now, self.inner.cfg.single_process).await?
        };
        for (tx_id, kind, event_id) in open {
            let done = if kind == "mint_batch" {
                self.resolve_mint(tx_id, &event_id, None, None).await?
            } else {
                self.resolve_op(tx_id, false).await?
            };
            match done {
                Some(n) => r.progress += n.max(1),
                None => {
                    r.chain_unavailable = true;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn collection_address(&self, event_id: &str) -> Result<Option<Address>, PipelineError> {
        let row: Option<(Option<String>,)> = sqlx::query("SELECT address FROM chain_collections WHERE event_id = $1")
            .bind(event_id.to_owned())
            .optional(&mut self.inner.db.read())
            .await?;
        Ok(row.and_then(|(a,)| a).and_then(|a| parse_address(&a)))
    }

    /// Settles a mint transaction's tickets by reading the chain: a token that exists is
    /// confirmed, one that does not waits for a new batch. `reverted`: the chain refused the
    /// batch, for this reason, which counts as an attempt for its tickets unless the chain
    /// showed why (some of them were minted already). `None` when the chain could not be read.
    async fn resolve_mint(
        &self,
        tx_id: i64,
        event_id: &str,
        tx_hash: Option<&str>,
        reverted: Option<&str>,
    ) -> Result<Option<usize>, PipelineError> {
        let why = match reverted {
            Some(reason) => format!("mint reverted: {reason}"),
            None => "mint outcome unknown; not on chain".to_owned(),
        };
        let reverted = reverted.is_some();
        let rows = {
            let mut conn = self.inner.db.read();
            store::submitted_of_tx(&mut conn, tx_id).await?
        };
        let mut found = Vec::with_capacity(rows.len());
        if !rows.is_empty() {
            let Some(collection) = self.collection_address(event_id).await? else {
                return Ok(Some(0));
            };
            let ids: Vec<U256> = rows.iter().map(|(_, token_id, _, _)| u256(*token_id)).collect();
            match self.inner.chain.owners_of(collection, &ids).await {
                Ok(owners) => found = owners,
                Err(e) => {
                    tracing::warn!(tx_id, error = %e, "cannot read the chain to resolve a mint");
                    return Ok(None);
                }
            }
        }
        let explained = found.iter().any(Option::is_some);
        let single = rows.len() == 1;
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        let mut confirmed = 0;
        for ((ticket, _, _, attempts), owner) in rows.iter().zip(&found) {
            match owner {
                Some(a) => {
                    store::token_found(&mut tx, ticket, &address_text(*a), tx_hash, now).await?;
                    confirmed += 1;
                }
                None => {
                    let count = reverted && !explained;
                    let failed = count && single && attempts + 1 >= self.inner.cfg.max_attempts;
                    // The chain was just read: a token it lacks after a lost answer can go in
                    // the next batch at once; a refused one waits out its backoff.
                    let at = if count { now + backoff_ms(*attempts) } else { now };
                    store::token_not_found(&mut tx, ticket, count, failed, &why, at, now).await?;
                    store::burn_if_cancelled(&mut tx, ticket, now).await?;
                    if failed {
                        tracing::error!(%ticket, "mint refused repeatedly; parked as failed");
                    }
                }
            }
        }
        store::tx_closed(&mut tx, tx_id, "resolved", None, now).await?;
        audit::record(
            &mut tx,
            now,
            &Actor::System,
            "chain.mint_resolved",
            "chain_transaction",
            &tx_id.to_string(),
            json!({ "found": confirmed, "not_found": rows.len() - confirmed, "reverted": reverted }),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(confirmed))
    }

    // ---- collections ----

    async fn collections(&self, r: &mut StepReport) -> Result<(), PipelineError> {
        let now = self.now();
        let due = {
            let mut conn = self.inner.db.read();
            store::due_collections(&mut conn, now).await?
        };
        if due.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.inner.chain.ensure_factory().await {
            tracing::warn!(error = %e, "ticket factory unavailable");
            r.chain_unavailable = true;
            return Ok(());
        }
        for c in due {
            let Ok(key) = B256::from_str(&c.event_key) else {
                tracing::error!(event = %c.event_id, "malformed event key");
                continue;
            };
            match self.inner.chain.collection_of(key).await {
                Ok(Some(addr)) => {
                    self.collection_created(&c.event_id, addr, None, None).await?;
                    r.progress += 1;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.collection_retry(&c, &e.to_string()).await?;
                    r.chain_unavailable = true;
                    return Ok(());
                }
            }
            let facts = {
                let mut conn = self.inner.db.read();
                store::event_facts(&mut conn, &c.event_id).await?
            };
            let Some(facts) = facts else {
                self.collection_retry(&c, "event not found").await?;
                continue;
            };
            let params =
                collection_params(&c.event_id, &facts, &self.inner.cfg.public_url, self.inner.chain.roles().organizer);
            match self.inner.chain.create_collection(key, &params).await {
                Ok((addr, receipt)) => {
                    let end = i64::try_from(params.event_end).unwrap_or(i64::MAX);
                    let policy = (params.transfers_locked, end, i64::from(params.royalty_bps));
                    self.collection_created(&c.event_id, addr, Some(&receipt), Some(policy)).await?;
                    r.progress += 1;
                }
                Err(e) => match outcome(e) {
                    Outcome::Reverted(reason) if reason == "CollectionExists" => {
                        // An earlier creation landed and its answer was lost.
                        if let Ok(Some(addr)) = self.inner.chain.collection_of(key).await {
                            self.collection_created(&c.event_id, addr, None, None).await?;
                            r.progress += 1;
                        }
                    }
                    Outcome::Unavailable(m) => {
                        self.collection_retry(&c, &m).await?;
                        r.chain_unavailable = true;
                        return Ok(());
                    }
                    Outcome::Reverted(m) | Outcome::Unknown(m) => self.collection_retry(&c, &m).await?,
                },
            }
        }
        Ok(())
    }

    async fn collection_created(
        &self,
        event_id: &str,
        addr: Address,
        receipt: Option<&Receipt>,
        policy: Option<(bool, i64, i64)>,
    ) -> Result<(), PipelineError> {
        let now = self.now();
        let hash = receipt.map(|r| format!("{:#x}", r.tx_hash));
        let block = receipt.map(|r| i64::try_from(r.block_number).unwrap_or(i64::MAX));
        let mut tx = self.inner.db.begin().await?;
        if let Some((locked, end_s, royalty_bps)) = policy {
            store::set_collection_policy(&mut tx, event_id, locked, end_s, now).await?;
            store::set_collection_royalty(&mut tx, event_id, royalty_bps, now).await?;
        }
        if store::confirm_collection(&mut tx, event_id, &address_text(addr), hash.as_deref(), block, now).await? {
            audit::record(
                &mut tx,
                now,
                &Actor::System,
                "chain.collection_created",
                "event",
                event_id,
                json!({ "address": address_text(addr), "tx_hash": hash }),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(event = %event_id, collection = %addr, "event collection on chain");
        Ok(())
    }

    async fn collection_retry(&self, c: &store::CollectionRow, error: &str) -> Result<(), PipelineError> {
        let now = self.now();
        let mut conn = self.inner.db.writer().await?;
        store::collection_retry(&mut conn, &c.event_id, error, now + backoff_ms(c.attempts), now).await?;
        Ok(())
    }

    // ---- operators ----

    /// Mints and operations the chain refused `max_attempts` times, parked for an operator,
    /// most recent first.
    pub async fn failures(&self, limit: i64) -> Result<Vec<store::Failure>, PipelineError> {
        let mut conn = self.inner.db.reader().acquire().await?;
        Ok(store::failures(&mut conn, limit).await?)
    }

    /// Puts a ticket's parked mint and operations back in the queue with fresh attempts, once
    /// an operator has fixed the cause (funded the minter, granted a role); how many. Audited
    /// as the operator's action.
    pub async fn retry_failed(&self, actor: &Actor, ticket_id: &str) -> Result<u64, PipelineError> {
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        let n = store::requeue_failed(&mut tx, ticket_id, now).await?;
        if n > 0 {
            audit::record(&mut tx, now, actor, "chain.retry_requested", "ticket", ticket_id, json!({ "requeued": n }))
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Publishes how many tokens and operations are in each state as gauges
    /// (`entrada_chain_tokens{state}`, `entrada_chain_ops{state}`), so a growing backlog or a
    /// parked failure shows on a dashboard.
    pub async fn report_metrics(&self) -> Result<(), PipelineError> {
        let counts = {
            let mut conn = self.inner.db.reader().acquire().await?;
            store::state_counts(&mut conn).await?
        };
        publish_counts(&counts);
        Ok(())
    }

    // ---- transfer policies ----

    /// Pushes a changed export setting, event end or resale royalty to the collections whose
    /// recorded policy differs: an organizer who allows exports after the collection was
    /// created frees its tokens, one who withdraws it locks them again, a moved event end moves
    /// the contract's, and a new royalty keeps ERC-2981 marketplaces paying what the platform's
    /// market does. Setting a policy twice is harmless, so there is nothing to reconcile.
    async fn policies(&self, r: &mut StepReport) -> Result<(), PipelineError> {
        let now = self.now();
        let due = {
            let mut conn = self.inner.db.read();
            store::policy_drift(&mut conn, now).await?
        };
        for d in due {
            let Some(collection) = parse_address(&d.address) else { continue };
            let chain = &self.inner.chain;
            let mut sent = Ok(());
            if d.transfer_differs {
                let end = u64::try_from(d.end_s.max(0)).unwrap_or(0);
                sent = match chain.set_transfer_policy(collection, d.locked, end).await {
                    Ok(receipt) => {
                        let part = PolicyPart::Transfers { locked: d.locked, end_s: d.end_s };
                        self.policy_set(&d.event_id, &receipt, part).await?;
                        r.progress += 1;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
            }
            if sent.is_ok() && d.royalty_differs {
                let bps = u16::try_from(d.royalty_bps).unwrap_or(0);
                let receiver = chain.roles().organizer;
                sent = match chain.set_default_royalty(collection, receiver, bps).await {
                    Ok(receipt) => {
                        let part = PolicyPart::Royalty { bps: d.royalty_bps, receiver };
                        self.policy_set(&d.event_id, &receipt, part).await?;
                        r.progress += 1;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
            }
            if let Err(e) = sent {
                let unavailable = matches!(e, ChainError::Unavailable(_));
                tracing::warn!(event = %d.event_id, error = %e, "cannot set a collection's policy");
                let now = self.now();
                let mut conn = self.inner.db.writer().await?;
                let at = now + backoff_ms(d.attempts);
                store::collection_retry(&mut conn, &d.event_id, &e.to_string(), at, now).await?;
                if unavailable {
                    r.chain_unavailable = true;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Records a policy change the chain confirmed, with its audit entry (`chain.policy_set`).
    async fn policy_set(&self, event_id: &str, receipt: &Receipt, part: PolicyPart) -> Result<(), PipelineError> {
        let now = self.now();
        let hash = format!("{:#x}", receipt.tx_hash);
        let mut tx = self.inner.db.begin().await?;
        let details = match part {
            PolicyPart::Transfers { locked, end_s } => {
                store::set_collection_policy(&mut tx, event_id, locked, end_s, now).await?;
                json!({ "transfers_locked": locked, "event_end": end_s, "tx_hash": hash })
            }
            PolicyPart::Royalty { bps, receiver } => {
                store::set_collection_royalty(&mut tx, event_id, bps, now).await?;
                json!({ "royalty_bps": bps, "receiver": address_text(receiver), "tx_hash": hash })
            }
        };
        audit::record(&mut tx, now, &Actor::System, "chain.policy_set", "event", event_id, details).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- mints ----

    async fn mints(&self, flush: bool, r: &mut StepReport) -> Result<(), PipelineError> {
        let now = self.now();
        let events = {
            let mut conn = self.inner.db.reader().acquire().await?;
            store::pending_by_event(&mut conn, now).await?
        };
        let cfg = &self.inner.cfg;
        for (event_id, collection, count, oldest) in events {
            let count = usize::try_from(count).unwrap_or(0);
            if !batch_due(count, oldest, now, cfg, flush) {
                continue;
            }
            let Some(collection) = parse_address(&collection) else { continue };
            let time_due = flush || now.saturating_sub(oldest) >= cfg.batch_window_ms;
            let limit = i64::try_from(cfg.batch_size.saturating_mul(10).min(5_000)).unwrap_or(1_000);
            let due = {
                let mut conn = self.inner.db.read();
                store::due_tokens(&mut conn, &event_id, now, limit).await?
            };
            let flagged: Vec<(PendingToken, bool)> = due
                .into_iter()
                .map(|t| {
                    let retried = t.attempts > 0;
                    (t, retried)
                })
                .collect();
            for batch in plan_batches(&flagged, cfg.batch_size) {
                let retried = batch.first().is_some_and(|t| t.attempts > 0);
                if !retried && batch.len() < cfg.batch_size && !time_due {
                    continue;
                }
                if !self.send_mint(&event_id, collection, batch, r).await? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The address a token should go to: the exported address, or the holder's custodial one.
    async fn intended(
        &self,
        holder: Option<&str>,
        external: Option<&str>,
        cache: &mut HashMap<String, Address>,
    ) -> Result<Address, String> {
        if let Some(ext) = external {
            return parse_address(ext).ok_or_else(|| format!("malformed address {ext}"));
        }
        let holder = holder.ok_or("no holder")?;
        if let Some(a) = cache.get(holder) {
            return Ok(*a);
        }
        let user = entrada_primitives::ids::UserId::from_db(holder).map_err(|e| e.to_string())?;
        let a = self.inner.book.custodial_address(user).await?;
        cache.insert(holder.to_owned(), a);
        Ok(a)
    }

    /// Sends one mint transaction. False when the chain is unavailable (stop this round).
    async fn send_mint(
        &self,
        event_id: &str,
        collection: Address,
        batch: Vec<PendingToken>,
        r: &mut StepReport,
    ) -> Result<bool, PipelineError> {
        let mut cache = HashMap::new();
        let mut resolved = Vec::with_capacity(batch.len());
        for t in batch {
            match self.intended(t.holder_id.as_deref(), t.external_address.as_deref(), &mut cache).await {
                Ok(a) => resolved.push((t, a)),
                Err(e) => {
                    tracing::warn!(ticket = %t.ticket_id, error = %e, "no address for a token's holder yet");
                    let now = self.now();
                    let mut conn = self.inner.db.writer().await?;
                    store::token_retry(&mut conn, &t.ticket_id, &e, now + backoff_ms(t.attempts), now).await?;
                }
            }
        }
        if resolved.is_empty() {
            return Ok(true);
        }
        let now = self.now();
        let lease = now + self.inner.cfg.send_lease_ms;
        // The transaction's row and every claim in one script, committed before the send: on
        // SQLite it joins the sale's writes in a grouped commit instead of holding the writer
        // through a transaction of its own.
        let tx_id = store::next_tx_id(&mut self.inner.db.read()).await?;
        let mut script = self.inner.db.script();
        store::push_open_tx(&mut script, tx_id, "mint_batch", event_id, &self.inner.instance, lease, now);
        let claims: Vec<usize> = resolved
            .iter()
            .map(|(t, a)| store::push_claim_token(&mut script, t, tx_id, &address_text(*a), now))
            .collect();
        store::push_close_claims(&mut script, tx_id);
        let changed = match self.inner.db.write(script).await {
            Ok(changed) => changed,
            Err(WriteError::Guard(_)) => {
                tracing::debug!(tx_id, "chain transaction id taken meanwhile; the tokens wait for the next round");
                return Ok(true);
            }
            Err(WriteError::Db(e)) => return Err(e.into()),
        };
        let mints: Vec<Mint> = resolved
            .iter()
            .zip(claims)
            .filter(|(_, at)| changed.get(*at) == Some(&1))
            .map(|((t, a), _)| Mint { to: *a, token_id: u256(t.token_id) })
            .collect();
        if mints.is_empty() {
            return Ok(true);
        }

        r.transactions += 1;
        match self.inner.chain.mint_batch(collection, &mints).await {
            Ok(receipt) => {
                let now = self.now();
                let hash = format!("{:#x}", receipt.tx_hash);
                let block = i64::try_from(receipt.block_number).unwrap_or(i64::MAX);
                let gas = i64::try_from(receipt.gas_used).unwrap_or(i64::MAX);
                // One script with no reads: on SQLite it joins the sale's writes in a
                // commit instead of holding the writer for a transaction of its own.
                let mut script = self.inner.db.script();
                store::push_tx_confirmed(&mut script, tx_id, &hash, block, gas, now);
                let confirmed = store::push_mint_confirmed(&mut script, tx_id, &hash, block, now);
                audit::push(
                    &mut script,
                    now,
                    &Actor::System,
                    "chain.minted",
                    "chain_transaction",
                    &tx_id.to_string(),
                    json!({ "event_id": event_id, "tokens": mints.len(), "tx_hash": hash, "block": block, "gas_used": gas }),
                );
                let changed = self.inner.db.write(script).await.map_err(sqlx::Error::from)?;
                r.progress += changed.get(confirmed).map_or(0, |n| usize::try_from(*n).unwrap_or(0));
                Ok(true)
            }
            Err(e) => match outcome(e) {
                Outcome::Reverted(reason) => {
                    tracing::warn!(tx_id, %reason, "mint batch reverted; reading the chain");
                    self.close_tx(tx_id, "reverted", &reason).await?;
                    Ok(r.resolved(self.resolve_mint(tx_id, event_id, None, Some(&reason)).await?))
                }
                Outcome::Unavailable(m) => {
                    tracing::warn!(tx_id, error = %m, "chain unavailable during a mint; its outcome is unknown");
                    self.close_tx(tx_id, "unknown", &m).await?;
                    r.chain_unavailable = true;
                    Ok(false)
                }
                Outcome::Unknown(m) => {
                    tracing::warn!(tx_id, error = %m, "mint failed; its outcome is unknown");
                    self.close_tx(tx_id, "unknown", &m).await?;
                    Ok(true)
                }
            },
        }
    }

    async fn close_tx(&self, tx_id: i64, state: &str, error: &str) -> Result<(), PipelineError> {
        let now = self.now();
        let mut conn = self.inner.db.writer().await?;
        store::tx_closed(&mut conn, tx_id, state, Some(error), now).await?;
        Ok(())
    }

    // ---- attended marks ----

    /// Queues an attended mark for every minted token whose ticket has been admitted. Polls
    /// check-in's `admissions` table rather than hearing an event, so a scan writes nothing
    /// for the chain.
    async fn attended(&self, r: &mut StepReport) -> Result<(), PipelineError> {
        let rows = {
            // On the pool: under a busy gate this reads hundreds of rows.
            let mut conn = self.inner.db.reader().acquire().await?;
            store::newly_admitted(&mut conn, 500).await?
        };
        if rows.is_empty() {
            return Ok(());
        }
        // Small scripts, each one round trip: scans share the (single, on SQLite) writer and
        // must not queue behind hundreds of these rows at the gates' busiest moment. Ten
        // tickets (twenty statements) a script: a group holding one is still short (fifty
        // made the groups that carried them take up to 9 ms, the half-load scans' tail).
        for chunk in rows.chunks(10) {
            let now = self.now();
            let mut script = self.inner.db.script();
            for (ticket, event) in chunk {
                store::push_attended(&mut script, ticket, event, now);
            }
            self.inner.db.write(script).await.map_err(sqlx::Error::from)?;
        }
        r.progress += rows.len();
        Ok(())
    }

    // ---- operations ----

    async fn ops(&self, r: &mut StepReport) -> Result<(), PipelineError> {
        let now = self.now();
        let due = {
            let mut conn = self.inner.db.read();
            store::due_ops(&mut conn, now, 200).await?
        };
        // `due` holds at most one operation per ticket, so attended marks may leave after the
        // transfers and burns of other tickets, gathered per collection into batches.
        let (attends, others): (Vec<OpRow>, Vec<OpRow>) =
            due.into_iter().partition(|op| OpKind::parse(&op.kind) == Some(OpKind::Attend));
        let mut cache = HashMap::new();
        for op in others {
            if !self.apply_op(&op, &mut cache, r).await? {
                return Ok(());
            }
        }
        let mut by_collection: std::collections::BTreeMap<&str, Vec<&OpRow>> = std::collections::BTreeMap::new();
        for op in &attends {
            by_collection.entry(op.collection.as_str()).or_default().push(op);
        }
        for ops in by_collection.values() {
            for batch in ops.chunks(self.inner.cfg.batch_size.max(1)) {
                if !self.apply_attends(batch, r).await? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Marks a batch of one collection's tokens attended in one transaction. False when the
    /// chain is unavailable.
    async fn apply_attends(&self, batch: &[&OpRow], r: &mut StepReport) -> Result<bool, PipelineError> {
        let Some(first) = batch.first() else { return Ok(true) };
        let Some(collection) = parse_address(&first.collection) else { return Ok(true) };
        let now = self.now();
        let lease = now + self.inner.cfg.send_lease_ms;
        let items = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let mut tx = self.inner.db.begin().await?;
        let kind = OpKind::Attend.as_str();
        let tx_id = store::open_tx(&mut tx, kind, &first.event_id, &self.inner.instance, lease, items, now).await?;
        let ids: Vec<i64> = batch.iter().map(|op| op.id).collect();
        let won = store::claim_ops(&mut tx, &ids, tx_id, now).await?;
        let claimed: Vec<&OpRow> = batch.iter().copied().filter(|op| won.contains(&op.id)).collect();
        if claimed.is_empty() {
            tx.rollback().await?;
            return Ok(true);
        }
        tx.commit().await?;

        let tokens: Vec<U256> = claimed.iter().map(|op| u256(op.token_id)).collect();
        match self.inner.chain.mark_attended(collection, &tokens).await {
            Ok(receipt) => {
                let now = self.now();
                let hash = format!("{:#x}", receipt.tx_hash);
                let block = i64::try_from(receipt.block_number).unwrap_or(i64::MAX);
                let gas = i64::try_from(receipt.gas_used).unwrap_or(i64::MAX);
                // One script, as for mints: at the gates' busiest minutes it must not hold the
                // writer that the scans share.
                let mut script = self.inner.db.script();
                store::push_tx_confirmed(&mut script, tx_id, &hash, block, gas, now);
                store::push_ops_done_by_tx(&mut script, tx_id, &hash, now);
                // One entry per transaction, as for mints; each mark's row carries the hash.
                let tokens: Vec<i64> = claimed.iter().map(|op| op.token_id).collect();
                let details =
                    json!({ "event_id": first.event_id, "token_ids": tokens, "tx_hash": hash, "gas_used": gas });
                let id = tx_id.to_string();
                audit::push(&mut script, now, &Actor::System, "chain.attend", "chain_transaction", &id, details);
                self.inner.db.write(script).await.map_err(sqlx::Error::from)?;
                r.progress += claimed.len();
                Ok(true)
            }
            Err(e) => self.op_send_failed(tx_id, e, r).await,
        }
    }

    /// Applies one operation. False when the chain is unavailable.
    async fn apply_op(
        &self,
        op: &OpRow,
        cache: &mut HashMap<String, Address>,
        r: &mut StepReport,
    ) -> Result<bool, PipelineError> {
        let Some(kind) = OpKind::parse(&op.kind) else { return Ok(true) };
        let Some(collection) = parse_address(&op.collection) else { return Ok(true) };
        let token = u256(op.token_id);
        let mut target = None;
        if kind == OpKind::Transfer {
            let to = match self.intended(op.to_user.as_deref(), op.to_address.as_deref(), cache).await {
                Ok(a) => a,
                Err(e) => {
                    self.op_retry(op, false, &e).await?;
                    return Ok(true);
                }
            };
            let from = op.owner_address.as_deref().and_then(parse_address);
            if from == Some(to) {
                let now = self.now();
                let mut conn = self.inner.db.writer().await?;
                store::op_done(&mut conn, op, Some(&address_text(to)), None, now).await?;
                r.progress += 1;
                return Ok(true);
            }
            target = Some(to);
        }
        let now = self.now();
        let lease = now + self.inner.cfg.send_lease_ms;
        let mut tx = self.inner.db.begin().await?;
        let tx_id = store::open_tx(&mut tx, kind.as_str(), &op.event_id, &self.inner.instance, lease, 1, now).await?;
        if !store::claim_op(&mut tx, op.id, tx_id, now).await? {
            tx.rollback().await?;
            return Ok(true);
        }
        tx.commit().await?;

        let chain = &self.inner.chain;
        let sent = match (kind, target) {
            (OpKind::Transfer, Some(to)) => {
                // The recorded owner, or the chain's word for it when the record has none.
                let from = match op.owner_address.as_deref().and_then(parse_address) {
                    Some(a) => Ok(a),
                    None => chain
                        .owner_of(collection, token)
                        .await
                        .and_then(|o| o.ok_or_else(|| ChainError::Invalid("token not on chain".into()))),
                };
                match from {
                    Ok(from) => chain.transfer(collection, from, to, token).await,
                    Err(e) => Err(e),
                }
            }
            (OpKind::Burn, _) => chain.burn(collection, token).await,
            (OpKind::Attend, _) => chain.mark_attended(collection, &[token]).await,
            (OpKind::Transfer, None) => return Ok(true),
        };
        match sent {
            Ok(receipt) => {
                let now = self.now();
                let hash = format!("{:#x}", receipt.tx_hash);
                let block = i64::try_from(receipt.block_number).unwrap_or(i64::MAX);
                let gas = i64::try_from(receipt.gas_used).unwrap_or(i64::MAX);
                let to = target.map(address_text);
                let mut tx = self.inner.db.begin().await?;
                store::tx_confirmed(&mut tx, tx_id, &hash, block, gas, now).await?;
                store::op_done(&mut tx, op, to.as_deref(), Some(&hash), now).await?;
                audit::record(
                    &mut tx,
                    now,
                    &Actor::System,
                    &format!("chain.{}", kind.as_str()),
                    "ticket",
                    &op.ticket_id,
                    json!({ "tx_hash": hash, "to": to, "token_id": op.token_id }),
                )
                .await?;
                tx.commit().await?;
                r.progress += 1;
                Ok(true)
            }
            Err(e) => self.op_send_failed(tx_id, e, r).await,
        }
    }

    /// An operation transaction (one transfer or burn, or a batch of marks) did not confirm: a
    /// revert is settled by reading the chain at once, an unknown outcome on a later round.
    /// False when the chain is unavailable.
    async fn op_send_failed(&self, tx_id: i64, e: ChainError, r: &mut StepReport) -> Result<bool, PipelineError> {
        match outcome(e) {
            Outcome::Reverted(reason) => {
                tracing::warn!(tx_id, %reason, "token operation reverted; reading the chain");
                self.close_tx(tx_id, "reverted", &reason).await?;
                Ok(r.resolved(self.resolve_op(tx_id, true).await?))
            }
            Outcome::Unavailable(m) => {
                self.close_tx(tx_id, "unknown", &m).await?;
                r.chain_unavailable = true;
                Ok(false)
            }
            Outcome::Unknown(m) => {
                self.close_tx(tx_id, "unknown", &m).await?;
                Ok(true)
            }
        }
    }

    async fn op_retry(&self, op: &OpRow, counted: bool, error: &str) -> Result<(), PipelineError> {
        let now = self.now();
        let failed = counted && op.attempts + 1 >= self.inner.cfg.max_attempts;
        let at = now + backoff_ms(op.attempts);
        let mut conn = self.inner.db.writer().await?;
        store::op_retry(&mut conn, op.id, failed, error, at, now).await?;
        if failed {
            tracing::error!(op = op.id, ticket = %op.ticket_id, kind = %op.kind, "token operation parked as failed");
        }
        Ok(())
    }

    /// Settles an operation whose send failed or whose answer was lost, by reading the chain:
    /// done if the chain shows its effect, queued again otherwise. `None` when the chain could
    /// not be read.
    async fn resolve_op(&self, tx_id: i64, reverted: bool) -> Result<Option<usize>, PipelineError> {
        let ops = {
            let mut conn = self.inner.db.read();
            store::ops_by_tx(&mut conn, tx_id).await?
        };
        if ops.is_empty() {
            self.close_tx(tx_id, "resolved", "nothing in flight").await?;
            return Ok(Some(0));
        }
        // Read the chain for every operation first: nothing is written unless all were read.
        let mut found = Vec::with_capacity(ops.len());
        for op in ops {
            let Some(collection) = parse_address(&op.collection) else { continue };
            match self.op_effect(&op, collection).await? {
                Some((effect, owner, to)) => found.push((op, effect, owner, to)),
                None => return Ok(None),
            }
        }
        let now = self.now();
        let mut effects = 0;
        let mut tx = self.inner.db.begin().await?;
        for (op, effect, owner, to) in &found {
            if *effect {
                store::op_done(&mut tx, op, to.as_deref(), None, now).await?;
                effects += 1;
            } else {
                let failed = (reverted && op.attempts + 1 >= self.inner.cfg.max_attempts)
                    || (owner.is_none() && op.kind != "burn" && reverted);
                let why = if reverted { "reverted" } else { "outcome unknown; not on chain" };
                // The chain was just read: an operation it lacks after a lost answer can go out
                // at once; a refused one waits out its backoff.
                let at = if reverted { now + backoff_ms(op.attempts) } else { now };
                store::op_retry(&mut tx, op.id, failed, why, at, now).await?;
            }
        }
        store::tx_closed(&mut tx, tx_id, "resolved", None, now).await?;
        tx.commit().await?;
        Ok(Some(effects))
    }

    /// Whether the chain shows an operation's effect, the token's owner, and for a transfer
    /// its target. `None` when the chain could not be read.
    #[allow(clippy::type_complexity)]
    async fn op_effect(
        &self,
        op: &OpRow,
        collection: Address,
    ) -> Result<Option<(bool, Option<Address>, Option<String>)>, PipelineError> {
        let token = u256(op.token_id);
        let owner = match self.inner.chain.owner_of(collection, token).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(op = op.id, error = %e, "cannot read the chain to resolve an operation");
                return Ok(None);
            }
        };
        let mut effect = false;
        let mut to = None;
        match OpKind::parse(&op.kind) {
            Some(OpKind::Burn) => effect = owner.is_none(),
            Some(OpKind::Transfer) => {
                let mut cache = HashMap::new();
                if let Ok(target) = self.intended(op.to_user.as_deref(), op.to_address.as_deref(), &mut cache).await {
                    effect = owner == Some(target);
                    to = Some(address_text(target));
                }
                if !effect && let Some(actual) = owner {
                    // Retry from where the token really is.
                    let now = self.now();
                    let mut conn = self.inner.db.writer().await?;
                    store::set_owner_address(&mut conn, &op.ticket_id, &address_text(actual), now).await?;
                }
            }
            Some(OpKind::Attend) => {
                effect = match self.inner.chain.token_uri(collection, token).await {
                    Ok(uri) => uri.ends_with("/attended"),
                    Err(ChainError::Unavailable(_)) => return Ok(None),
                    Err(_) => false,
                };
            }
            None => {}
        }
        Ok(Some((effect, owner, to)))
    }

    // ---- reconciliation ----

    /// Compares one page of minted and burned tokens with the chain and queues repairs: a
    /// token the chain lost is minted again, a custodial token at the wrong address is moved
    /// back by the custodian, a burned token still on chain is burned again. Tokens with work
    /// in flight are skipped this pass.
    pub async fn reconcile_step(&self) -> Result<ReconcileReport, PipelineError> {
        let mut cursor = self.inner.round.lock().await;
        let mut rep = ReconcileReport::default();
        let chain = &self.inner.chain;
        if cursor.is_empty() {
            let cols = {
                let mut conn = self.inner.db.read();
                store::confirmed_collections(&mut conn).await?
            };
            for (event_id, key, _) in cols {
                let Ok(key) = B256::from_str(&key) else { continue };
                match chain.collection_of(key).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let now = self.now();
                        let mut tx = self.inner.db.begin().await?;
                        let n = store::collection_lost(&mut tx, &event_id, now).await?;
                        audit::record(
                            &mut tx,
                            now,
                            &Actor::System,
                            "chain.collection_missing",
                            "event",
                            &event_id,
                            json!({ "tokens_to_mint_again": n }),
                        )
                        .await?;
                        tx.commit().await?;
                        tracing::warn!(event = %event_id, tokens = n, "collection missing on chain; creating it again");
                        rep.repaired += usize::try_from(n).unwrap_or(0).max(1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reconciliation cannot read the chain");
                        rep.chain_unavailable = true;
                        return Ok(rep);
                    }
                }
            }
        }
        let page = {
            let mut conn = self.inner.db.read();
            store::settled_tokens(&mut conn, &cursor, self.inner.cfg.reconcile_page).await?
        };
        let Some(last) = page.last().map(|t| t.ticket_id.clone()) else {
            cursor.clear();
            rep.pass_complete = true;
            return Ok(rep);
        };
        // One read per collection for the whole page.
        let mut ids: HashMap<Address, Vec<U256>> = HashMap::new();
        for t in page.iter().filter(|t| t.open_ops == 0) {
            if let Some(collection) = parse_address(&t.collection) {
                ids.entry(collection).or_default().push(u256(t.token_id));
            }
        }
        let mut owners: HashMap<(Address, U256), Option<Address>> = HashMap::new();
        for (collection, ids) in ids {
            match chain.owners_of(collection, &ids).await {
                Ok(found) => owners.extend(ids.into_iter().map(|id| (collection, id)).zip(found)),
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation cannot read the chain");
                    rep.chain_unavailable = true;
                    return Ok(rep);
                }
            }
        }
        let mut cache = HashMap::new();
        for t in &page {
            if t.open_ops > 0 {
                continue;
            }
            let Some(collection) = parse_address(&t.collection) else { continue };
            let Some(&owner) = owners.get(&(collection, u256(t.token_id))) else { continue };
            rep.checked += 1;
            let now = self.now();
            match (t.state.as_str(), owner) {
                ("confirmed", None) => {
                    let mut tx = self.inner.db.begin().await?;
                    if store::token_missing(&mut tx, &t.ticket_id, now).await? {
                        audit::record(
                            &mut tx,
                            now,
                            &Actor::System,
                            "chain.token_missing",
                            "ticket",
                            &t.ticket_id,
                            json!({ "token_id": t.token_id }),
                        )
                        .await?;
                        rep.repaired += 1;
                    }
                    tx.commit().await?;
                    tracing::warn!(ticket = %t.ticket_id, token = t.token_id, "minted token missing on chain; minting it again");
                }
                ("confirmed", Some(actual)) => {
                    if t.external_address.is_some() {
                        // Exported: once out of custody the chain is the record of who has it.
                        if t.owner_address.as_deref().and_then(parse_address) != Some(actual) {
                            let mut conn = self.inner.db.writer().await?;
                            store::set_owner_address(&mut conn, &t.ticket_id, &address_text(actual), now).await?;
                        }
                        continue;
                    }
                    let expected = match self.intended(t.holder_id.as_deref(), None, &mut cache).await {
                        Ok(a) => a,
                        Err(_) => continue,
                    };
                    if actual != expected {
                        let mut tx = self.inner.db.begin().await?;
                        store::set_owner_address(&mut tx, &t.ticket_id, &address_text(actual), now).await?;
                        let source = format!("reconcile:{}:{now}:{}", t.ticket_id, address_text(actual));
                        store::insert_op(
                            &mut tx,
                            &t.ticket_id,
                            &t.event_id,
                            OpKind::Transfer.as_str(),
                            t.holder_id.as_deref(),
                            None,
                            &source,
                            now,
                        )
                        .await?;
                        audit::record(
                            &mut tx,
                            now,
                            &Actor::System,
                            "chain.owner_mismatch",
                            "ticket",
                            &t.ticket_id,
                            json!({ "on_chain": address_text(actual), "expected": address_text(expected) }),
                        )
                        .await?;
                        tx.commit().await?;
                        tracing::warn!(ticket = %t.ticket_id, "token at the wrong address; moving it back");
                        rep.repaired += 1;
                    }
                }
                ("burned", Some(_)) => {
                    let mut tx = self.inner.db.begin().await?;
                    let source = format!("reconcile-burn:{}:{now}", t.ticket_id);
                    store::insert_op(
                        &mut tx,
                        &t.ticket_id,
                        &t.event_id,
                        OpKind::Burn.as_str(),
                        None,
                        None,
                        &source,
                        now,
                    )
                    .await?;
                    // The burn waits for a confirmed token, as every operation does.
                    sqlx::query("UPDATE chain_tokens SET state = 'confirmed', updated_at = $1 WHERE ticket_id = $2")
                        .bind(now)
                        .bind(t.ticket_id.clone())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    rep.repaired += 1;
                }
                _ => {}
            }
        }
        *cursor = last;
        Ok(rep)
    }

    /// A whole reconciliation pass, page by page.
    pub async fn reconcile(&self) -> Result<ReconcileReport, PipelineError> {
        let mut total = ReconcileReport::default();
        loop {
            let r = self.reconcile_step().await?;
            total.checked += r.checked;
            total.repaired += r.repaired;
            if r.chain_unavailable {
                total.chain_unavailable = true;
                return Ok(total);
            }
            if r.pass_complete {
                total.pass_complete = true;
                return Ok(total);
            }
        }
    }

    /// Counts of tokens per state, for readiness pages and tests.
    pub async fn token_counts(&self) -> Result<HashMap<String, i64>, PipelineError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM chain_tokens GROUP BY state")
            .fetch_all(self.inner.db.reader())
            .await?;
        Ok(rows.into_iter().collect())
    }
}

/// Sets the state gauges from (`tokens` or `ops`, state, count) rows; a state without a row
/// reads zero rather than its last count.
fn publish_counts(counts: &[(String, String, i64)]) {
    let gauge = |table: &str| if table == "tokens" { "entrada_chain_tokens" } else { "entrada_chain_ops" };
    for name in ["entrada_chain_tokens", "entrada_chain_ops"] {
        for state in ["pending", "submitted", "confirmed", "burned", "done", "failed"] {
            let n = counts.iter().find(|(t, s, _)| gauge(t) == name && s == state).map_or(0, |c| c.2);
            metrics::gauge!(name, "state" => state).set(n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::publish_counts;

    #[test]
    fn state_counts_become_gauges_and_missing_states_read_zero() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rows = |r: &[(&str, &str, i64)]| -> Vec<(String, String, i64)> {
            r.iter().map(|(t, s, n)| ((*t).to_owned(), (*s).to_owned(), *n)).collect()
        };
        metrics::with_local_recorder(&recorder, || {
            publish_counts(&rows(&[("tokens", "confirmed", 40), ("tokens", "failed", 2), ("ops", "done", 7)]));
        });
        let text = handle.render();
        assert!(text.contains("entrada_chain_tokens{state=\"confirmed\"} 40"), "{text}");
        assert!(text.contains("entrada_chain_tokens{state=\"failed\"} 2"), "{text}");
        assert!(text.contains("entrada_chain_ops{state=\"done\"} 7"), "{text}");
        assert!(text.contains("entrada_chain_ops{state=\"failed\"} 0"), "{text}");
        // The failures were requeued: the gauge falls back to zero.
        metrics::with_local_recorder(&recorder, || publish_counts(&rows(&[("tokens", "confirmed", 42)])));
        assert!(handle.render().contains("entrada_chain_tokens{state=\"failed\"} 0"));
    }
}
