//! Check-in use cases: issuing keys, zones and gates, devices and staff,
//! holder credentials, online and offline scans, the scanner bundle and
//! live attendance.

use crate::domain::{
    CheckinError, Direction, Display, Doors, EntryPolicy, Name, Reason, TicketFacts, Verdict, ticket_check,
};
use crate::store::{self, ConflictRow, DeviceRow, Entry, EventRow, KeyRow, NewScan};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use entrada_credential::{Claims, KeyRing, Rejection, Verified, VerifyContext};
use entrada_identity::membership::{OrgRole, role_of};
use entrada_primitives::ids::{EventId, TicketId, UserId};
use entrada_primitives::token::{digest, random_bytes, random_token};
use entrada_primitives::{PlatformRole, Principal, SharedClock};
use entrada_storage::audit::{self, Actor};
use entrada_storage::{Db, WriteError};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Result<T, E = CheckinError> = std::result::Result<T, E>;

/// Tunables, with production defaults.
#[derive(Debug, Clone)]
pub struct CheckinConfig {
    /// How long a device enrolment code stays usable.
    pub enrolment_ttl_ms: i64,
    /// The most scans one batch request may carry.
    pub max_batch: usize,
    /// How long an event's keys, gates and doors are cached per process.
    /// Devices and tickets are never cached: revocation is immediate.
    pub context_ttl_ms: i64,
    /// A credential is valid this long after the doors close or the event ends.
    pub credential_grace_ms: i64,
}

impl Default for CheckinConfig {
    fn default() -> Self {
        Self {
            enrolment_ttl_ms: 24 * 3600 * 1000,
            max_batch: 500,
            context_ttl_ms: 5_000,
            credential_grace_ms: 6 * 3600 * 1000,
        }
    }
}

/// An authenticated scanner device.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub event_id: EventId,
    pub gate_ids: Vec<String>,
}

/// A public issuing key as scanners see it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kid: String,
    /// Raw 32-byte Ed25519 public key, base64url.
    pub x: String,
    pub current: bool,
    pub created_at: i64,
}

/// A gate with its zone.
#[derive(Debug, Clone)]
pub struct Gate {
    pub id: String,
    pub name: String,
    pub zone_id: String,
    pub zone_name: String,
}

/// A signed credential handed to the holder.
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    pub bytes: Vec<u8>,
    pub kid: String,
    pub generation: u32,
    pub not_before: i64,
    pub expires_at: i64,
    /// Rotating (bound to the holder device key) or static (printable).
    pub rotating: bool,
}

/// A newly created device and its one-time enrolment code.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub device: DeviceRow,
    pub code: String,
    pub expires_at: i64,
}

/// What an enrolled device receives.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub device_id: String,
    pub event_id: String,
    pub token: String,
    pub gate_ids: Vec<String>,
}

/// One scan as a device sends it.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub nonce: String,
    pub payload: String,
    pub gate_id: String,
    pub direction: Direction,
    /// The device's clock at the scan; decides offline scans.
    pub scanned_at_ms: Option<i64>,
    pub offline: bool,
    /// For offline scans: whether the device let the person in (default yes).
    pub admitted: Option<bool>,
}

/// A ticket type's gate rules.
#[derive(Debug, Clone)]
pub struct TypeRule {
    pub id: String,
    pub name: String,
    pub zones: Vec<String>,
    pub printable: bool,
    pub policy: EntryPolicy,
}

/// Everything a scanner needs to validate offline, or what changed since a cursor.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub event_id: EventId,
    pub keys: Vec<PublicKey>,
    pub gates: Vec<Gate>,
    pub ticket_types: Vec<TypeRule>,
    pub doors: Doors,
    /// (ticket id, lowest generation that admits, cancelled)
    pub revocations: Vec<(String, i64, bool)>,
    pub valid_ticket_ids: Option<Vec<String>>,
    pub next_cursor: i64,
}

/// Live attendance numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub at_ms: i64,
    pub inside: i64,
    pub admitted_tickets: i64,
    /// (minute start ms, gate id, gate name, count)
    pub per_gate: Vec<(i64, String, String, i64)>,
    /// (minute start ms, zone id, zone name, count)
    pub per_zone: Vec<(i64, String, String, i64)>,
    pub rejections: Vec<(String, i64)>,
    pub conflicts: i64,
}

/// Who may manage an event's check-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Owner or manager of the organization, or a platform admin.
    Organizer,
    /// Access staff of this event.
    Staff,
}

/// An event's verification context, cached briefly per process.
struct EventCtx {
    event: EventRow,
    event_bytes: [u8; 16],
    ring: KeyRing,
    gates: HashMap<String, Gate>,
}

/// What a fresh scan comes to before the ticket's admission is consulted.
enum Step {
    Done(Verdict),
    Enter(Display),
    Leave(Display),
}

/// One upload being decided: the scans, the device that sent each, and
/// what verification made of the fresh ones.
struct Batch<'a> {
    devices: &'a [&'a Device],
    scans: &'a [ScanRequest],
    ctx: &'a EventCtx,
    device_event: String,
    now: i64,
    /// The scans to decide: the first of their (device, nonce), not recorded before.
    fresh: Vec<usize>,
    verified: HashMap<usize, std::result::Result<Verified, Rejection>>,
}

impl Batch<'_> {
    /// When scan `i` happened: the device's time offline, the server's online.
    fn at(&self, i: usize) -> i64 {
        let s = &self.scans[i];
        if s.offline { s.scanned_at_ms.unwrap_or(self.now) } else { self.now }
    }

    /// The ticket a verified credential names.
    fn ticket_of(&self, i: usize) -> Option<String> {
        match self.verified.get(&i) {
            Some(Ok(v)) => Some(uuid::Uuid::from_bytes(v.claims.ticket_id).to_string()),
            _ => None,
        }
    }

    /// The gate of scan `i`, when it is one of its device's gates.
    fn gate_of(&self, i: usize) -> Option<&Gate> {
        let s = &self.scans[i];
        if self.devices[i].gate_ids.iter().any(|g| g == &s.gate_id) { self.ctx.gates.get(&s.gate_id) } else { None }
    }

    /// The tickets of the verified fresh scans, sorted, once each.
    fn ticket_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.fresh.iter().filter_map(|i| self.ticket_of(*i)).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The checks that need no admission state: what is left is an entry or
    /// an exit to apply.
    fn steps(&self, facts: &HashMap<String, TicketFacts>) -> HashMap<usize, Step> {
        let mut steps = HashMap::with_capacity(self.fresh.len());
        for i in self.fresh.iter().copied() {
            let s = &self.scans[i];
            let step = match (self.gate_of(i), self.verified.get(&i)) {
                (None, _) => Step::Done(Verdict::new(Reason::GateNotAssigned)),
                (_, Some(Err(r))) => Step::Done(Verdict::new(Reason::Credential(*r))),
                (_, None) => Step::Done(Verdict::new(Reason::Credential(Rejection::Malformed))),
                (Some(gate), Some(Ok(v))) => match facts.get(&self.ticket_of(i).unwrap_or_default()) {
                    None => Step::Done(Verdict::new(Reason::UnknownTicket)),
                    Some(f) => {
                        let display = Display {
                            ticket_type: f.type_name.clone(),
                            holder_display_name: f.holder_display_name.clone(),
                            seat: None,
                        };
                        let check = ticket_check(
                            f,
                            &self.device_event,
                            v.claims.generation,
                            &gate.zone_name,
                            s.direction,
                            self.at(i),
                            self.ctx.event.doors(),
                        );
                        let done = |r| {
                            let mut v = Verdict::new(r);
                            v.display = Some(display.clone());
                            Step::Done(v)
                        };
                        match check {
                            Some(r) => done(r),
                            // The device turned the person away; nothing entered.
                            None if s.offline && s.admitted == Some(false) => done(Reason::AlreadyUsed),
                            None if s.direction == Direction::In => Step::Enter(display),
                            None => Step::Leave(display),
                        }
                    }
                },
            };
            steps.insert(i, step);
        }
        steps
    }

    /// The verdict of an entry refused because the ticket entered before:
    /// when and where it entered first. An offline scan that the device
    /// admitted anyway is a conflict, noted in `conflicts`.
    fn already_used(
        &self,
        i: usize,
        first_used_at: i64,
        first_gate_id: String,
        entries: i64,
        conflicts: &mut HashMap<usize, (i64, String)>,
    ) -> Verdict {
        let s = &self.scans[i];
        let mut v = Verdict::new(Reason::AlreadyUsed);
        v.first_used_at_ms = Some(first_used_at);
        v.first_gate = self.ctx.gates.get(&first_gate_id).map(|g| g.name.clone());
        v.first_gate_id = Some(first_gate_id.clone());
        v.entries = Some(entries);
        if s.offline && s.admitted != Some(false) {
            v.conflict = true;
            conflicts.insert(i, (first_used_at, first_gate_id));
        }
        v
    }

    /// Every fresh scan's final verdict, naming its ticket, with the JSON
    /// text stored for replays (in `fresh` order).
    fn decided(&self, mut steps: HashMap<usize, Step>) -> Result<(HashMap<usize, Verdict>, Vec<String>)> {
        let mut decided = HashMap::with_capacity(self.fresh.len());
        let mut texts = Vec::with_capacity(self.fresh.len());
        for i in self.fresh.iter().copied() {
            let Some(Step::Done(mut verdict)) = steps.remove(&i) else {
                return Err(CheckinError::Internal("a scan without a verdict".into()));
            };
            verdict.ticket_id = self.ticket_of(i);
            texts.push(serde_json::to_string(&verdict).map_err(|e| CheckinError::Internal(e.to_string()))?);
            decided.insert(i, verdict);
        }
        Ok((decided, texts))
    }

    /// The scan rows to record, in `fresh` order.
    fn rows<'a>(&'a self, decided: &'a HashMap<usize, Verdict>, texts: &'a [String]) -> Vec<NewScan<'a>> {
        self.fresh
            .iter()
            .zip(texts)
            .filter_map(|(i, text)| {
                let (s, v) = (&self.scans[*i], decided.get(i)?);
                Some(NewScan {
                    device_id: &self.devices[*i].id,
                    nonce: &s.nonce,
                    event_id: &self.device_event,
                    gate_id: &s.gate_id,
                    zone_id: self.gate_of(*i).map(|g| g.zone_id.as_str()),
                    ticket_id: v.ticket_id.as_deref(),
                    direction: s.direction.as_str(),
                    ok: v.ok,
                    reason: &v.reason,
                    offline: s.offline,
                    scanned_at: self.at(*i),
                    recorded_at: self.now,
                    verdict: text,
                })
            })
            .collect()
    }
}

/// A queued single scan's answer channel.
type Pending = tokio::sync::oneshot::Sender<std::result::Result<Verdict, String>>;

/// Single scans of one event, from any of its devices, waiting for their group commit.
#[derive(Default)]
struct EventQueue {
    pending: Vec<(Device, ScanRequest, Pending)>,
    /// Flush tasks running for the event.
    flushing: usize,
}

struct Inner {
    db: Db,
    clock: SharedClock,
    config: CheckinConfig,
    cache: Mutex<HashMap<EventId, (i64, Arc<EventCtx>)>>,
    /// Bumped after every committed batch of scans, so live streams push at once.
    changes: tokio::sync::watch::Sender<u64>,
    queues: Mutex<HashMap<EventId, EventQueue>>,
}

/// The check-in service; cheap to clone.
#[derive(Clone)]
pub struct Checkin {
    inner: Arc<Inner>,
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn corrupt(what: &str) -> CheckinError {
    CheckinError::Internal(format!("corrupted row: {what}"))
}

fn signing_key(row: &KeyRow) -> Result<SigningKey> {
    let bytes = B64.decode(&row.private_key).map_err(|_| corrupt("issuing key"))?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| corrupt("issuing key"))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn verifying_key(public: &str) -> Result<VerifyingKey> {
    let bytes = B64.decode(public).map_err(|_| corrupt("public key"))?;
    let raw: [u8; 32] = bytes.try_into().map_err(|_| corrupt("public key"))?;
    VerifyingKey::from_bytes(&raw).map_err(|_| corrupt("public key"))
}

fn new_key(now: i64) -> KeyRow {
    let signing = SigningKey::from_bytes(&random_bytes::<32>());
    let public = signing.verifying_key();
    KeyRow {
        kid: b64(&entrada_credential::key_id(&public)),
        private_key: b64(signing.as_bytes()),
        public_key: b64(public.as_bytes()),
        current: true,
        created_at: now,
        retired_at: None,
    }
}

/// Scans verified together in one Ed25519 batch.
pub const VERIFY_CHUNK: usize = 8;

/// Batch verification in small chunks. One forgery fails its whole batch,
/// which is then searched by halves: over a few hundred scans with a few
/// forgeries that re-verifies most of the batch several times, while 8 scans
/// (16 signatures) keep most of the batch speed-up and bound what one forgery
/// costs (`cargo bench -p entrada-credential --bench verify -- gate_256`:
/// chunks of 8 are 4 % slower than chunks of 16 when every scan is good and
/// 8 % faster with 2 % forgeries).
fn verify_chunked(texts: &[&str], vctx: &VerifyContext) -> Vec<std::result::Result<Verified, Rejection>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(VERIFY_CHUNK) {
        out.extend(entrada_credential::verify_batch(chunk, vctx));
    }
    out
}

fn user_actor(p: &Principal) -> Actor {
    Actor::User(p.user_id)
}

impl Checkin {
    pub fn new(db: Db, clock: SharedClock, config: CheckinConfig) -> Self {
        let (changes, _) = tokio::sync::watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                db,
                clock,
                config,
                cache: Mutex::new(HashMap::new()),
                changes,
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The injected clock's current instant, unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.now()
    }

    pub fn config(&self) -> &CheckinConfig {
        &self.inner.config
    }

    /// A receiver that changes whenever scans are recorded.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn invalidate(&self, event: EventId) {
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(&event);
    }

    // ------------------------------------------------------------------ authorization

    /// The caller's access to an event's check-in; 404 for anyone else.
    pub async fn access(&self, p: &Principal, event: EventId) -> Result<(EventRow, Access)> {
        let e = store::event(&self.inner.db, event).await?.ok_or(CheckinError::NotFound)?;
        if p.role == PlatformRole::Admin {
            return Ok((e, Access::Organizer));
        }
        if matches!(
            role_of(&self.inner.db, p.user_id, e.organization_id).await?,
            Some(OrgRole::Owner | OrgRole::Manager)
        ) {
            return Ok((e, Access::Organizer));
        }
        if store::is_staff(&self.inner.db, event, p.user_id).await? {
            return Ok((e, Access::Staff));
        }
        Err(CheckinError::NotFound)
    }

    async fn organizer(&self, p: &Principal, event: EventId) -> Result<EventRow> {
        match self.access(p, event).await? {
            (e, Access::Organizer) => Ok(e),
            // Staff see the event but may not change its rules; the object is
            // visible to them, so this is 404 only for outsiders.
            (_, Access::Staff) => Err(CheckinError::NotFound),
        }
    }

    // ------------------------------------------------------------------ keys

    /// The event's current issuing key, created on first need.
    async fn current_key(&self, event: EventId) -> Result<(Vec<u8>, SigningKey)> {
        let db = &self.inner.db;
        if let Some(row) = store::keys(db, event).await?.into_iter().find(|k| k.current) {
            let kid = B64.decode(&row.kid).map_err(|_| corrupt("kid"))?;
            return Ok((kid, signing_key(&row)?));
        }
        let now = self.now();
        let row = new_key(now);
        let mut tx = db.begin().await?;
        if store::insert_first_key(&mut tx, event, &row).await? {
            audit::record(
                &mut tx,
                now,
                &Actor::System,
                "checkin.key_created",
                "event",
                &event.to_db(),
                json!({"kid": row.kid}),
            )
            .await?;
        }
        tx.commit().await?;
        self.invalidate(event);
        // Another process may have won the race: use whichever key is current.
        let row = store::keys(db, event).await?.into_iter().find(|k| k.current).ok_or(corrupt("no current key"))?;
        let kid = B64.decode(&row.kid).map_err(|_| corrupt("kid"))?;
        Ok((kid, signing_key(&row)?))
    }

    /// Public keys of an event that still verify (current and older, not retired).
    pub async fn public_keys(&self, event: EventId) -> Result<Vec<PublicKey>> {
        store::event(&self.inner.db, event).await?.ok_or(CheckinError::NotFound)?;
        Ok(store::keys(&self.inner.db, event)
            .await?
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| PublicKey { kid: k.kid, x: k.public_key, current: k.current, created_at: k.created_at })
            .collect())
    }

    /// A new key signs from now on; older keys keep verifying until retired.
    pub async fn rotate_key(&self, p: &Principal, event: EventId) -> Result<PublicKey> {
        self.organizer(p, event).await?;
        let now = self.now();
        let row = new_key(now);
        let mut tx = self.inner.db.begin().await?;
        store::rotate_key(&mut tx, event, &row).await?;
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.key_rotated",
            "event",
            &event.to_db(),
            json!({"kid": row.kid}),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(event);
        Ok(PublicKey { kid: row.kid, x: row.public_key, current: true, created_at: now })
    }

    /// Stops trusting an older key; credentials it signed stop verifying.
    pub async fn retire_key(&self, p: &Principal, event: EventId, kid: &str) -> Result<()> {
        self.organizer(p, event).await?;
        let now = self.now();
        let keys = store::keys(&self.inner.db, event).await?;
        match keys.iter().find(|k| k.kid == kid && k.retired_at.is_none()) {
            None => return Err(CheckinError::NotFound),
            Some(k) if k.current => return Err(CheckinError::KeyInUse),
            Some(_) => {}
        }
        let mut tx = self.inner.db.begin().await?;
        if !store::retire_key(&mut tx, event, kid, now).await? {
            return Err(CheckinError::NotFound);
        }
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.key_retired",
            "event",
            &event.to_db(),
            json!({"kid": kid}),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(event);
        Ok(())
    }

    // ------------------------------------------------------------------ zones, gates, rules

    pub async fn create_zone(&self, p: &Principal, event: EventId, name: &str) -> Result<(String, String, i64)> {
        let name = Name::parse("name", name)?;
        self.organizer(p, event).await?;
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.inner.db.begin().await?;
        let res = sqlx::query(
            "INSERT INTO zones (id, event_id, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (event_id, name) DO NOTHING",
        )
        .bind(&id)
        .bind(event.to_db())
        .bind(name.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(CheckinError::ZoneExists);
        }
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.zone_created",
            "zone",
            &id,
            json!({"event_id": event, "name": name.as_str()}),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(event);
        Ok((id, name.as_str().to_owned(), now))
    }

    pub async fn zones(&self, p: &Principal, event: EventId) -> Result<Vec<(String, String, i64)>> {
        self.access(p, event).await?;
        Ok(store::zones(&self.inner.db, event).await?)
    }

    pub async fn create_gate(&self, p: &Principal, event: EventId, name: &str, zone_id: &str) -> Result<Gate> {
        let name = Name::parse("name", name)?;
        self.organizer(p, event).await?;
        let zone = store::zones(&self.inner.db, event)
            .await?
            .into_iter()
            .find(|z| z.0 == zone_id)
            .ok_or_else(|| CheckinError::invalid("zone_id", "no such zone in this event"))?;
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.inner.db.begin().await?;
        let res = sqlx::query(
            "INSERT INTO gates (id, event_id, zone_id, name, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (event_id, name) DO NOTHING",
        )
        .bind(&id)
        .bind(event.to_db())
        .bind(&zone.0)
        .bind(name.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(CheckinError::GateExists);
        }
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.gate_created",
            "gate",
            &id,
            json!({"event_id": event, "zone_id": zone.0, "name": name.as_str()}),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(event);
        Ok(Gate { id, name: name.as_str().to_owned(), zone_id: zone.0, zone_name: zone.1 })
    }

    pub async fn gates(&self, p: &Principal, event: EventId) -> Result<Vec<Gate>> {
        self.access(p, event).await?;
        self.gate_list(event).await
    }

    async fn gate_list(&self, event: EventId) -> Result<Vec<Gate>> {
        Ok(store::gates(&self.inner.db, event)
            .await?
            .into_iter()
            .map(|(id, name, zone_id, zone_name)| Gate { id, name, zone_id, zone_name })
            .collect())
    }

    /// Sets the entry policy of a ticket type (organizer of its event).
    pub async fn set_entry_policy(&self, p: &Principal, ticket_type: &str, policy: EntryPolicy) -> Result<EventId> {
        let event = store::ticket_type_event(&self.inner.db, ticket_type).await?.ok_or(CheckinError::NotFound)?;
        self.organizer(p, event).await?;
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        store::set_policy(&mut tx, ticket_type, policy, now).await?;
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.entry_policy_set",
            "ticket_type",
            ticket_type,
            json!({"max_entries": policy.max_entries(), "reentry": matches!(policy, EntryPolicy::Reentry{..})}),
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    /// The ticket types of an event with their gate rules.
    pub async fn type_rules(&self, event: EventId) -> Result<Vec<TypeRule>> {
        Ok(store::ticket_types(&self.inner.db, event)
            .await?
            .into_iter()
            .map(|(id, name, zones, printable, reentry, max)| TypeRule {
                id,
                name,
                zones: crate::domain::parse_zones(&zones),
                printable: printable == 1,
                policy: if reentry == 1 {
                    EntryPolicy::Reentry { max_entries: max.unwrap_or(1).max(1) }
                } else {
                    EntryPolicy::Single
                },
            })
            .collect())
    }

    pub async fn doors(&self, p: &Principal, event: EventId) -> Result<Doors> {
        Ok(self.access(p, event).await?.0.doors())
    }

    /// Sets (or clears, back to the event's end) when the doors close.
    pub async fn set_doors_close(&self, p: &Principal, event: EventId, close: Option<i64>) -> Result<Doors> {
        let e = self.organizer(p, event).await?;
        if let (Some(c), Some(o)) = (close, e.doors_open_at)
            && c <= o
        {
            return Err(CheckinError::invalid("doors_close_at", "must be after the doors open"));
        }
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        store::set_doors_close(&mut tx, event, close, now).await?;
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.doors_set",
            "event",
            &event.to_db(),
            json!({"doors_close_at": close}),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(event);
        Ok(Doors { open_ms: e.doors_open_at, close_ms: close.unwrap_or(e.ends_at) })
    }

    // ------------------------------------------------------------------ staff

    pub async fn add_staff(&self, p: &Principal, event: EventId, email: &str) -> Result<(String, String)> {
        self.organizer(p, event).await?;
        let (user_id, display) =
            store::user_by_email(&self.inner.db, email.trim()).await?.ok_or(CheckinError::UnknownUser)?;
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        let res = sqlx::query(
            "INSERT INTO event_staff (event_id, user_id, added_by, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (event_id, user_id) DO NOTHING",
        )
        .bind(event.to_db())
        .bind(&user_id)
        .bind(p.user_id.to_db())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 1 {
            audit::record(
                &mut tx,
                now,
                &user_actor(p),
                "checkin.staff_added",
                "event",
                &event.to_db(),
                json!({"user_id": user_id}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((user_id, display))
    }

    pub async fn staff(&self, p: &Principal, event: EventId) -> Result<Vec<(String, String, String, i64)>> {
        self.organizer(p, event).await?;
        Ok(store::staff(&self.inner.db, event).await?)
    }

    pub async fn remove_staff(&self, p: &Principal, event: EventId, user: UserId) -> Result<()> {
        self.organizer(p, event).await?;
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        let res = sqlx::query("DELETE FROM event_staff WHERE event_id = $1 AND user_id = $2")
            .bind(event.to_db())
            .bind(user.to_db())
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(CheckinError::NotFound);
        }
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.staff_removed",
            "event",
            &event.to_db(),
            json!({"user_id": user}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------ devices

    /// Creates a scanner device for some of the event's gates (organizer or
    /// staff) and its one-time enrolment code.
    pub async fn create_device(
        &self,
        p: &Principal,
        event: EventId,
        name: &str,
        gate_ids: &[String],
    ) -> Result<NewDevice> {
        let name = Name::parse("name", name)?;
        self.access(p, event).await?;
        if gate_ids.is_empty() || gate_ids.len() > 100 {
            return Err(CheckinError::invalid("gate_ids", "name 1 to 100 gates"));
        }
        let gates = self.gate_list(event).await?;
        let mut wanted: Vec<String> = gate_ids.to_vec();
        wanted.sort();
        wanted.dedup();
        if let Some(bad) = wanted.iter().find(|g| !gates.iter().any(|x| &x.id == *g)) {
            return Err(CheckinError::invalid("gate_ids", format!("no gate {bad} in this event")));
        }
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let code = random_token();
        let expires_at = now + self.inner.config.enrolment_ttl_ms;
        let mut tx = self.inner.db.begin().await?;
        sqlx::query(
            "INSERT INTO scanner_devices (id, event_id, name, enrol_digest, enrol_expires_at, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(event.to_db())
        .bind(name.as_str())
        .bind(digest(&code))
        .bind(expires_at)
        .bind(p.user_id.to_db())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for g in &wanted {
            sqlx::query("INSERT INTO device_gates (device_id, gate_id) VALUES ($1, $2)")
                .bind(&id)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.device_created",
            "scanner_device",
            &id,
            json!({"event_id": event, "gate_ids": wanted}),
        )
        .await?;
        tx.commit().await?;
        let device = DeviceRow {
            id,
            event_id: event.to_db(),
            name: name.as_str().to_owned(),
            revoked_at: None,
            enrolled_at: None,
            created_at: now,
            gate_ids: wanted,
        };
        Ok(NewDevice { device, code, expires_at })
    }

    pub async fn devices(&self, p: &Principal, event: EventId) -> Result<Vec<DeviceRow>> {
        self.access(p, event).await?;
        Ok(store::devices(&self.inner.db, event).await?)
    }

    /// Exchanges a one-time enrolment code for the device's token.
    pub async fn enrol(&self, code: &str, device_public_key: Option<&str>) -> Result<Enrolment> {
        if let Some(k) = device_public_key {
            let ok = B64.decode(k).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).is_some();
            if !ok {
                return Err(CheckinError::invalid("device_public_key", "must be 32 bytes, base64url without padding"));
            }
        }
        let now = self.now();
        let token = random_token();
        let mut tx = self.inner.db.begin().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "UPDATE scanner_devices SET enrol_digest = NULL, token_digest = $2, enrolled_at = $3, public_key = $4 \
             WHERE enrol_digest = $1 AND enrol_expires_at > $3 AND revoked_at IS NULL RETURNING id, event_id",
        )
        .bind(digest(code))
        .bind(digest(&token))
        .bind(now)
        .bind(device_public_key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((device_id, event_id)) = row else {
            return Err(CheckinError::InvalidEnrolmentCode);
        };
        audit::record(
            &mut tx,
            now,
            &Actor::System,
            "checkin.device_enrolled",
            "scanner_device",
            &device_id,
            json!({"event_id": event_id}),
        )
        .await?;
        tx.commit().await?;
        let gates: Vec<(String,)> =
            sqlx::query_as("SELECT gate_id FROM device_gates WHERE device_id = $1 ORDER BY gate_id")
                .bind(&device_id)
                .fetch_all(self.inner.db.reader())
                .await?;
        Ok(Enrolment { device_id, event_id, token, gate_ids: gates.into_iter().map(|(g,)| g).collect() })
    }

    /// Revokes a device: its token is refused from the next request on.
    pub async fn revoke_device(&self, p: &Principal, event: EventId, device: &str) -> Result<()> {
        self.organizer(p, event).await?;
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        let res = sqlx::query(
            "UPDATE scanner_devices SET revoked_at = $3, enrol_digest = NULL WHERE event_id = $1 AND id = $2 \
             AND revoked_at IS NULL",
        )
        .bind(event.to_db())
        .bind(device)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(CheckinError::NotFound);
        }
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.device_revoked",
            "scanner_device",
            device,
            json!({"event_id": event}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Resolves a device token; never cached, so a revocation is immediate.
    pub async fn authenticate_device(&self, token: &str) -> Result<Device> {
        let row =
            store::device_by_token(&self.inner.db, &digest(token)).await?.ok_or(CheckinError::InvalidDeviceToken)?;
        if row.revoked_at.is_some() {
            return Err(CheckinError::DeviceRevoked);
        }
        let event_id = EventId::from_db(&row.event_id).map_err(|_| corrupt("device event"))?;
        Ok(Device { id: row.id, event_id, gate_ids: row.gate_ids })
    }

    // ------------------------------------------------------------------ holder credentials

    async fn holder_ticket(&self, p: &Principal, ticket: TicketId) -> Result<store::HolderTicket> {
        let t = store::holder_ticket(&self.inner.db, ticket).await?.ok_or(CheckinError::NotFound)?;
        if t.holder_id != p.user_id.to_db() {
            return Err(CheckinError::NotFound);
        }
        Ok(t)
    }

    /// Registers the holder device's public key for the ticket's current generation.
    pub async fn register_device_key(&self, p: &Principal, ticket: TicketId, public_key: &str) -> Result<()> {
        let raw = B64
            .decode(public_key.trim_end_matches('='))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .filter(|b| VerifyingKey::from_bytes(b).is_ok())
            .ok_or_else(|| CheckinError::invalid("public_key", "must be an Ed25519 public key: 32 bytes, base64url"))?;
        let t = self.holder_ticket(p, ticket).await?;
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        store::set_holder_key(&mut tx, ticket, t.generation, &b64(&raw), now).await?;
        audit::record(
            &mut tx,
            now,
            &user_actor(p),
            "checkin.holder_key_registered",
            "ticket",
            &ticket.to_db(),
            json!({"generation": t.generation}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The signed credential of the ticket's current generation: rotating
    /// when the holder registered a device key, else static when the type is
    /// printable, else 409 `device_key_required`.
    pub async fn credential(&self, p: &Principal, ticket: TicketId) -> Result<IssuedCredential> {
        let t = self.holder_ticket(p, ticket).await?;
        match t.holder_key.clone() {
            Some(k) => self.issue(ticket, &t, Some(k)).await,
            None if t.printable => self.issue(ticket, &t, None).await,
            None => Err(CheckinError::DeviceKeyRequired),
        }
    }

    /// The static credential of a printable ticket, for the printed QR.
    pub async fn static_credential(&self, p: &Principal, ticket: TicketId) -> Result<IssuedCredential> {
        let t = self.holder_ticket(p, ticket).await?;
        if !t.printable {
            return Err(CheckinError::NotPrintable);
        }
        self.issue(ticket, &t, None).await
    }

    async fn issue(
        &self,
        ticket: TicketId,
        t: &store::HolderTicket,
        holder_key: Option<String>,
    ) -> Result<IssuedCredential> {
        if t.status != "valid" || matches!(t.order_status.as_str(), "refunded" | "cancelled") {
            return Err(CheckinError::TicketNotValid("cancelled"));
        }
        if t.order_status != "paid" {
            return Err(CheckinError::TicketNotValid("unpaid"));
        }
        let event = EventId::from_db(&t.event_id).map_err(|_| corrupt("ticket event"))?;
        let type_id = uuid::Uuid::parse_str(&t.ticket_type_id).map_err(|_| corrupt("ticket type"))?;
        let generation = u32::try_from(t.generation).map_err(|_| corrupt("generation"))?;
        let holder_key = match holder_key {
            Some(k) => Some(
                B64.decode(&k).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| corrupt("holder key"))?,
            ),
            None => None,
        };
        let (kid, key) = self.current_key(event).await?;
        let now_s = self.now().div_euclid(1000);
        // A few minutes of slack before issue, so a scanner whose clock is a
        // little behind still accepts a credential fetched just now.
        let not_before = now_s - 300;
        let end_ms = t.doors_close_at.unwrap_or(t.ends_at).max(t.ends_at) + self.inner.config.credential_grace_ms;
        let expires_at = end_ms.div_euclid(1000).max(now_s + 60);
        let claims = Claims {
            ticket_id: ticket.0.into_bytes(),
            event_id: event.0.into_bytes(),
            ticket_type_id: type_id.into_bytes(),
            zones: t.zones.clone(),
            generation,
            not_before,
            expires_at,
            holder_key,
            issued_at: now_s,
        };
        let bytes = entrada_credential::issue(&claims, &key, &kid);
        Ok(IssuedCredential {
            bytes,
            kid: b64(&kid),
            generation,
            not_before,
            expires_at,
            rotating: holder_key.is_some(),
        })
    }

    // ------------------------------------------------------------------ scanning

    async fn event_ctx(&self, event: EventId) -> Result<Arc<EventCtx>> {
        let now = self.now();
        if let Some((at, ctx)) = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&event)
            && now >= *at
            && now - *at < self.inner.config.context_ttl_ms
        {
            return Ok(ctx.clone());
        }
        let db = &self.inner.db;
        let e = store::event(db, event).await?.ok_or(CheckinError::NotFound)?;
        let event_bytes = event.0.into_bytes();
        let mut ring = KeyRing::new();
        for k in store::keys(db, event).await?.into_iter().filter(|k| k.retired_at.is_none()) {
            let kid = B64.decode(&k.kid).map_err(|_| corrupt("kid"))?;
            ring.insert(event_bytes, &kid, verifying_key(&k.public_key)?);
        }
        let gates = self.gate_list(event).await?.into_iter().map(|g| (g.id.clone(), g)).collect();
        let ctx = Arc::new(EventCtx { event: e, event_bytes, ring, gates });
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(event, (now, ctx.clone()));
        Ok(ctx)
    }

    /// An unknown key id may be another event's key: then the answer is
    /// `wrong_event` (after its signature verifies), not `unknown_key`.
    async fn foreign_key(&self, payload: &str, ctx: &EventCtx, now_s: i64) -> Result<Rejection> {
        use coset::CborSerializable as _;
        use coset::TaggedCborSerializable as _;
        let Ok(presentation) = entrada_credential::decode(payload) else {
            return Ok(Rejection::UnknownKey);
        };
        let sign1 = coset::CoseSign1::from_tagged_slice(&presentation.credential)
            .or_else(|_| coset::CoseSign1::from_slice(&presentation.credential));
        let Ok(sign1) = sign1 else {
            return Ok(Rejection::UnknownKey);
        };
        let kid = sign1.protected.header.key_id;
        let Some((event, public)) = store::key_by_kid(&self.inner.db, &b64(&kid)).await? else {
            return Ok(Rejection::UnknownKey);
        };
        let Ok(other) = EventId::from_db(&event) else {
            return Ok(Rejection::UnknownKey);
        };
        let mut ring = KeyRing::new();
        ring.insert(other.0.into_bytes(), &kid, verifying_key(&public)?);
        let vctx = VerifyContext { event_id: ctx.event_bytes, keys: &ring, now: now_s };
        Ok(match entrada_credential::verify(payload, &vctx) {
            Err(r) => r,
            // Cannot happen (the ring names another event); refuse anyway.
            Ok(_) => Rejection::WrongEvent,
        })
    }

    /// One scan, online: verified, decided and recorded durably before the
    /// answer. Concurrent single scans of one event, from all its devices,
    /// share a transaction (group commit): the first waiting scan starts a
    /// flush of everything queued for the event, and scans arriving
    /// meanwhile join the next one.
    pub async fn scan(&self, device: &Device, scan: ScanRequest) -> Result<Verdict> {
        self.check_scans(std::slice::from_ref(&scan))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            let q = queues.entry(device.event_id).or_default();
            q.pending.push((device.clone(), scan, reply));
            // SQLite has one writer, but two flushes side by side let one
            // verify its group's signatures while the other holds the writer
            // (12 % more single scans per second than one at a time, see
            // docs/benchmarks.md). On PostgreSQL a few run side by side, each
            // with its own connection.
            let most = match self.inner.db.backend() {
                entrada_storage::Backend::Sqlite => 2,
                entrada_storage::Backend::Postgres => 4,
            };
            let start = q.flushing < most;
            if start {
                q.flushing += 1;
            }
            start
        };
        if start {
            // A task of its own, so a caller that goes away cannot strand
            // the scans queued behind it.
            let (this, event) = (self.clone(), device.event_id);
            tokio::spawn(async move { this.flush(event).await });
        }
        match answer.await {
            Ok(r) => r.map_err(CheckinError::Internal),
            Err(_) => Err(CheckinError::Internal("scan flush ended without an answer".into())),
        }
    }

    /// Records an event's queued single scans, batch after batch, until none are left.
    async fn flush(&self, event: EventId) {
        loop {
            let batch: Vec<(Device, ScanRequest, Pending)> = {
                let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
                let Some(q) = queues.get_mut(&event) else { return };
                if q.pending.is_empty() {
                    q.flushing = q.flushing.saturating_sub(1);
                    if q.flushing == 0 {
                        queues.remove(&event);
                    }
                    return;
                }
                let n = q.pending.len().min(self.inner.config.max_batch);
                q.pending.drain(..n).collect()
            };
            let mut devices = Vec::with_capacity(batch.len());
            let mut scans = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for (d, s, r) in batch {
                devices.push(d);
                scans.push(s);
                replies.push(r);
            }
            let refs: Vec<&Device> = devices.iter().collect();
            match self.run_batch(event, &refs, scans).await {
                Ok(verdicts) => {
                    for (reply, v) in replies.into_iter().zip(verdicts) {
                        let _ = reply.send(Ok(v));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    fn check_scans(&self, scans: &[ScanRequest]) -> Result<()> {
        if scans.is_empty() || scans.len() > self.inner.config.max_batch {
            return Err(CheckinError::invalid("scans", format!("send 1 to {} scans", self.inner.config.max_batch)));
        }
        for s in scans {
            if s.nonce.is_empty() || s.nonce.len() > 128 {
                return Err(CheckinError::invalid("nonce", "must be 1 to 128 characters"));
            }
            if s.payload.len() > 8192 {
                return Err(CheckinError::invalid("payload", "is too long"));
            }
            if s.gate_id.len() > 64 {
                return Err(CheckinError::invalid("gate_id", "is too long"));
            }
        }
        Ok(())
    }

    /// Many scans: signatures verified together, then every scan recorded in
    /// one transaction (a group commit). Re-uploads of a (device, nonce)
    /// replay the stored verdict and record nothing.
    pub async fn scan_batch(&self, device: &Device, scans: Vec<ScanRequest>) -> Result<Vec<Verdict>> {
        self.check_scans(&scans)?;
        let devices = vec![device; scans.len()];
        self.run_batch(device.event_id, &devices, scans).await
    }

    /// Scans of one event, `devices[i]` having sent `scans[i]`.
    async fn run_batch(&self, event: EventId, devices: &[&Device], scans: Vec<ScanRequest>) -> Result<Vec<Verdict>> {
        let ctx = self.event_ctx(event).await?;
        // A concurrent upload of the same nonces makes the insert collide;
        // the whole batch then rolls back and replays what the winner stored.
        for _ in 0..5 {
            match self.try_batch(event, devices, &ctx, &scans).await {
                Ok(Some(v)) => {
                    self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
                    return Ok(v);
                }
                Ok(None) => {}
                // A deadlock or serialization failure rolled everything back: retry.
                Err(CheckinError::Storage(sqlx::Error::Database(e)))
                    if matches!(e.code().as_deref(), Some("40P01" | "40001")) => {}
                Err(e) => return Err(e),
            }
        }
        Err(CheckinError::Internal("scan upload kept colliding with a concurrent upload".into()))
    }

    async fn try_batch(
        &self,
        event: EventId,
        devices: &[&Device],
        ctx: &Arc<EventCtx>,
        scans: &[ScanRequest],
    ) -> Result<Option<Vec<Verdict>>> {
        let now = self.now();
        let db = &self.inner.db;
        // The first occurrence of each (device, nonce) decides; repeats copy its verdict.
        let key = |i: usize| (devices[i].id.as_str(), scans[i].nonce.as_str());
        let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
        for i in 0..scans.len() {
            first_of.entry(key(i)).or_insert(i);
        }
        let keys: Vec<(&str, &str)> = first_of.keys().copied().collect();
        let mut stored: HashMap<(String, String), Verdict> = HashMap::new();
        for (d, nonce, verdict) in store::replayed(db, &keys).await? {
            let v: Verdict = serde_json::from_str(&verdict).map_err(|_| corrupt("stored verdict"))?;
            stored.insert((d, nonce), v);
        }
        let is_stored = |i: usize| stored.contains_key(&(devices[i].id.clone(), scans[i].nonce.clone()));
        let fresh: Vec<usize> =
            (0..scans.len()).filter(|i| first_of.get(&key(*i)) == Some(i) && !is_stored(*i)).collect();
        let verified = self.verify_fresh(ctx, scans, &fresh, now).await?;
        let mut batch = Batch { devices, scans, ctx, device_event: event.to_db(), now, fresh, verified };

        let mut decided = HashMap::with_capacity(batch.fresh.len());
        if db.backend() == entrada_storage::Backend::Sqlite {
            let (written, rest) = self.planned(&batch).await?;
            decided = written;
            batch.fresh = rest;
        }
        if !batch.fresh.is_empty() {
            match self.in_transaction(&batch).await? {
                Some(d) => decided.extend(d),
                None => return Ok(None),
            }
        }

        let mut out = Vec::with_capacity(scans.len());
        for (i, s) in scans.iter().enumerate() {
            let first = first_of.get(&key(i)).copied().unwrap_or(0);
            let v =
                decided.get(&first).cloned().or_else(|| stored.get(&(devices[i].id.clone(), s.nonce.clone())).cloned());
            out.push(v.ok_or_else(|| CheckinError::Internal("a scan without a verdict".into()))?);
        }
        Ok(Some(out))
    }

    /// Verifies the fresh scans: online ones in one batch at the server's
    /// time, offline ones each at the device's time of the scan.
    async fn verify_fresh(
        &self,
        ctx: &Arc<EventCtx>,
        scans: &[ScanRequest],
        fresh: &[usize],
        now: i64,
    ) -> Result<HashMap<usize, std::result::Result<Verified, Rejection>>> {
        let mut verified = HashMap::with_capacity(fresh.len());
        let online: Vec<usize> = fresh.iter().copied().filter(|i| !scans[*i].offline).collect();
        let now_s = now.div_euclid(1000);
        if !online.is_empty() {
            let results = if online.len() >= 32 {
                // Milliseconds of curve arithmetic: off the async workers, so
                // other requests keep moving meanwhile.
                let texts: Vec<String> = online.iter().map(|i| scans[*i].payload.clone()).collect();
                let ctx = ctx.clone();
                tokio::task::spawn_blocking(move || {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let vctx = VerifyContext { event_id: ctx.event_bytes, keys: &ctx.ring, now: now_s };
                    verify_chunked(&texts, &vctx)
                })
                .await
                .map_err(|e| CheckinError::Internal(e.to_string()))?
            } else {
                let texts: Vec<&str> = online.iter().map(|i| scans[*i].payload.as_str()).collect();
                let vctx = VerifyContext { event_id: ctx.event_bytes, keys: &ctx.ring, now: now_s };
                verify_chunked(&texts, &vctx)
            };
            for (i, r) in online.iter().zip(results) {
                verified.insert(*i, r);
            }
        }
        for i in fresh.iter().copied().filter(|i| scans[*i].offline) {
            let at = scans[i].scanned_at_ms.unwrap_or(now).div_euclid(1000);
            let vctx = VerifyContext { event_id: ctx.event_bytes, keys: &ctx.ring, now: at };
            verified.insert(i, entrada_credential::verify(&scans[i].payload, &vctx));
        }
        for i in fresh.iter().copied() {
            if let Some(Err(Rejection::UnknownKey)) = verified.get(&i) {
                let at = if scans[i].offline { scans[i].scanned_at_ms.unwrap_or(now) } else { now };
                let r = self.foreign_key(&scans[i].payload, ctx, at.div_euclid(1000)).await?;
                verified.insert(i, Err(r));
            }
        }
        Ok(verified)
    }

    /// The common upload on SQLite, decided from reads and written as one
    /// script on the writer thread, which commits it together with whatever
    /// other scripts are waiting. Each first admission is a conditional part
    /// of the script with its scan row: written only while the facts it was
    /// decided on hold (the ticket still valid, of a paid order, at the same
    /// generation, and not admitted yet). Returns the verdicts written and
    /// the scans left to decide in a transaction: those whose part a
    /// concurrent change skipped, or every scan when the upload is not the
    /// common kind (each ticket once, single-entry policy, no offline
    /// conflict) or a concurrent upload recorded one of its nonces.
    async fn planned(&self, b: &Batch<'_>) -> Result<(HashMap<usize, Verdict>, Vec<usize>)> {
        let db = &self.inner.db;
        if b.fresh.is_empty() {
            // A re-upload: every verdict is replayed, nothing to write.
            return Ok((HashMap::new(), Vec::new()));
        }
        let everything = || Ok((HashMap::new(), b.fresh.clone()));
        let facts: HashMap<String, TicketFacts> =
            store::ticket_facts(&mut db.read(), &b.ticket_ids()).await?.into_iter().collect();
        let mut steps = b.steps(&facts);
        let mut entering: Vec<(String, usize)> = Vec::new();
        for i in b.fresh.iter().copied() {
            match steps.get(&i) {
                Some(Step::Done(_)) => {}
                Some(Step::Enter(_)) => {
                    let t = b.ticket_of(i).unwrap_or_default();
                    if facts.get(&t).is_none_or(|f| f.policy.max_entries() > 1) {
                        return everything();
                    }
                    entering.push((t, i));
                }
                Some(Step::Leave(_)) | None => return everything(),
            }
        }
        let mut tickets: Vec<&str> = entering.iter().map(|(t, _)| t.as_str()).collect();
        tickets.sort_unstable();
        let entries = tickets.len();
        tickets.dedup();
        if tickets.len() != entries {
            return everything();
        }
        let firsts = store::admissions_of(&mut db.read(), &tickets).await?;
        // Scan index → the generation its first admission was decided on.
        let mut first_entries: HashMap<usize, i64> = HashMap::new();
        for (t, i) in &entering {
            let Some(Step::Enter(display)) = steps.remove(i) else { continue };
            let mut v = match firsts.get(t) {
                Some((first_used_at, first_gate_id, entries)) => {
                    let mut conflicts = HashMap::new();
                    let v = b.already_used(*i, *first_used_at, first_gate_id.clone(), *entries, &mut conflicts);
                    if !conflicts.is_empty() {
                        return everything();
                    }
                    v
                }
                None => {
                    first_entries.insert(*i, facts.get(t).map(|f| f.generation).unwrap_or_default());
                    let mut v = Verdict::new(Reason::Ok);
                    v.entries = Some(1);
                    v
                }
            };
            v.display = Some(display);
            steps.insert(*i, Step::Done(v));
        }
        let (mut decided, texts) = b.decided(steps)?;
        let mut script = db.script();
        let mut parts: Vec<(usize, usize)> = Vec::with_capacity(first_entries.len());
        for (i, row) in b.fresh.iter().zip(b.rows(&decided, &texts)) {
            if let (Some(generation), Some(ticket)) = (first_entries.get(i), row.ticket_id) {
                let at = store::push_first_entry(
                    &mut script,
                    ticket,
                    row.event_id,
                    row.gate_id,
                    row.scanned_at,
                    *generation,
                );
                parts.push((*i, at));
            }
            store::push_scan(&mut script, &row);
        }
        match db.write(script).await {
            Ok(changed) => {
                let rest: Vec<usize> =
                    parts.iter().filter(|(_, at)| changed.get(*at) == Some(&0)).map(|(i, _)| *i).collect();
                for i in &rest {
                    decided.remove(i);
                }
                Ok((decided, rest))
            }
            Err(WriteError::Db(e)) if entrada_storage::is_unique_violation(&e) => everything(),
            Err(e) => Err(sqlx::Error::from(e).into()),
        }
    }

    /// Any upload, decided and recorded inside one transaction holding the
    /// writer (re-entries, exits, repeats of a ticket, offline conflicts).
    /// `None` when a concurrent upload recorded some of its nonces.
    async fn in_transaction(&self, b: &Batch<'_>) -> Result<Option<HashMap<usize, Verdict>>> {
        let mut tx = self.inner.db.begin().await?;
        let facts: HashMap<String, TicketFacts> =
            store::ticket_facts(&mut tx, &b.ticket_ids()).await?.into_iter().collect();
        let mut steps = b.steps(&facts);

        // A ticket entering once in this batch (the usual case) first tries
        // one multi-row insert of first admissions; whatever that does not
        // admit, and tickets seen more than once, go one by one below.
        let mut touches: HashMap<String, usize> = HashMap::new();
        for i in b.fresh.iter().copied() {
            if matches!(steps.get(&i), Some(Step::Enter(_) | Step::Leave(_))) {
                *touches.entry(b.ticket_of(i).unwrap_or_default()).or_insert(0) += 1;
            }
        }
        let mut bulk: Vec<(String, String, i64, usize)> = b
            .fresh
            .iter()
            .copied()
            .filter(|i| matches!(steps.get(i), Some(Step::Enter(_))))
            .filter_map(|i| {
                let t = b.ticket_of(i)?;
                (touches.get(&t) == Some(&1)).then(|| (t, b.scans[i].gate_id.clone(), b.at(i), i))
            })
            .collect();
        // Ticket order: two batches sharing tickets on PostgreSQL then wait
        // for each other instead of deadlocking.
        bulk.sort();
        let rows: Vec<(&str, &str, i64)> = bulk.iter().map(|(t, g, at, _)| (t.as_str(), g.as_str(), *at)).collect();
        let admitted = store::enter_first(&mut tx, &b.device_event, &rows).await?;
        for (t, _, _, i) in &bulk {
            if admitted.contains(t)
                && let Some(Step::Enter(display)) = steps.remove(i)
            {
                let mut v = Verdict::new(Reason::Ok);
                v.entries = Some(1);
                v.display = Some(display);
                steps.insert(*i, Step::Done(v));
            }
        }

        // A ticket that may enter only once and was not admitted above has
        // entered before: one read answers for all of them. An offline scan
        // that the device admitted is a conflict to report.
        let mut conflicts: HashMap<usize, (i64, String)> = HashMap::new();
        let used: Vec<&str> = bulk
            .iter()
            .filter(|(t, ..)| !admitted.contains(t) && facts.get(t).is_some_and(|f| f.policy.max_entries() <= 1))
            .map(|(t, ..)| t.as_str())
            .collect();
        let firsts = store::admissions_of(&mut tx, &used).await?;
        for (t, _, _, i) in &bulk {
            if let Some((first_used_at, first_gate_id, entries)) = firsts.get(t)
                && let Some(Step::Enter(display)) = steps.remove(i)
            {
                let mut v = b.already_used(*i, *first_used_at, first_gate_id.clone(), *entries, &mut conflicts);
                v.display = Some(display);
                steps.insert(*i, Step::Done(v));
            }
        }

        // The rest, in ticket-id order (stable, so repeats of one ticket
        // keep their batch order).
        let mut order: Vec<usize> =
            b.fresh.iter().copied().filter(|i| !matches!(steps.get(i), Some(Step::Done(_)))).collect();
        order.sort_by_key(|i| b.ticket_of(*i));
        for i in order {
            let at = b.at(i);
            let tid = b.ticket_of(i).unwrap_or_default();
            let Some(gate) = b.gate_of(i) else { continue };
            let Some(step) = steps.remove(&i) else { continue };
            let (mut verdict, display) = match step {
                Step::Done(v) => (v, None),
                Step::Enter(display) => {
                    let max = facts.get(&tid).map(|f| f.policy.max_entries()).unwrap_or(1);
                    let v = match store::enter(&mut tx, &tid, &b.device_event, &gate.id, at, max).await? {
                        Entry::Admitted { entries } => {
                            let mut v = Verdict::new(Reason::Ok);
                            v.entries = Some(entries);
                            v
                        }
                        Entry::Refused { first_used_at, first_gate_id, entries } => {
                            b.already_used(i, first_used_at, first_gate_id, entries, &mut conflicts)
                        }
                    };
                    (v, Some(display))
                }
                Step::Leave(display) => {
                    let v = if store::leave(&mut tx, &tid, &gate.id, at).await? {
                        Verdict::new(Reason::Ok)
                    } else {
                        Verdict::new(Reason::NotInside)
                    };
                    (v, Some(display))
                }
            };
            if display.is_some() {
                verdict.display = display;
            }
            steps.insert(i, Step::Done(verdict));
        }

        // Every scan recorded, in one multi-row insert.
        let (decided, texts) = b.decided(steps)?;
        let Some(scan_ids) = store::insert_scans(&mut tx, &b.rows(&decided, &texts)).await? else {
            // A concurrent upload recorded some of these nonces: replay.
            tx.rollback().await?;
            return Ok(None);
        };
        for i in b.fresh.iter().copied() {
            let (devices, scans) = (b.devices, b.scans);
            if let (Some((first_used_at, first_gate_id)), Some(tid), Some(scan_id)) =
                (conflicts.remove(&i), b.ticket_of(i), scan_ids.get(&(devices[i].id.clone(), scans[i].nonce.clone())))
            {
                let c = ConflictRow {
                    id: 0,
                    ticket_id: tid,
                    scan_id: *scan_id,
                    device_id: devices[i].id.clone(),
                    gate_id: scans[i].gate_id.clone(),
                    scanned_at: scans[i].scanned_at_ms.unwrap_or(b.now),
                    first_used_at,
                    first_gate_id,
                    detected_at: b.now,
                };
                store::insert_conflict(&mut tx, &b.device_event, &c).await?;
            }
        }
        // The admission is durable before any scanner hears "ok".
        tx.commit().await?;
        Ok(Some(decided))
    }

    // ------------------------------------------------------------------ offline bundle

    /// The scanner's offline bundle: keys, gates, rules, doors and the
    /// revocations since `cursor` (all of them without one).
    pub async fn bundle(&self, device: &Device, cursor: Option<i64>, include_tickets: bool) -> Result<Bundle> {
        let event = device.event_id;
        let now = self.now();
        let mut tx = self.inner.db.begin().await?;
        store::sync_revocations(&mut tx, event, now).await?;
        tx.commit().await?;
        let e = store::event(&self.inner.db, event).await?.ok_or(CheckinError::NotFound)?;
        let (revocations, next_cursor) =
            store::revocations_since(&self.inner.db, event, cursor.unwrap_or(0).max(0)).await?;
        let valid_ticket_ids =
            if include_tickets { Some(store::valid_ticket_ids(&self.inner.db, event).await?) } else { None };
        Ok(Bundle {
            event_id: event,
            keys: self.public_keys(event).await?,
            gates: self.gate_list(event).await?,
            ticket_types: self.type_rules(event).await?,
            doors: e.doors(),
            revocations,
            valid_ticket_ids,
            next_cursor,
        })
    }

    /// Offline admissions that collided, for the organizer and staff.
    pub async fn conflicts(&self, p: &Principal, event: EventId) -> Result<Vec<ConflictRow>> {
        self.access(p, event).await?;
        Ok(store::conflicts(&self.inner.db, event).await?)
    }

    // ------------------------------------------------------------------ attendance

    pub async fn stats(&self, p: &Principal, event: EventId) -> Result<Stats> {
        self.access(p, event).await?;
        self.stats_of(event).await
    }

    /// Entries per minute per gate and zone over the last hour, inside
    /// count, rejections by reason and conflicts.
    pub async fn stats_of(&self, event: EventId) -> Result<Stats> {
        let db = &self.inner.db;
        let now = self.now();
        let since = (now - 3_600_000).div_euclid(60_000) * 60_000;
        let gates: HashMap<String, Gate> =
            self.gate_list(event).await?.into_iter().map(|g| (g.id.clone(), g)).collect();
        let mut per_gate = Vec::new();
        let mut zone_counts: std::collections::BTreeMap<(i64, String), (String, i64)> = Default::default();
        for (gate_id, minute, count) in store::entries_per_minute(db, event, since).await? {
            let g = gates.get(&gate_id);
            per_gate.push((minute, gate_id.clone(), g.map(|g| g.name.clone()).unwrap_or_default(), count));
            if let Some(g) = g {
                let e = zone_counts.entry((minute, g.zone_id.clone())).or_insert((g.zone_name.clone(), 0));
                e.1 += count;
            }
        }
        let per_zone = zone_counts.into_iter().map(|((m, z), (name, c))| (m, z, name, c)).collect();
        let (inside, admitted_tickets) = store::attendance(db, event).await?;
        Ok(Stats {
            at_ms: now,
            inside,
            admitted_tickets,
            per_gate,
            per_zone,
            rejections: store::rejections(db, event).await?,
            conflicts: store::conflict_count(db, event).await?,
        })
    }
}
