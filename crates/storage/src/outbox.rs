//! The transactional outbox and its in-process dispatcher.
//!
//! `append` writes the event and one queue row per subscriber inside the
//! producer's transaction, so an event exists if and only if its change
//! committed. The dispatcher claims due queue rows per consumer, hands each to
//! the consumer inside a transaction that also deletes the row: a consumer's
//! database effects happen exactly once, its outside effects (mail) at least
//! once. A failing event is retried with backoff and never blocks the ones
//! behind it.
//!
//! Per-consumer queue rows, not a per-consumer cursor over `outbox.id`: on
//! PostgreSQL ids are allocated before commit, so a cursor can pass an id
//! whose transaction commits later and lose that event.
//!
//! A NATS JetStream transport slots in behind the same `append`: a relay
//! publishes outbox rows with the row id as `Nats-Msg-Id` and durable
//! consumers replace the queue table; producers and consumers do not change.

use crate::db::{Backend, Db, Params, Tx};
use crate::events::DomainEvent;
use crate::read::Run;
use crate::script::Script;
use entrada_primitives::SharedClock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A stored event as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: i64,
    pub occurred_at_ms: i64,
    pub event: DomainEvent,
}

#[async_trait::async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// The consumer's name, as listed in `DomainEvent::subscribers`.
    fn name(&self) -> &'static str;

    /// Handles one event inside `tx`. Must be idempotent: the same event can
    /// arrive again after a crash between an outside effect and the commit.
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> Result<(), anyhow_lite::Error>;

    /// Handles a claimed batch inside `tx`, in queue order. The default
    /// hands each event to [`Consumer::handle`]; a consumer on the sale's
    /// hot path does a whole batch in a few round trips instead of a few per
    /// event. An error rolls the batch back, and the dispatcher replays it
    /// one event per transaction through `handle`.
    async fn handle_batch(&self, tx: &mut Tx, events: &[Envelope]) -> Result<(), anyhow_lite::Error> {
        for env in events {
            self.handle(tx, env).await?;
        }
        Ok(())
    }

    /// True for a consumer that can plan batches ([`Consumer::plan_batch`]).
    fn plans(&self) -> bool {
        false
    }

    /// Plans a claimed batch as one script, from reads made outside any
    /// transaction, its changes guarded by what was read (a status that
    /// must still hold, a row that must still be there). The dispatcher
    /// adds the deletion of the batch's queue rows, also guarded, and
    /// writes it with [`Db::write`]: the writer is never held while the
    /// consumer reads, and on SQLite the script joins other writers'
    /// scripts in one commit. A guard that fails means something moved
    /// since the reads: nothing is written and the batch goes through
    /// [`Consumer::handle_batch`] instead, as it does when this returns
    /// `None`. Used on SQLite, where this process alone works the queue;
    /// on PostgreSQL, nodes share it and claim rows under row locks. For a
    /// consumer that [delivers](Consumer::delivers), the plan is the record
    /// of a batch already delivered, written in place of `handle_batch`.
    async fn plan_batch(&self, _db: &Db, _events: &[Envelope]) -> Result<Option<Script>, anyhow_lite::Error> {
        Ok(None)
    }

    /// True for a consumer whose effect leaves the process (a mail): the
    /// dispatcher then calls [`Consumer::deliver`] outside any transaction,
    /// under a lease on the queue row, and `handle` afterwards records the
    /// delivery. No outside call ever holds the writer.
    fn delivers(&self) -> bool {
        false
    }

    /// The outside effect of one event, made with no transaction open; `db`
    /// is for reads (a delivery log that says it was made already). At least
    /// once: a crash after it and before `handle`'s commit repeats it once
    /// the lease runs out.
    async fn deliver(&self, _db: &Db, _event: &Envelope) -> Result<(), anyhow_lite::Error> {
        Ok(())
    }

    /// The outside effects of a claimed batch, one result per event in
    /// order; by default [`Consumer::deliver`] for each. A consumer whose
    /// effects are cheaper together (one read of its delivery log, one
    /// write to a mailbox file) makes them together.
    async fn deliver_batch(&self, db: &Db, events: &[Envelope]) -> Vec<Result<(), anyhow_lite::Error>> {
        let mut out = Vec::with_capacity(events.len());
        for env in events {
            out.push(self.deliver(db, env).await);
        }
        out
    }
}

/// How long a claimed delivery is withheld from other dispatchers: longer
/// than any outside call is allowed to take.
const LEASE_MS: i64 = 120_000;

/// A boxed error for consumers; they fail for many reasons and the
/// dispatcher only logs and retries.
pub mod anyhow_lite {
    pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
}

/// Writes `event` in the caller's transaction.
pub async fn append(tx: &mut Tx, now_ms: i64, event: &DomainEvent) -> Result<i64, sqlx::Error> {
    let payload = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO outbox (event_type, payload, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(event.name())
            .bind(payload)
            .bind(now_ms)
            .fetch_one(&mut **tx)
            .await?;
    for consumer in event.subscribers() {
        sqlx::query("INSERT INTO outbox_queue (consumer, event_id, available_at, attempts) VALUES ($1, $2, $3, 0)")
            .bind(*consumer)
            .bind(id)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
    }
    Ok(id)
}

/// Adds `event` to `script`, which the caller runs in its transaction: the
/// event row and its subscribers' queue rows, in two statements.
pub fn push(script: &mut Script, now_ms: i64, event: &DomainEvent) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    script.push(
        sqlx::query("INSERT INTO outbox (event_type, payload, created_at) VALUES ($1, $2, $3)")
            .bind(event.name())
            .bind(payload)
            .bind(now_ms),
    );
    let subscribers = event.subscribers();
    if subscribers.is_empty() {
        return Ok(());
    }
    // The row just inserted, on the connection that inserted it: SQLite has
    // one writer, so inside its transaction the newest row is this one;
    // PostgreSQL's `currval` is the id this session's insert drew.
    let id = match script.backend() {
        Backend::Sqlite => "(SELECT MAX(id) FROM outbox)",
        Backend::Postgres => "currval(pg_get_serial_sequence('outbox', 'id'))",
    };
    let rows: Vec<String> = (1..=subscribers.len()).map(|k| format!("(${}, {id}, $1, 0)", k + 1)).collect();
    let sql =
        format!("INSERT INTO outbox_queue (consumer, event_id, available_at, attempts) VALUES {}", rows.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms);
    for consumer in subscribers {
        q = q.bind(*consumer);
    }
    script.push(q);
    Ok(())
}

/// Runs consumers over their queues.
#[derive(Clone)]
pub struct Dispatcher {
    db: Db,
    clock: SharedClock,
    consumers: Arc<[Arc<dyn Consumer>]>,
    wake: Arc<Notify>,
}

const BATCH: i64 = 64;

/// Adds to a planned script the deletion of `consumer`'s queue rows for
/// `rows`, each a guard: a row gone meanwhile (another path handled it)
/// keeps nothing of the script.
fn push_dequeue(script: &mut Script, consumer: &str, rows: &[Envelope]) {
    for env in rows {
        script.push_guard(
            sqlx::query("DELETE FROM outbox_queue WHERE consumer = $1 AND event_id = $2").bind(consumer).bind(env.id),
        );
    }
}

/// A consumer's due events, oldest first: `$1` the consumer, `$2` now, `$3`
/// how many. The unary `+` keeps the planner
/// off the `(consumer, available_at)` index: through it, every due row of a
/// backlog was read, joined and sorted to return the first few; along the
/// primary key `(consumer, event_id)` the scan stops after `$3` due rows.
const CLAIM: &str = "SELECT o.id, o.created_at, o.payload FROM outbox_queue q JOIN outbox o ON o.id = q.event_id \
                     WHERE q.consumer = $1 AND +q.available_at <= $2 ORDER BY q.event_id LIMIT $3";

/// What became of a planning consumer's batch.
enum Planned {
    /// Nothing was due.
    Nothing,
    /// Written, this many events.
    Written(usize),
    /// Not planned or not written: the transaction path handles it.
    InTransaction,
}

impl Dispatcher {
    pub fn new(db: Db, clock: SharedClock, consumers: Vec<Arc<dyn Consumer>>) -> Self {
        Self { db, clock, consumers: consumers.into(), wake: Arc::new(Notify::new()) }
    }

    /// Tells the background loop there is work, after a producer committed.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Handles everything due, for every consumer, until nothing is due.
    /// Consumers take turns one batch at a time, so one whose queue refills
    /// as fast as it drains (payments during a rush) cannot starve the others
    /// (mints, mail).
    /// Tests call this to make delivery deterministic. Returns how many
    /// events were handled.
    pub async fn drain(&self) -> Result<usize, sqlx::Error> {
        let mut total = 0;
        loop {
            let mut round = 0;
            for c in self.consumers.iter() {
                round += self.run_batch(c).await?;
            }
            total += round;
            if round == 0 {
                return Ok(total);
            }
        }
    }

    /// Claims a batch and handles it in one transaction. If any event fails,
    /// the batch is rolled back and replayed one event per transaction so the
    /// failure is isolated and only that event is delayed.
    async fn run_batch(&self, c: &Arc<dyn Consumer>) -> Result<usize, sqlx::Error> {
        let now = self.clock.now_ms();
        if self.db.backend() == Backend::Sqlite && c.plans() && !c.delivers() {
            match self.planned(c, now).await? {
                Planned::Nothing => return Ok(0),
                Planned::Written(n) => return Ok(n),
                Planned::InTransaction => {}
            }
        }
        if self.db.backend() == Backend::Sqlite && c.delivers() {
            return self.deliver_planned(c, now).await;
        }
        self.claim_in_transaction(c, now).await
    }

    /// Claims a batch in a transaction, then handles or delivers it.
    async fn claim_in_transaction(&self, c: &Arc<dyn Consumer>, now: i64) -> Result<usize, sqlx::Error> {
        // Look on a reader first: an idle consumer must not take the
        // (single, on SQLite) writer every tick just to find nothing.
        let due: Option<(i64,)> =
            sqlx::query("SELECT event_id FROM outbox_queue WHERE consumer = $1 AND available_at <= $2 LIMIT 1")
                .bind(c.name())
                .bind(now)
                .optional(&mut self.db.read())
                .await?;
        if due.is_none() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        let rows = self.claim(&mut tx, c.name(), now, BATCH).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        if c.delivers() {
            return self.deliver_batch(c, tx, rows, now).await;
        }
        self.handle_rows(c, tx, &rows, now).await
    }

    /// A planning consumer's batch: read on a reader, planned, and written
    /// with its queue rows' deletion in one guarded script.
    async fn planned(&self, c: &Arc<dyn Consumer>, now: i64) -> Result<Planned, sqlx::Error> {
        let found: Vec<(i64, i64, String)> =
            sqlx::query(CLAIM).bind(c.name()).bind(now).bind(BATCH).all(&mut self.db.read()).await?;
        if found.is_empty() {
            return Ok(Planned::Nothing);
        }
        let mut rows = Vec::with_capacity(found.len());
        for (id, at, payload) in found {
            // An unreadable event is parked by the transaction's claim.
            let Ok(event) = serde_json::from_str(&payload) else { return Ok(Planned::InTransaction) };
            rows.push(Envelope { id, occurred_at_ms: at, event });
        }
        let mut script = match c.plan_batch(&self.db, &rows).await {
            Ok(Some(script)) => script,
            Ok(None) => return Ok(Planned::InTransaction),
            Err(e) => {
                tracing::debug!(consumer = c.name(), error = %e, "planning failed; handling the batch in a transaction");
                return Ok(Planned::InTransaction);
            }
        };
        push_dequeue(&mut script, c.name(), &rows);
        match self.db.write(script).await {
            Ok(_) => Ok(Planned::Written(rows.len())),
            Err(e) => {
                tracing::debug!(consumer = c.name(), error = %e, "planned batch not written; handling it in a transaction");
                Ok(Planned::InTransaction)
            }
        }
    }

    /// A delivering consumer's batch on SQLite, where this process alone
    /// works the queue, without holding the writer for a transaction: the
    /// due rows read on a reader and leased in one script (each lease
    /// guarded by the row being still due), the deliveries made with
    /// nothing held, then their record (the consumer's plan, when it plans)
    /// written with the rows' deletion in one script. What does not go as
    /// planned goes through the transactions of the general path.
    async fn deliver_planned(&self, c: &Arc<dyn Consumer>, now: i64) -> Result<usize, sqlx::Error> {
        let found: Vec<(i64, i64, String)> =
            sqlx::query(CLAIM).bind(c.name()).bind(now).bind(BATCH).all(&mut self.db.read()).await?;
        if found.is_empty() {
            return Ok(0);
        }
        let mut rows = Vec::with_capacity(found.len());
        for (id, at, payload) in found {
            // An unreadable event is parked by the transaction's claim.
            let Ok(event) = serde_json::from_str(&payload) else { return self.claim_in_transaction(c, now).await };
            rows.push(Envelope { id, occurred_at_ms: at, event });
        }
        let mut lease = self.db.script();
        for env in &rows {
            lease.push_guard(
                sqlx::query(
                    "UPDATE outbox_queue SET available_at = $1 WHERE consumer = $2 AND event_id = $3 \
                     AND available_at <= $4",
                )
                .bind(now + LEASE_MS)
                .bind(c.name())
                .bind(env.id)
                .bind(now),
            );
        }
        if let Err(e) = self.db.write(lease).await {
            tracing::debug!(consumer = c.name(), error = %e, "lease not written; claiming in a transaction");
            return self.claim_in_transaction(c, now).await;
        }
        let delivered = self.deliver_each(c, rows, now).await?;
        if delivered.is_empty() {
            return Ok(0);
        }
        if c.plans()
            && let Ok(Some(mut script)) = c.plan_batch(&self.db, &delivered).await
        {
            push_dequeue(&mut script, c.name(), &delivered);
            match self.db.write(script).await {
                Ok(_) => return Ok(delivered.len()),
                Err(e) => {
                    tracing::debug!(consumer = c.name(), error = %e, "delivery record not written; recording in a transaction");
                }
            }
        }
        let tx = self.db.begin().await?;
        self.handle_rows(c, tx, &delivered, now).await
    }

    /// Makes the batch's outside effects, with no transaction open; the
    /// failed ones wait for their backoff. Returns the delivered ones.
    async fn deliver_each(
        &self,
        c: &Arc<dyn Consumer>,
        rows: Vec<Envelope>,
        now: i64,
    ) -> Result<Vec<Envelope>, sqlx::Error> {
        let mut delivered = Vec::with_capacity(rows.len());
        let mut results = c.deliver_batch(&self.db, &rows).await.into_iter();
        for env in rows {
            let result = results.next().unwrap_or_else(|| Err("no delivery result for the event".into()));
            match result {
                Ok(()) => delivered.push(env),
                Err(e) => {
                    tracing::warn!(consumer = c.name(), event_id = env.id, error = %e, "delivery failed; will retry");
                    self.retry_later(c.name(), env.id, now, &e.to_string()).await?;
                }
            }
        }
        Ok(delivered)
    }

    /// Handles `rows` in `tx` and drops their queue rows. If the batch
    /// fails, it is rolled back and replayed one event per transaction, so
    /// the failure is isolated and only that event waits for its backoff.
    /// Returns how many were handled.
    async fn handle_rows(
        &self,
        c: &Arc<dyn Consumer>,
        mut tx: Tx,
        rows: &[Envelope],
        now: i64,
    ) -> Result<usize, sqlx::Error> {
        if c.handle_batch(&mut tx, rows).await.is_ok() {
            self.delete_all(&mut tx, c.name(), rows).await?;
            tx.commit().await?;
            return Ok(rows.len());
        }
        tx.rollback().await?;
        let mut done = 0;
        for env in rows {
            let mut tx = self.db.begin().await?;
            match c.handle(&mut tx, env).await {
                Ok(()) => {
                    self.delete(&mut tx, c.name(), env.id).await?;
                    tx.commit().await?;
                    done += 1;
                }
                Err(e) => {
                    tx.rollback().await?;
                    tracing::warn!(consumer = c.name(), event_id = env.id, error = %e, "consumer failed; will retry");
                    self.retry_later(c.name(), env.id, now, &e.to_string()).await?;
                }
            }
        }
        // Count the retried ones as progress only if something succeeded,
        // so `drain` terminates while a poison event waits for its backoff.
        Ok(done)
    }

    /// For a consumer with outside effects: lease the claimed rows and
    /// commit, deliver with no transaction open, then record the delivered
    /// ones and drop their rows; the failed ones wait for their backoff.
    async fn deliver_batch(
        &self,
        c: &Arc<dyn Consumer>,
        mut tx: Tx,
        rows: Vec<Envelope>,
        now: i64,
    ) -> Result<usize, sqlx::Error> {
        let mut p = Params::new(self.db.backend());
        let sql = format!(
            "UPDATE outbox_queue SET available_at = {} WHERE consumer = {} AND event_id IN ({})",
            p.one(),
            p.one(),
            p.list(rows.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now + LEASE_MS).bind(c.name());
        for env in &rows {
            q = q.bind(env.id);
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;

        let delivered = self.deliver_each(c, rows, now).await?;
        if delivered.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin().await?;
        self.handle_rows(c, tx, &delivered, now).await
    }

    async fn claim(&self, tx: &mut Tx, consumer: &str, now: i64, limit: i64) -> Result<Vec<Envelope>, sqlx::Error> {
        let lock = match self.db.backend() {
            Backend::Postgres => " FOR UPDATE OF q SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!("{CLAIM}{lock}");
        let rows: Vec<(i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(consumer).bind(now).bind(limit).fetch_all(&mut **tx).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, at, payload) in rows {
            match serde_json::from_str(&payload) {
                Ok(event) => out.push(Envelope { id, occurred_at_ms: at, event }),
                Err(e) => {
                    // An event this build cannot read (written by a newer
                    // version): park it far in the future rather than spin.
                    tracing::error!(event_id = id, error = %e, "unreadable outbox event parked");
                    sqlx::query(
                        "UPDATE outbox_queue SET available_at = $1, last_error = $2 WHERE consumer = $3 AND event_id = $4",
                    )
                    .bind(i64::MAX / 2)
                    .bind(e.to_string())
                    .bind(consumer)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        Ok(out)
    }

    /// Deletes a handled batch's queue rows in one statement.
    async fn delete_all(&self, tx: &mut Tx, consumer: &str, rows: &[Envelope]) -> Result<(), sqlx::Error> {
        let mut p = Params::new(self.db.backend());
        let sql =
            format!("DELETE FROM outbox_queue WHERE consumer = {} AND event_id IN ({})", p.one(), p.list(rows.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(consumer);
        for env in rows {
            q = q.bind(env.id);
        }
        q.execute(&mut **tx).await?;
        Ok(())
    }

    async fn delete(&self, tx: &mut Tx, consumer: &str, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM outbox_queue WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn retry_later(&self, consumer: &str, id: i64, now: i64, error: &str) -> Result<(), sqlx::Error> {
        // Exponential backoff from 1 s, capped at 10 minutes.
        sqlx::query(
            "UPDATE outbox_queue SET attempts = attempts + 1, last_error = $1, \
             available_at = $2 + (CASE WHEN attempts >= 10 THEN 600000 ELSE 1000 * (1 << attempts) END) \
             WHERE consumer = $3 AND event_id = $4",
        )
        .bind(error.chars().take(500).collect::<String>())
        .bind(now)
        .bind(consumer)
        .bind(id)
        .execute(&mut *self.db.writer().await?)
        .await?;
        Ok(())
    }

    /// The background loops, one per consumer: each drains its queue when
    /// woken or every `poll`, until `shutdown` resolves. Separate loops, so
    /// that a consumer busy with outside deliveries (mail) does not hold back
    /// the others (tickets during a sale); on SQLite their transactions
    /// still take turns on the writer, whose lock is fair. Errors are logged
    /// and retried on the next tick.
    pub async fn run(self, poll: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut loops = Vec::with_capacity(self.consumers.len());
        for c in self.consumers.iter() {
            let (me, c, mut stopped) = (self.clone(), Arc::clone(c), stopped.clone());
            loops.push(tokio::spawn(async move {
                loop {
                    loop {
                        match me.run_batch(&c).await {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(consumer = c.name(), error = %e, "outbox batch failed");
                                break;
                            }
                        }
                    }
                    tokio::select! {
                        _ = stopped.changed() => return,
                        _ = me.wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
            }));
        }
        shutdown.await;
        let _ = stop.send(true);
        for l in loops {
            let _ = l.await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::events::consumers::{NOTIFY_MAIL, PAYMENTS_REFUNDS};
    use entrada_primitives::ManualClock;
    use entrada_primitives::ids::{PaymentId, UserId};
    use std::sync::Mutex;

    /// Handles refund requests, and asks for another one with each until
    /// `stream` of them were handled: a queue that refills as it drains.
    struct Stream {
        stream: usize,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    #[async_trait::async_trait]
    impl Consumer for Stream {
        fn name(&self) -> &'static str {
            PAYMENTS_REFUNDS
        }
        async fn handle(&self, tx: &mut Tx, _: &Envelope) -> Result<(), anyhow_lite::Error> {
            let handled = {
                let mut log = self.log.lock().unwrap();
                log.push("refund");
                log.iter().filter(|e| **e == "refund").count()
            };
            if handled < self.stream {
                let next = DomainEvent::RefundRequested { payment_id: PaymentId::new(), reason: "again".into() };
                append(tx, 0, &next).await?;
            }
            Ok(())
        }
    }

    struct Mail(Arc<Mutex<Vec<&'static str>>>);

    #[async_trait::async_trait]
    impl Consumer for Mail {
        fn name(&self) -> &'static str {
            NOTIFY_MAIL
        }
        async fn handle(&self, _: &mut Tx, _: &Envelope) -> Result<(), anyhow_lite::Error> {
            self.0.lock().unwrap().push("mail");
            Ok(())
        }
    }

    /// Events added to a script reach exactly their subscribers' queues,
    /// each queue row naming its own event, like `append`.
    #[tokio::test]
    async fn pushed_events_queue_for_their_subscribers() {
        use crate::events::consumers::{MARKET_PAYMENTS, TICKETING_PAYMENTS};
        let t = crate::testing::fresh().await;
        let mut tx = t.db.begin().await.unwrap();
        append(&mut tx, 5, &DomainEvent::RefundRequested { payment_id: PaymentId::new(), reason: "before".into() })
            .await
            .unwrap();
        let mut s = Script::on(&tx);
        let paid = DomainEvent::PaymentSucceeded {
            payment_id: PaymentId::new(),
            reference: "order:x".into(),
            amount_minor: 100,
            currency: "EUR".into(),
        };
        push(&mut s, 7, &paid).unwrap();
        push(&mut s, 8, &DomainEvent::RefundRequested { payment_id: PaymentId::new(), reason: "after".into() })
            .unwrap();
        s.run(&mut tx).await.unwrap();
        tx.commit().await.unwrap();

        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT o.event_type, q.consumer, q.available_at FROM outbox_queue q JOIN outbox o ON o.id = q.event_id \
             ORDER BY o.id, q.consumer",
        )
        .fetch_all(t.db.reader())
        .await
        .unwrap();
        let want = [
            ("payment.refund_requested", PAYMENTS_REFUNDS, 5),
            ("payment.succeeded", MARKET_PAYMENTS, 7),
            ("payment.succeeded", TICKETING_PAYMENTS, 7),
            ("payment.refund_requested", PAYMENTS_REFUNDS, 8),
        ];
        let got: Vec<_> = rows.iter().map(|(e, c, a)| (e.as_str(), c.as_str(), *a)).collect();
        assert_eq!(got, want);
    }

    /// Delivers mail-like events: sees its queue row leased (committed, so
    /// no transaction is open), fails the first delivery of the first event.
    struct Outside {
        log: Arc<Mutex<Vec<String>>>,
        failed_once: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Consumer for Outside {
        fn name(&self) -> &'static str {
            NOTIFY_MAIL
        }
        fn delivers(&self) -> bool {
            true
        }
        async fn deliver(&self, db: &Db, env: &Envelope) -> Result<(), anyhow_lite::Error> {
            let (until,): (i64,) =
                sqlx::query_as("SELECT available_at FROM outbox_queue WHERE consumer = $1 AND event_id = $2")
                    .bind(NOTIFY_MAIL)
                    .bind(env.id)
                    .fetch_one(db.reader())
                    .await?;
            self.log.lock().unwrap().push(format!("deliver {} leased {}", env.id, until >= LEASE_MS));
            if !self.failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err("mail server refused".into());
            }
            Ok(())
        }
        async fn handle(&self, _: &mut Tx, env: &Envelope) -> Result<(), anyhow_lite::Error> {
            self.log.lock().unwrap().push(format!("record {}", env.id));
            Ok(())
        }
    }

    /// A consumer with outside effects delivers with its queue row leased
    /// and no transaction open, records only what was delivered, and
    /// retries a failed delivery after its backoff.
    #[tokio::test]
    async fn outside_effects_are_made_under_a_lease_then_recorded() {
        let t = crate::testing::fresh().await;
        let mail = |token: &str| DomainEvent::EmailVerificationRequested {
            user_id: UserId::new(),
            email: "fan@example.com".into(),
            token: token.into(),
        };
        let mut tx = t.db.begin().await.unwrap();
        let first = append(&mut tx, 0, &mail("a")).await.unwrap();
        let second = append(&mut tx, 0, &mail("b")).await.unwrap();
        tx.commit().await.unwrap();

        let log = Arc::new(Mutex::new(Vec::new()));
        let consumer: Arc<dyn Consumer> =
            Arc::new(Outside { log: log.clone(), failed_once: std::sync::atomic::AtomicBool::new(false) });
        let manual = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
        let clock: SharedClock = manual.clone();
        let dispatcher = Dispatcher::new(t.db.clone(), clock, vec![consumer]);
        assert_eq!(dispatcher.drain().await.unwrap(), 1, "the second mail went out, the first waits");
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                format!("deliver {first} leased true"),
                format!("deliver {second} leased true"),
                format!("record {second}")
            ]
        );
        manual.advance(time::Duration::seconds(1));
        assert_eq!(dispatcher.drain().await.unwrap(), 1, "the first mail after its backoff");
        assert_eq!(log.lock().unwrap()[3..], [format!("deliver {first} leased true"), format!("record {first}")]);
        let (left,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM outbox_queue").fetch_one(t.db.reader()).await.unwrap();
        assert_eq!(left, 0);
    }

    /// A consumer whose queue never empties while events keep coming does
    /// not hold back the others: the mail waiting behind a stream of 1,000
    /// refunds goes out within the first batch of refunds, whichever
    /// consumer is listed first.
    #[tokio::test]
    async fn a_busy_consumer_does_not_starve_the_others() {
        for stream_first in [true, false] {
            let t = crate::testing::fresh().await;
            let log = Arc::new(Mutex::new(Vec::new()));
            let stream: Arc<dyn Consumer> = Arc::new(Stream { stream: 1_000, log: log.clone() });
            let mail: Arc<dyn Consumer> = Arc::new(Mail(log.clone()));
            let consumers = if stream_first { vec![stream, mail] } else { vec![mail, stream] };
            let mut tx = t.db.begin().await.unwrap();
            let first = DomainEvent::RefundRequested { payment_id: PaymentId::new(), reason: "first".into() };
            append(&mut tx, 0, &first).await.unwrap();
            let mail = DomainEvent::EmailVerificationRequested {
                user_id: UserId::new(),
                email: "fan@example.com".into(),
                token: "t".into(),
            };
            append(&mut tx, 0, &mail).await.unwrap();
            tx.commit().await.unwrap();

            let clock: SharedClock = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
            let handled = Dispatcher::new(t.db.clone(), clock, consumers).drain().await.unwrap();

            let log = log.lock().unwrap();
            assert_eq!(handled, 1_001, "every event handled once");
            let mail_at = log.iter().position(|e| *e == "mail").unwrap();
            assert!(mail_at <= 1, "the mail went out at turn {mail_at} of {}, behind the stream", log.len());
        }
    }

    /// Counts refund requests in `plan_probe`. Plans each batch from a read
    /// of the counter, guarded on the value read; when told to, moves the
    /// counter between its read and its write, as another writer would.
    struct Planner {
        log: Arc<Mutex<Vec<&'static str>>>,
        interfere: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Consumer for Planner {
        fn name(&self) -> &'static str {
            PAYMENTS_REFUNDS
        }
        fn plans(&self) -> bool {
            true
        }
        async fn plan_batch(&self, db: &Db, events: &[Envelope]) -> Result<Option<Script>, anyhow_lite::Error> {
            let (n,): (i64,) = sqlx::query_as("SELECT n FROM plan_probe WHERE k = 1").fetch_one(db.reader()).await?;
            self.log.lock().unwrap().push("plan");
            if self.interfere.swap(false, std::sync::atomic::Ordering::Relaxed) {
                let mut other = db.script();
                other.push(sqlx::query("UPDATE plan_probe SET n = n + 100 WHERE k = 1"));
                db.write(other).await?;
            }
            let mut s = db.script();
            s.push_guard(
                sqlx::query("UPDATE plan_probe SET n = $1 WHERE k = 1 AND n = $2")
                    .bind(n + events.len() as i64)
                    .bind(n),
            );
            Ok(Some(s))
        }
        async fn handle(&self, tx: &mut Tx, _: &Envelope) -> Result<(), anyhow_lite::Error> {
            self.log.lock().unwrap().push("handle");
            sqlx::query("UPDATE plan_probe SET n = n + 1 WHERE k = 1").execute(&mut **tx).await?;
            Ok(())
        }
    }

    /// On SQLite a planning consumer's batch is written as its plan, queue
    /// rows included; a plan whose guard finds the data moved since its
    /// reads writes nothing, and the batch is handled in a transaction
    /// instead, each event once. On PostgreSQL batches are always handled
    /// in a transaction.
    #[tokio::test]
    async fn a_stale_plan_writes_nothing_and_its_batch_is_handled_in_a_transaction() {
        let t = crate::testing::fresh().await;
        let mut s = t.db.script();
        s.push(sqlx::query("CREATE TABLE plan_probe (k BIGINT PRIMARY KEY, n BIGINT NOT NULL)"));
        s.push(sqlx::query("INSERT INTO plan_probe (k, n) VALUES (1, 0)"));
        t.db.write(s).await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let planner = Arc::new(Planner { log: log.clone(), interfere: false.into() });
        let consumer: Arc<dyn Consumer> = planner.clone();
        let clock: SharedClock = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
        let dispatcher = Dispatcher::new(t.db.clone(), clock, vec![consumer]);
        let refund = || DomainEvent::RefundRequested { payment_id: PaymentId::new(), reason: "r".into() };
        let counter = || async {
            let (n,): (i64,) =
                sqlx::query_as("SELECT n FROM plan_probe WHERE k = 1").fetch_one(t.db.reader()).await.unwrap();
            n
        };
        let sqlite = t.db.backend() == Backend::Sqlite;

        let mut tx = t.db.begin().await.unwrap();
        for _ in 0..2 {
            append(&mut tx, 0, &refund()).await.unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(dispatcher.drain().await.unwrap(), 2);
        assert_eq!(counter().await, 2);
        let expected: &[&str] = if sqlite { &["plan"] } else { &["handle", "handle"] };
        assert_eq!(log.lock().unwrap().as_slice(), expected);

        log.lock().unwrap().clear();
        planner.interfere.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut tx = t.db.begin().await.unwrap();
        for _ in 0..3 {
            append(&mut tx, 0, &refund()).await.unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(dispatcher.drain().await.unwrap(), 3, "each event handled once");
        if sqlite {
            assert_eq!(counter().await, 2 + 100 + 3, "the stale plan wrote nothing");
            assert_eq!(log.lock().unwrap().as_slice(), ["plan", "handle", "handle", "handle"]);
        } else {
            assert_eq!(counter().await, 5);
            assert_eq!(log.lock().unwrap().as_slice(), ["handle", "handle", "handle"]);
        }
        let (left,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM outbox_queue").fetch_one(t.db.reader()).await.unwrap();
        assert_eq!(left, 0);
    }
}
