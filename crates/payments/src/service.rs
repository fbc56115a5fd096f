//! Payment use cases: open a checkout, apply provider webhooks, refund,
//! report balances, and the background loop that delivers sandbox webhooks
//! and carries out requested refunds.

use crate::domain::{
    Checkout, NewPayment, Outcome, PaymentStatus, PaymentsError, ProviderError, ProviderEvent, capture_postings,
    refund_postings,
};
use crate::provider::{CreateRequest, PaymentProvider, RefundRequest};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::store::{self, PaymentRow};
use crate::stripe::{Stripe, StripeConfig};
use entrada_primitives::ids::PaymentId;
use entrada_primitives::{Currency, Problem, SharedClock};
use entrada_storage::audit::{self, Actor};
use entrada_storage::{Db, DomainEvent, Script, Tx, WriteError, outbox};
use http::HeaderMap;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Which provider this deployment uses. Only its webhook endpoint answers.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Sandbox(SandboxConfig),
    Stripe(StripeConfig),
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct PaymentsConfig {
    pub provider: ProviderConfig,
}

/// The service handle (cheap to clone).
#[derive(Clone)]
pub struct Payments {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) clock: SharedClock,
    pub(crate) provider: Arc<dyn PaymentProvider>,
    /// Set when the sandbox is the provider: its pages and delivery loop.
    pub(crate) sandbox: Option<Arc<Sandbox>>,
}

/// Requested refunds handled per run, at most.
const REFUND_BATCH: i64 = 50;

impl Payments {
    /// Builds the service with the configured provider, chosen once here.
    pub fn new(db: Db, clock: SharedClock, cfg: PaymentsConfig) -> Payments {
        let (provider, sandbox): (Arc<dyn PaymentProvider>, _) = match cfg.provider {
            ProviderConfig::Sandbox(c) => {
                let s = Arc::new(Sandbox::new(db.clone(), clock.clone(), c));
                (s.clone(), Some(s))
            }
            ProviderConfig::Stripe(c) => (Arc::new(Stripe::new(c)), None),
        };
        Payments { inner: Arc::new(Inner { db, clock, provider, sandbox }) }
    }

    /// The configured provider's name (`sandbox` or `stripe`).
    pub fn provider_name(&self) -> &'static str {
        self.inner.provider.name()
    }

    pub(crate) fn sandbox(&self) -> Option<&Arc<Sandbox>> {
        self.inner.sandbox.as_ref()
    }

    /// Creates (or returns the existing) payment for `req.reference`.
    ///
    /// The row is committed before the provider is called and the provider
    /// call is idempotent by payment id, so a crash or a provider outage in
    /// between is repaired by simply asking again.
    pub async fn create_payment(&self, req: NewPayment) -> Result<Checkout, Problem> {
        Ok(self.create(req, |_, _| {}).await?)
    }

    /// [`Payments::create_payment`], with the caller's own record of the
    /// checkout (`record` adds its statements to a script) committed in
    /// the same write as the payment's: the order that asked and the
    /// payment never disagree, and the request makes one write fewer.
    pub async fn create_payment_recorded(
        &self,
        req: NewPayment,
        record: impl FnOnce(&Checkout, &mut Script) + Send,
    ) -> Result<Checkout, Problem> {
        Ok(self.create(req, record).await?)
    }

    async fn create(
        &self,
        req: NewPayment,
        record: impl FnOnce(&Checkout, &mut Script) + Send,
    ) -> Result<Checkout, PaymentsError> {
        req.validate()?;
        let db = &self.inner.db;
        if let Some(p) = store::by_reference(&mut db.read(), &req.reference).await?
            && let Some(url) = p.checkout_url
        {
            return self.recorded(Checkout { payment_id: p.id, checkout_url: url }, record).await;
        }
        let now = self.inner.clock.now_ms();
        let id = PaymentId::new();
        let mut script = db.script();
        let inserted = store::push_insert_payment(&mut script, id, &req, self.provider_name(), now);
        audit::push(
            &mut script,
            now,
            &Actor::System,
            "payment.created",
            "payment",
            &id.to_db(),
            json!({ "reference": req.reference, "amount_minor": req.amount.minor,
                    "currency": req.amount.currency.as_str(), "provider": self.provider_name() }),
        );
        let written = match db.write(script).await {
            Ok(_) => true,
            Err(WriteError::Guard(at)) if at == inserted => false,
            Err(e) => return Err(sqlx::Error::from(e).into()),
        };
        let asked = if written {
            CreateRequest {
                payment_id: id,
                amount: req.amount,
                reference: req.reference.trim().to_owned(),
                description: req.description.trim().to_owned(),
                return_url: req.return_url.clone(),
            }
        } else {
            // Created by an earlier request for the same reference, which
            // committed first: continue with that payment.
            let p = store::by_reference(&mut db.read(), &req.reference).await?.ok_or(PaymentsError::NotFound)?;
            if let Some(url) = p.checkout_url {
                return self.recorded(Checkout { payment_id: p.id, checkout_url: url }, record).await;
            }
            CreateRequest {
                payment_id: p.id,
                amount: p.amount,
                reference: p.reference,
                description: p.description,
                return_url: p.return_url,
            }
        };
        // Outside any transaction: the provider is a network call (or, for
        // the sandbox, its own writes).
        let created = self.inner.provider.create_payment(&asked).await?;
        let now = self.inner.clock.now_ms();
        let mut script = db.script();
        store::push_set_checkout(
            &mut script,
            asked.payment_id,
            &created.provider_ref,
            created.capture_ref.as_deref(),
            &created.checkout_url,
            now,
        );
        audit::push(
            &mut script,
            now,
            &Actor::Provider(self.provider_name()),
            "payment.checkout_opened",
            "payment",
            &asked.payment_id.to_db(),
            json!({ "provider_ref": created.provider_ref }),
        );
        let checkout = Checkout { payment_id: asked.payment_id, checkout_url: created.checkout_url };
        record(&checkout, &mut script);
        db.write(script).await.map_err(sqlx::Error::from)?;
        Ok(checkout)
    }

    /// The caller's record of a checkout that already existed, on its own.
    async fn recorded(
        &self,
        checkout: Checkout,
        record: impl FnOnce(&Checkout, &mut Script),
    ) -> Result<Checkout, PaymentsError> {
        let mut script = self.inner.db.script();
        record(&checkout, &mut script);
        if !script.is_empty() {
            self.inner.db.write(script).await.map_err(sqlx::Error::from)?;
        }
        Ok(checkout)
    }

    /// Refunds a captured payment in full. Idempotent: refunding a refunded
    /// payment succeeds without a second refund.
    pub async fn refund(&self, payment_id: PaymentId, reason: &str) -> Result<(), Problem> {
        Ok(self.refund_inner(payment_id, reason, &Actor::System).await?)
    }

    async fn refund_inner(&self, payment_id: PaymentId, reason: &str, actor: &Actor) -> Result<(), PaymentsError> {
        let db = &self.inner.db;
        let p = store::by_id(&mut db.read(), payment_id, "").await?.ok_or(PaymentsError::NotFound)?;
        match p.status {
            PaymentStatus::Refunded => return Ok(()),
            PaymentStatus::Succeeded => {}
            _ => return Err(PaymentsError::NotRefundable),
        }
        // Captured but the capture object is not known yet (a Stripe event
        // naming the PaymentIntent is still on its way): retryable.
        let capture_ref = p
            .capture_ref
            .clone()
            .ok_or_else(|| ProviderError::Rejected { code: "capture_reference_unknown".into() })?;
        // The provider call first (an outside effect, idempotent by key),
        // then the record; a crash in between repeats the call harmlessly.
        let refund_ref = self
            .inner
            .provider
            .refund(&RefundRequest { capture_ref, amount: p.amount, idempotency_key: format!("refund:{}", p.id) })
            .await?;
        let now = self.inner.clock.now_ms();
        let mut tx = db.begin().await?;
        let p = store::by_id(&mut *tx, payment_id, db.for_update()).await?.ok_or(PaymentsError::NotFound)?;
        let outcome = Outcome::Refunded { refund_ref: Some(refund_ref) };
        let mut script = Script::on(&tx);
        let moved = self.push_outcome(&mut script, &p, &outcome, None, actor, now)?;
        audit::push(
            &mut script,
            now,
            actor,
            "payment.refund_issued",
            "payment",
            &payment_id.to_db(),
            json!({ "reason": reason }),
        );
        let changed = script.run(&mut tx).await?;
        if moved.is_some_and(|at| changed[at] != 1) {
            tx.rollback().await?;
            return Err(PaymentsError::Corrupt(format!("payment {payment_id} moved while locked")));
        }
        store::clear_refund_request(&mut tx, payment_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds one outcome's effects on payment `p` (read in the caller's
    /// transaction, locked on PostgreSQL) to `script`: the status change,
    /// the ledger postings, the domain event and the audit record, so they
    /// commit together or not at all. Returns the index of the status
    /// change, or `None` when the outcome changes nothing.
    fn push_outcome(
        &self,
        script: &mut Script,
        p: &PaymentRow,
        outcome: &Outcome,
        capture_ref: Option<&str>,
        actor: &Actor,
        now: i64,
    ) -> Result<Option<usize>, PaymentsError> {
        let Some(next) = p.status.apply(outcome) else {
            // The move below records the capture object itself; without one it needs a statement of its own.
            if let Some(c) = capture_ref {
                store::push_capture_ref(script, p.id, c);
            }
            tracing::debug!(payment = %p.id, from = p.status.as_str(), outcome = outcome.name(), "outcome changes nothing");
            return Ok(None);
        };
        let (failure, refund_ref) = match outcome {
            Outcome::Failed { reason } => (Some(reason.as_str()), None),
            Outcome::Refunded { refund_ref } => (None, refund_ref.as_deref()),
            _ => (None, None),
        };
        let moved = store::push_transition(script, p.id, p.status, next, failure, capture_ref, refund_ref, now);
        let provider = p.provider.as_str();
        let event = match next {
            PaymentStatus::Succeeded => {
                let postings = capture_postings(provider, p.organization_id, p.amount)
                    .map_err(|e| PaymentsError::Corrupt(e.to_string()))?;
                store::push_ledger(script, "capture", p.id, &postings, now);
                Some(DomainEvent::PaymentSucceeded {
                    payment_id: p.id,
                    reference: p.reference.clone(),
                    amount_minor: p.amount.minor,
                    currency: p.amount.currency.as_str().to_owned(),
                })
            }
            PaymentStatus::Refunded => {
                let postings = refund_postings(provider, p.organization_id, p.amount)
                    .map_err(|e| PaymentsError::Corrupt(e.to_string()))?;
                store::push_ledger(script, "refund", p.id, &postings, now);
                Some(DomainEvent::PaymentRefunded {
                    payment_id: p.id,
                    reference: p.reference.clone(),
                    amount_minor: p.amount.minor,
                    currency: p.amount.currency.as_str().to_owned(),
                })
            }
            PaymentStatus::Failed => Some(DomainEvent::PaymentFailed {
                payment_id: p.id,
                reference: p.reference.clone(),
                reason: failure.unwrap_or("payment_failed").to_owned(),
            }),
            PaymentStatus::Pending | PaymentStatus::Created => None,
        };
        if let Some(ev) = &event {
            outbox::push(script, now, ev)?;
        }
        audit::push(
            script,
            now,
            actor,
            &format!("payment.{}", next.as_str()),
            "payment",
            &p.id.to_db(),
            json!({ "from": p.status.as_str(), "to": next.as_str(), "reason": failure, "refund_ref": refund_ref }),
        );
        Ok(Some(moved))
    }

    /// Handles `POST /api/v1/payments/webhooks/{provider}`: verify, then
    /// de-duplicate by the provider's event id, then apply, all in one
    /// transaction. A payment we do not know is acknowledged (200) and
    /// logged: the provider account may be shared with another system, and
    /// a non-2xx would only make the provider retry for days.
    pub async fn receive_webhook(&self, provider: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
        Ok(self.receive(provider, headers, body).await?)
    }

    async fn receive(&self, provider: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), PaymentsError> {
        if provider != self.provider_name() {
            return Err(PaymentsError::NotFound);
        }
        let ev = self.inner.provider.verify_webhook(headers, body, self.inner.clock.now())?;
        let now = self.inner.clock.now_ms();
        // Read, then write with guards: the receipt (a replay writes
        // nothing) and the payment's move from the status read (a payment
        // that moved meanwhile is read again). Nothing is locked while the
        // outcome is worked out.
        for _ in 0..3 {
            let payment = self.find_payment(&ev).await?;
            let mut script = self.inner.db.script();
            let fresh = store::push_receipt(
                &mut script,
                provider,
                &ev.event_id,
                &ev.event_type,
                payment.as_ref().map(|p| p.id),
                now,
            );
            match &payment {
                None => {
                    tracing::warn!(provider, event = %ev.event_id, kind = %ev.event_type, "webhook for an unknown payment");
                }
                Some(p) => {
                    if let (Some(a), Outcome::Succeeded) = (ev.amount, &ev.outcome)
                        && a != p.amount
                    {
                        tracing::warn!(payment = %p.id, reported = %a, expected = %p.amount, "provider reported a different amount");
                    }
                    let actor = Actor::Provider(self.provider_name());
                    self.push_outcome(&mut script, p, &ev.outcome, ev.capture_ref.as_deref(), &actor, now)?;
                }
            }
            match self.inner.db.write(script).await {
                Ok(_) => return Ok(()),
                Err(WriteError::Guard(at)) if at == fresh => {
                    tracing::debug!(provider, event = %ev.event_id, "replayed webhook ignored");
                    return Ok(());
                }
                Err(WriteError::Guard(_)) => {
                    tracing::debug!(provider, event = %ev.event_id, "payment moved while the webhook was read; again");
                }
                Err(WriteError::Db(e)) => return Err(e.into()),
            }
        }
        // The provider delivers again later.
        Err(PaymentsError::Corrupt(format!("payment kept moving under webhook {}", ev.event_id)))
    }

    async fn find_payment(&self, ev: &ProviderEvent) -> Result<Option<PaymentRow>, PaymentsError> {
        let mut conn = self.inner.db.read();
        if let Some(id) = ev.payment_id
            && let Some(p) = store::by_id(&mut conn, id, "").await?
            && p.provider == self.provider_name()
        {
            return Ok(Some(p));
        }
        for r in [ev.capture_ref.as_deref(), ev.provider_ref.as_deref()].into_iter().flatten() {
            if let Some(p) = store::by_provider_ref(&mut conn, self.provider_name(), r).await? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The signed balance of a ledger account (debit positive): the provider
    /// account holds captured money (positive), an organizer account is owed
    /// money (negative).
    pub async fn balance(&self, account: &str, currency: Currency) -> Result<i64, Problem> {
        Ok(store::balance(self.inner.db.reader(), account, currency).await?)
    }

    /// Records a refund request inside the caller's transaction (the
    /// outbox consumer's). The refund itself is an outside effect and runs
    /// later, outside any transaction, in [`Payments::process_refund_requests`].
    pub(crate) async fn request_refund(
        &self,
        tx: &mut Tx,
        payment_id: PaymentId,
        reason: &str,
        now: i64,
    ) -> Result<(), PaymentsError> {
        if store::request_refund(tx, payment_id, reason, now).await? {
            audit::record(
                tx,
                now,
                &Actor::System,
                "payment.refund_requested",
                "payment",
                &payment_id.to_db(),
                json!({ "reason": reason }),
            )
            .await?;
        }
        Ok(())
    }

    /// Carries out due refund requests. Returns how many were settled
    /// (refunded, or dropped because nothing was captured).
    pub async fn process_refund_requests(&self) -> Result<usize, Problem> {
        Ok(self.process_refunds().await?)
    }

    async fn process_refunds(&self) -> Result<usize, PaymentsError> {
        let db = &self.inner.db;
        let now = self.inner.clock.now_ms();
        let due = store::due_refunds(db.reader(), now, REFUND_BATCH).await?;
        let mut done = 0;
        for (id, reason) in due {
            let status = store::by_id(&mut db.read(), id, "").await?.map(|p| p.status);
            let result = match status {
                // Still on its way: the money may yet arrive, so ask again later.
                Some(PaymentStatus::Pending) => Err(PaymentsError::NotRefundable),
                Some(PaymentStatus::Succeeded | PaymentStatus::Refunded) => {
                    self.refund_inner(id, &reason, &Actor::System).await
                }
                // Nothing was captured, so there is nothing to give back.
                Some(PaymentStatus::Created | PaymentStatus::Failed) | None => {
                    let mut tx = db.begin().await?;
                    store::clear_refund_request(&mut tx, id).await?;
                    audit::record(
                        &mut tx,
                        now,
                        &Actor::System,
                        "payment.refund_dropped",
                        "payment",
                        &id.to_db(),
                        json!({ "reason": "not_captured" }),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }
            };
            match result {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(payment = %id, error = %e, "refund not possible yet; will retry");
                    store::refund_retry_later(db, id, now).await?;
                }
            }
        }
        Ok(done)
    }

    /// Sends every sandbox webhook due now and settles pending sandbox
    /// charges. Deterministic, for tests; a no-op with Stripe.
    pub async fn deliver_sandbox_webhooks(&self) -> Result<usize, Problem> {
        match self.sandbox() {
            Some(s) => Ok(s.deliver_due().await?),
            None => Ok(0),
        }
    }

    /// The background loop: delivers sandbox webhooks and carries out
    /// requested refunds, every ~20 ms or when woken, until `shutdown`.
    pub async fn run_background(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let wake = self.sandbox().map(|s| s.wake.clone()).unwrap_or_default();
        loop {
            if let Err(e) = self.deliver_sandbox_webhooks().await {
                tracing::warn!(error = %e, "sandbox webhook delivery failed");
            }
            if let Err(e) = self.process_refund_requests().await {
                tracing::warn!(error = %e, "refund processing failed");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}
