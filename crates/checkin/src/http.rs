//! Check-in's HTTP surface: wire types, the `DeviceAuth` extractor, handlers
//! and the one mapping from [`CheckinError`] to problem+json.

use crate::domain::{CheckinError, Direction, Doors, EntryPolicy, Verdict};
use crate::qr;
use crate::service::{Bundle, Checkin, Device, Gate, IssuedCredential, PublicKey, ScanRequest, Stats};
use crate::store::{ConflictRow, DeviceRow};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use entrada_primitives::clock::{from_ms, parse_rfc3339, rfc3339, to_ms};
use entrada_primitives::extract::{Json, MaybeIdempotencyKey, Path, Query};
use entrada_primitives::ids::{EventId, TicketId, UserId};
use entrada_primitives::{AuthUser, Principal, Problem};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// All check-in endpoints, state applied.
pub fn router(checkin: Checkin) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(public_keys))
        .routes(routes!(rotate_key))
        .routes(routes!(retire_key))
        .routes(routes!(create_zone, list_zones))
        .routes(routes!(create_gate, list_gates))
        .routes(routes!(set_entry_policy))
        .routes(routes!(get_settings, set_settings))
        .routes(routes!(add_staff, list_staff))
        .routes(routes!(remove_staff))
        .routes(routes!(create_device, list_devices))
        .routes(routes!(revoke_device))
        .routes(routes!(enrol))
        .routes(routes!(register_device_key))
        .routes(routes!(get_credential))
        .routes(routes!(qr_svg))
        .routes(routes!(qr_png))
        .routes(routes!(scan))
        .routes(routes!(scan_batch))
        .routes(routes!(bundle))
        .routes(routes!(conflicts))
        .routes(routes!(stats))
        .routes(routes!(stats_stream))
        .with_state(checkin)
}

/// The one place check-in errors become HTTP problems.
pub fn problem(e: CheckinError) -> Problem {
    match e {
        CheckinError::NotFound => Problem::not_found("not_found", "no such resource"),
        CheckinError::Validation { field, message } => Problem::invalid_field(field, message),
        CheckinError::ZoneExists => Problem::conflict("zone_exists", e.to_string()),
        CheckinError::GateExists => Problem::conflict("gate_exists", e.to_string()),
        CheckinError::DeviceKeyRequired => Problem::conflict("device_key_required", e.to_string()),
        CheckinError::NotPrintable => Problem::conflict("not_printable", e.to_string()),
        CheckinError::TicketNotValid(why) => Problem::conflict("ticket_not_valid", e.to_string()).with("reason", why),
        CheckinError::InvalidEnrolmentCode => Problem::unauthorized("invalid_enrolment_code", e.to_string()),
        CheckinError::DeviceTokenRequired => Problem::unauthorized("device_token_required", e.to_string()),
        CheckinError::InvalidDeviceToken => Problem::unauthorized("invalid_device_token", e.to_string()),
        CheckinError::DeviceRevoked => Problem::unauthorized("device_revoked", e.to_string()),
        CheckinError::UnknownUser => Problem::unprocessable("unknown_user", e.to_string()),
        CheckinError::KeyInUse => Problem::conflict("key_in_use", e.to_string()),
        CheckinError::Storage(err) => Problem::internal(err),
        CheckinError::Internal(msg) => Problem::internal(msg),
    }
}

// ------------------------------------------------------------------ device auth

/// A scanner device authenticated by `Authorization: Device <token>`. A
/// bearer token (a user's login) is refused: scanners never act as users.
#[derive(Debug, Clone)]
pub struct DeviceAuth(pub Device);

impl FromRequestParts<Checkin> for DeviceAuth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, checkin: &Checkin) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some(token) = header.strip_prefix("Device ").map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(problem(CheckinError::DeviceTokenRequired));
        };
        checkin.authenticate_device(token).await.map(DeviceAuth).map_err(problem)
    }
}

// ------------------------------------------------------------------ helpers

fn time_field(field: &'static str, s: &str) -> Result<i64, Problem> {
    parse_rfc3339(s)
        .map(to_ms)
        .ok_or_else(|| Problem::invalid_field(field, "must be an RFC 3339 time such as 2030-06-01T20:00:00Z"))
}

fn ms(t: i64) -> String {
    rfc3339(from_ms(t))
}

/// Runs a creating handler under `Idempotency-Key`.
async fn idempotent<B, F, Fut>(
    c: &Checkin,
    p: &Principal,
    route: &str,
    key: MaybeIdempotencyKey,
    body: &B,
    f: F,
) -> Result<Response, Problem>
where
    B: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), Problem>>,
{
    let bytes = serde_json::to_vec(body).map_err(Problem::internal)?;
    let scope = format!("{}:{route}", p.user_id);
    let out = entrada_storage::idempotency::run(c.db(), c.now_ms(), &scope, key.0.as_ref(), &bytes, f).await?;
    Ok((out.status, Json(out.body)).into_response())
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, Problem> {
    serde_json::to_value(v).map_err(Problem::internal)
}

// ------------------------------------------------------------------ keys

/// A public issuing key in JWK form (OKP, Ed25519).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkOut {
    pub kty: &'static str,
    pub crv: &'static str,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// base64url of the 8-byte key id carried in the credential's COSE header.
    pub kid: String,
    /// base64url of the raw 32-byte public key.
    pub x: String,
    /// The key that signs new credentials.
    pub current: bool,
    pub created_at: String,
}

impl From<PublicKey> for JwkOut {
    fn from(k: PublicKey) -> Self {
        Self {
            kty: "OKP",
            crv: "Ed25519",
            alg: "EdDSA",
            use_: "sig",
            kid: k.kid,
            x: k.x,
            current: k.current,
            created_at: ms(k.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeysOut {
    pub keys: Vec<JwkOut>,
}

/// The event's public issuing keys (public, for scanners and verifiers).
#[utoipa::path(get, path = "/api/v1/events/{id}/keys", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = KeysOut), (status = 404, description = "not_found")))]
async fn public_keys(State(c): State<Checkin>, Path(id): Path<EventId>) -> Result<Json<KeysOut>, Problem> {
    let keys = c.public_keys(id).await.map_err(problem)?;
    Ok(Json(KeysOut { keys: keys.into_iter().map(JwkOut::from).collect() }))
}

/// Rotates the event's issuing key: a new key signs, older ones keep verifying.
#[utoipa::path(post, path = "/api/v1/events/{id}/keys/rotate", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 201, body = JwkOut), (status = 404, description = "not_found")))]
async fn rotate_key(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<(StatusCode, Json<JwkOut>), Problem> {
    let k = c.rotate_key(&p, id).await.map_err(problem)?;
    Ok((StatusCode::CREATED, Json(k.into())))
}

/// Retires an older key: credentials it signed stop verifying.
#[utoipa::path(post, path = "/api/v1/events/{id}/keys/{kid}/retire", tag = "checkin",
    params(("id" = EventId, Path), ("kid" = String, Path)),
    responses((status = 204), (status = 404, description = "not_found"), (status = 409, description = "key_in_use")))]
async fn retire_key(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path((id, kid)): Path<(EventId, String)>,
) -> Result<StatusCode, Problem> {
    c.retire_key(&p, id, &kid).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ zones and gates

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateZone {
    /// The name ticket types list in their `zones`.
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ZoneOut {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ZonesOut {
    pub zones: Vec<ZoneOut>,
}

/// Creates a zone (organizer).
#[utoipa::path(post, path = "/api/v1/events/{id}/zones", tag = "checkin",
    params(("id" = EventId, Path)), request_body = CreateZone,
    responses((status = 201, body = ZoneOut), (status = 404, description = "not_found"),
        (status = 409, description = "zone_exists"), (status = 422, description = "validation_failed")))]
async fn create_zone(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    key: MaybeIdempotencyKey,
    Path(id): Path<EventId>,
    Json(body): Json<CreateZone>,
) -> Result<Response, Problem> {
    let route = format!("events/{id}/zones");
    idempotent(&c, &p, &route, key, &body, || async {
        let (zid, name, at) = c.create_zone(&p, id, &body.name).await.map_err(problem)?;
        Ok((StatusCode::CREATED, to_value(&ZoneOut { id: zid, name, created_at: ms(at) })?))
    })
    .await
}

/// The event's zones (organizer or staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/zones", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = ZonesOut), (status = 404, description = "not_found")))]
async fn list_zones(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<ZonesOut>, Problem> {
    let zones = c.zones(&p, id).await.map_err(problem)?;
    Ok(Json(ZonesOut {
        zones: zones.into_iter().map(|(id, name, at)| ZoneOut { id, name, created_at: ms(at) }).collect(),
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGate {
    pub name: String,
    pub zone_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GateOut {
    pub id: String,
    pub name: String,
    pub zone_id: String,
    pub zone_name: String,
}

impl From<Gate> for GateOut {
    fn from(g: Gate) -> Self {
        Self { id: g.id, name: g.name, zone_id: g.zone_id, zone_name: g.zone_name }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GatesOut {
    pub gates: Vec<GateOut>,
}

/// Creates a gate in a zone (organizer).
#[utoipa::path(post, path = "/api/v1/events/{id}/gates", tag = "checkin",
    params(("id" = EventId, Path)), request_body = CreateGate,
    responses((status = 201, body = GateOut), (status = 404, description = "not_found"),
        (status = 409, description = "gate_exists"), (status = 422, description = "validation_failed")))]
async fn create_gate(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    key: MaybeIdempotencyKey,
    Path(id): Path<EventId>,
    Json(body): Json<CreateGate>,
) -> Result<Response, Problem> {
    let route = format!("events/{id}/gates");
    idempotent(&c, &p, &route, key, &body, || async {
        let g = c.create_gate(&p, id, &body.name, &body.zone_id).await.map_err(problem)?;
        Ok((StatusCode::CREATED, to_value(&GateOut::from(g))?))
    })
    .await
}

/// The event's gates (organizer or staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/gates", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = GatesOut), (status = 404, description = "not_found")))]
async fn list_gates(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<GatesOut>, Problem> {
    let gates = c.gates(&p, id).await.map_err(problem)?;
    Ok(Json(GatesOut { gates: gates.into_iter().map(GateOut::from).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryPolicyIo {
    /// Whether an exit scan allows entering again.
    pub reentry: bool,
    /// Total entries allowed with re-entry (1 to 1000).
    #[serde(default)]
    pub max_entries: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryPolicyOut {
    pub ticket_type_id: String,
    pub reentry: bool,
    pub max_entries: i64,
}

/// Sets a ticket type's entry policy (organizer of its event).
#[utoipa::path(put, path = "/api/v1/ticket-types/{id}/entry-policy", tag = "checkin",
    params(("id" = String, Path)), request_body = EntryPolicyIo,
    responses((status = 200, body = EntryPolicyOut), (status = 404, description = "not_found"),
        (status = 422, description = "validation_failed")))]
async fn set_entry_policy(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<String>,
    Json(body): Json<EntryPolicyIo>,
) -> Result<Json<EntryPolicyOut>, Problem> {
    let policy = EntryPolicy::new(body.reentry, body.max_entries).map_err(problem)?;
    c.set_entry_policy(&p, &id, policy).await.map_err(problem)?;
    Ok(Json(EntryPolicyOut {
        ticket_type_id: id,
        reentry: matches!(policy, EntryPolicy::Reentry { .. }),
        max_entries: policy.max_entries(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsOut {
    /// From the event; `null` means the doors are open until closing.
    pub doors_open_at: Option<String>,
    /// Effective closing time (the event's end unless set).
    pub doors_close_at: String,
}

impl From<Doors> for SettingsOut {
    fn from(d: Doors) -> Self {
        Self { doors_open_at: d.open_ms.map(ms), doors_close_at: ms(d.close_ms) }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsIn {
    /// `null` resets to the event's end.
    pub doors_close_at: Option<String>,
}

/// Doors times (organizer or staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/checkin/settings", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = SettingsOut), (status = 404, description = "not_found")))]
async fn get_settings(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<SettingsOut>, Problem> {
    Ok(Json(c.doors(&p, id).await.map_err(problem)?.into()))
}

/// Sets when the doors close (organizer). Doors open at the event's `doors_open_at`.
#[utoipa::path(put, path = "/api/v1/events/{id}/checkin/settings", tag = "checkin",
    params(("id" = EventId, Path)), request_body = SettingsIn,
    responses((status = 200, body = SettingsOut), (status = 404, description = "not_found"),
        (status = 422, description = "validation_failed")))]
async fn set_settings(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
    Json(body): Json<SettingsIn>,
) -> Result<Json<SettingsOut>, Problem> {
    let close = body.doors_close_at.as_deref().map(|s| time_field("doors_close_at", s)).transpose()?;
    Ok(Json(c.set_doors_close(&p, id, close).await.map_err(problem)?.into()))
}

// ------------------------------------------------------------------ staff

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStaff {
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffOut {
    pub user_id: String,
    pub display_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffMemberOut {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub added_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffListOut {
    pub staff: Vec<StaffMemberOut>,
}

/// Makes a user access staff of the event (organizer): they may enrol devices and watch attendance.
#[utoipa::path(post, path = "/api/v1/events/{id}/staff", tag = "checkin",
    params(("id" = EventId, Path)), request_body = AddStaff,
    responses((status = 201, body = StaffOut), (status = 404, description = "not_found"),
        (status = 422, description = "unknown_user")))]
async fn add_staff(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    key: MaybeIdempotencyKey,
    Path(id): Path<EventId>,
    Json(body): Json<AddStaff>,
) -> Result<Response, Problem> {
    let route = format!("events/{id}/staff");
    idempotent(&c, &p, &route, key, &body, || async {
        let (user_id, display_name) = c.add_staff(&p, id, &body.email).await.map_err(problem)?;
        Ok((StatusCode::CREATED, to_value(&StaffOut { user_id, display_name })?))
    })
    .await
}

/// The event's access staff (organizer).
#[utoipa::path(get, path = "/api/v1/events/{id}/staff", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = StaffListOut), (status = 404, description = "not_found")))]
async fn list_staff(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<StaffListOut>, Problem> {
    let staff = c.staff(&p, id).await.map_err(problem)?;
    Ok(Json(StaffListOut {
        staff: staff
            .into_iter()
            .map(|(user_id, email, display_name, at)| StaffMemberOut { user_id, email, display_name, added_at: ms(at) })
            .collect(),
    }))
}

/// Removes a staff member (organizer).
#[utoipa::path(delete, path = "/api/v1/events/{id}/staff/{user_id}", tag = "checkin",
    params(("id" = EventId, Path), ("user_id" = UserId, Path)),
    responses((status = 204), (status = 404, description = "not_found")))]
async fn remove_staff(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path((id, user)): Path<(EventId, UserId)>,
) -> Result<StatusCode, Problem> {
    c.remove_staff(&p, id, user).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ devices

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    pub name: String,
    pub gate_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceOut {
    pub id: String,
    pub event_id: String,
    pub name: String,
    pub gate_ids: Vec<String>,
    pub enrolled_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_at: String,
}

impl From<DeviceRow> for DeviceOut {
    fn from(d: DeviceRow) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            name: d.name,
            gate_ids: d.gate_ids,
            enrolled_at: d.enrolled_at.map(ms),
            revoked_at: d.revoked_at.map(ms),
            created_at: ms(d.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewDeviceOut {
    pub device: DeviceOut,
    /// One-time enrolment code, shown only here; stored as a digest.
    pub enrolment_code: String,
    pub enrolment_expires_at: String,
    /// The code as a QR (SVG document) for the scanner's camera.
    pub enrolment_qr_svg: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DevicesOut {
    pub devices: Vec<DeviceOut>,
}

/// Creates a scanner device for some gates (organizer or staff) with a
/// one-time enrolment code. No `Idempotency-Key` replay here: a replay would
/// have to store the one-time code in clear.
#[utoipa::path(post, path = "/api/v1/events/{id}/devices", tag = "checkin",
    params(("id" = EventId, Path)), request_body = CreateDevice,
    responses((status = 201, body = NewDeviceOut), (status = 404, description = "not_found"),
        (status = 422, description = "validation_failed")))]
async fn create_device(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
    Json(body): Json<CreateDevice>,
) -> Result<(StatusCode, Json<NewDeviceOut>), Problem> {
    let d = c.create_device(&p, id, &body.name, &body.gate_ids).await.map_err(problem)?;
    let svg = qr::svg(&d.code).map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(NewDeviceOut {
            device: d.device.into(),
            enrolment_code: d.code,
            enrolment_expires_at: ms(d.expires_at),
            enrolment_qr_svg: svg,
        }),
    ))
}

/// The event's scanner devices (organizer or staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/devices", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = DevicesOut), (status = 404, description = "not_found")))]
async fn list_devices(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<DevicesOut>, Problem> {
    let ds = c.devices(&p, id).await.map_err(problem)?;
    Ok(Json(DevicesOut { devices: ds.into_iter().map(DeviceOut::from).collect() }))
}

/// Revokes a device (organizer): its token is refused at once.
#[utoipa::path(delete, path = "/api/v1/events/{id}/devices/{device_id}", tag = "checkin",
    params(("id" = EventId, Path), ("device_id" = String, Path)),
    responses((status = 204), (status = 404, description = "not_found")))]
async fn revoke_device(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path((id, device)): Path<(EventId, String)>,
) -> Result<StatusCode, Problem> {
    c.revoke_device(&p, id, &device).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolIn {
    pub code: String,
    /// The device's own Ed25519 public key (32 bytes, base64url), optional.
    #[serde(default)]
    pub device_public_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrolOut {
    pub device_id: String,
    pub event_id: String,
    /// Send as `Authorization: Device <token>`; shown only here.
    pub device_token: String,
    pub gate_ids: Vec<String>,
}

/// Exchanges a one-time enrolment code for a device token (no user login).
#[utoipa::path(post, path = "/api/v1/scanner/enrol", tag = "checkin", request_body = EnrolIn,
    responses((status = 201, body = EnrolOut), (status = 401, description = "invalid_enrolment_code")))]
async fn enrol(State(c): State<Checkin>, Json(body): Json<EnrolIn>) -> Result<(StatusCode, Json<EnrolOut>), Problem> {
    let e = c.enrol(&body.code, body.device_public_key.as_deref()).await.map_err(problem)?;
    Ok((
        StatusCode::CREATED,
        Json(EnrolOut { device_id: e.device_id, event_id: e.event_id, device_token: e.token, gate_ids: e.gate_ids }),
    ))
}

// ------------------------------------------------------------------ holder credentials

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeyIn {
    /// The holder device's Ed25519 public key: 32 bytes, base64url.
    pub public_key: String,
}

/// Registers the holder's device key for the ticket's current generation (holder only).
#[utoipa::path(post, path = "/api/v1/tickets/{id}/device-key", tag = "checkin",
    params(("id" = TicketId, Path)), request_body = DeviceKeyIn,
    responses((status = 204), (status = 404, description = "not_found"), (status = 422, description = "validation_failed")))]
async fn register_device_key(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<TicketId>,
    Json(body): Json<DeviceKeyIn>,
) -> Result<StatusCode, Problem> {
    c.register_device_key(&p, id, &body.public_key).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialOut {
    /// `rotating` (the app adds its proof every `step_seconds`) or `static` (printable).
    pub kind: &'static str,
    /// base64url of the COSE_Sign1 bytes.
    pub credential: String,
    pub kid: String,
    pub generation: u32,
    pub not_before: String,
    pub expires_at: String,
    pub step_seconds: i64,
    /// The QR text of a static credential; a rotating one is rendered by the app.
    pub qr_text: Option<String>,
}

impl From<IssuedCredential> for CredentialOut {
    fn from(c: IssuedCredential) -> Self {
        Self {
            kind: if c.rotating { "rotating" } else { "static" },
            qr_text: (!c.rotating).then(|| entrada_credential::encode_static(&c.bytes)),
            credential: B64.encode(&c.bytes),
            kid: c.kid,
            generation: c.generation,
            not_before: ms(c.not_before * 1000),
            expires_at: ms(c.expires_at * 1000),
            step_seconds: entrada_credential::STEP_SECONDS,
        }
    }
}

/// The ticket's signed credential for its current generation (holder only).
#[utoipa::path(get, path = "/api/v1/tickets/{id}/credential", tag = "checkin",
    params(("id" = TicketId, Path)),
    responses((status = 200, body = CredentialOut), (status = 404, description = "not_found"),
        (status = 409, description = "device_key_required | ticket_not_valid")))]
async fn get_credential(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<TicketId>,
) -> Result<Json<CredentialOut>, Problem> {
    Ok(Json(c.credential(&p, id).await.map_err(problem)?.into()))
}

/// The printable ticket's static QR as SVG (holder only). Rotating codes are
/// drawn by the app, which alone holds the device key that signs the proof.
#[utoipa::path(get, path = "/api/v1/tickets/{id}/qr.svg", tag = "checkin",
    params(("id" = TicketId, Path)),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 404, description = "not_found"),
        (status = 409, description = "not_printable | ticket_not_valid")))]
async fn qr_svg(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<TicketId>,
) -> Result<Response, Problem> {
    let cred = c.static_credential(&p, id).await.map_err(problem)?;
    let svg = qr::svg(&entrada_credential::encode_static(&cred.bytes)).map_err(Problem::internal)?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// The printable ticket's static QR as PNG (holder only).
#[utoipa::path(get, path = "/api/v1/tickets/{id}/qr.png", tag = "checkin",
    params(("id" = TicketId, Path)),
    responses((status = 200, content_type = "image/png", body = Vec<u8>), (status = 404, description = "not_found"),
        (status = 409, description = "not_printable | ticket_not_valid")))]
async fn qr_png(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<TicketId>,
) -> Result<Response, Problem> {
    let cred = c.static_credential(&p, id).await.map_err(problem)?;
    let png = qr::png(&entrada_credential::encode_static(&cred.bytes)).map_err(Problem::internal)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

// ------------------------------------------------------------------ scans

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirectionIo {
    #[default]
    In,
    Out,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanIn {
    /// The QR text as read (`EN1:` + base45).
    pub payload: String,
    pub gate_id: String,
    /// Unique per device and scan: a re-upload with the same nonce replays the verdict.
    pub nonce: String,
    /// The device's clock at the scan (RFC 3339); decides offline scans.
    #[serde(default)]
    pub scanned_at: Option<String>,
    #[serde(default)]
    pub direction: DirectionIo,
    /// Decided on the device without the server (uploaded later).
    #[serde(default)]
    pub offline: bool,
    /// For offline scans: whether the device let the person through (default true).
    #[serde(default)]
    pub admitted: Option<bool>,
}

impl ScanIn {
    fn into_request(self, index: Option<usize>) -> Result<ScanRequest, Problem> {
        let scanned_at_ms = match self.scanned_at.as_deref() {
            None => None,
            Some(s) => Some(time_field(if index.is_some() { "scans.scanned_at" } else { "scanned_at" }, s)?),
        };
        Ok(ScanRequest {
            nonce: self.nonce,
            payload: self.payload,
            gate_id: self.gate_id,
            direction: match self.direction {
                DirectionIo::In => Direction::In,
                DirectionIo::Out => Direction::Out,
            },
            scanned_at_ms,
            offline: self.offline,
            admitted: self.admitted,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisplayOut {
    pub ticket_type: String,
    pub holder_display_name: String,
    pub seat: Option<String>,
}

/// The answer to one scan.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictOut {
    pub nonce: String,
    pub ok: bool,
    /// ok, already_used, superseded_generation, wrong_event, wrong_zone, not_yet_open, closed, expired,
    /// bad_signature, stale_proof, clock_skew, unpaid, cancelled, unknown_ticket, gate_not_assigned,
    /// not_inside, and the credential's other codes (malformed, unknown_key, missing_proof, …).
    pub reason: String,
    pub ticket_id: Option<String>,
    pub first_used_at: Option<String>,
    pub first_gate_id: Option<String>,
    pub first_gate: Option<String>,
    pub entries: Option<i64>,
    /// An offline admission that collided with an earlier one (recorded as a conflict).
    pub conflict: bool,
    pub display: Option<DisplayOut>,
}

fn verdict_out(nonce: String, v: Verdict) -> VerdictOut {
    VerdictOut {
        nonce,
        ok: v.ok,
        reason: v.reason,
        ticket_id: v.ticket_id,
        first_used_at: v.first_used_at_ms.map(ms),
        first_gate_id: v.first_gate_id,
        first_gate: v.first_gate,
        entries: v.entries,
        conflict: v.conflict,
        display: v.display.map(|d| DisplayOut {
            ticket_type: d.ticket_type,
            holder_display_name: d.holder_display_name,
            seat: d.seat,
        }),
    }
}

/// Validates one scan online; the admission is durable before the answer.
#[utoipa::path(post, path = "/api/v1/scanner/scan", tag = "checkin", request_body = ScanIn,
    responses((status = 200, body = VerdictOut), (status = 401, description = "device_token_required | device_revoked"),
        (status = 422, description = "validation_failed")))]
async fn scan(
    State(c): State<Checkin>,
    DeviceAuth(device): DeviceAuth,
    Json(body): Json<ScanIn>,
) -> Result<Json<VerdictOut>, Problem> {
    let nonce = body.nonce.clone();
    let v = c.scan(&device, body.into_request(None)?).await.map_err(problem)?;
    Ok(Json(verdict_out(nonce, v)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScansIn {
    /// Up to 500 scans, online or uploaded after an offline period.
    pub scans: Vec<ScanIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScansOut {
    /// One verdict per scan, in order.
    pub verdicts: Vec<VerdictOut>,
}

/// Validates and records up to 500 scans in one transaction.
#[utoipa::path(post, path = "/api/v1/scanner/scans", tag = "checkin", request_body = ScansIn,
    responses((status = 200, body = ScansOut), (status = 401, description = "device_token_required | device_revoked"),
        (status = 422, description = "validation_failed")))]
async fn scan_batch(
    State(c): State<Checkin>,
    DeviceAuth(device): DeviceAuth,
    Json(body): Json<ScansIn>,
) -> Result<Json<ScansOut>, Problem> {
    let nonces: Vec<String> = body.scans.iter().map(|s| s.nonce.clone()).collect();
    let reqs =
        body.scans.into_iter().enumerate().map(|(i, s)| s.into_request(Some(i))).collect::<Result<Vec<_>, _>>()?;
    let vs = c.scan_batch(&device, reqs).await.map_err(problem)?;
    Ok(Json(ScansOut { verdicts: nonces.into_iter().zip(vs).map(|(n, v)| verdict_out(n, v)).collect() }))
}

// ------------------------------------------------------------------ offline bundle

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct BundleQuery {
    /// `next_cursor` of the previous bundle; absent for a full bundle.
    #[serde(default)]
    pub cursor: Option<i64>,
    /// Include the compact list of ticket ids that currently admit.
    #[serde(default)]
    pub include_tickets: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationOut {
    pub ticket_id: String,
    /// Credentials of lower generations no longer admit.
    pub min_generation: i64,
    /// The ticket no longer admits at all.
    pub cancelled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TypeRuleOut {
    pub id: String,
    pub name: String,
    /// Zone names; empty admits everywhere.
    pub zones: Vec<String>,
    pub reentry: bool,
    pub max_entries: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BundleOut {
    pub event_id: EventId,
    pub keys: Vec<JwkOut>,
    pub gates: Vec<GateOut>,
    pub ticket_types: Vec<TypeRuleOut>,
    pub doors_open_at: Option<String>,
    pub doors_close_at: String,
    /// Changes since the cursor (everything without one).
    pub revocations: Vec<RevocationOut>,
    pub valid_ticket_ids: Option<Vec<String>>,
    pub next_cursor: i64,
}

impl From<Bundle> for BundleOut {
    fn from(b: Bundle) -> Self {
        Self {
            event_id: b.event_id,
            keys: b.keys.into_iter().map(JwkOut::from).collect(),
            gates: b.gates.into_iter().map(GateOut::from).collect(),
            ticket_types: b
                .ticket_types
                .into_iter()
                .map(|t| TypeRuleOut {
                    id: t.id,
                    name: t.name,
                    zones: t.zones,
                    reentry: matches!(t.policy, EntryPolicy::Reentry { .. }),
                    max_entries: t.policy.max_entries(),
                })
                .collect(),
            doors_open_at: b.doors.open_ms.map(ms),
            doors_close_at: ms(b.doors.close_ms),
            revocations: b
                .revocations
                .into_iter()
                .map(|(ticket_id, min_generation, cancelled)| RevocationOut { ticket_id, min_generation, cancelled })
                .collect(),
            valid_ticket_ids: b.valid_ticket_ids,
            next_cursor: b.next_cursor,
        }
    }
}

/// The scanner's offline bundle, or the changes since `cursor`.
#[utoipa::path(get, path = "/api/v1/scanner/bundle", tag = "checkin", params(BundleQuery),
    responses((status = 200, body = BundleOut), (status = 401, description = "device_token_required | device_revoked")))]
async fn bundle(
    State(c): State<Checkin>,
    DeviceAuth(device): DeviceAuth,
    Query(q): Query<BundleQuery>,
) -> Result<Json<BundleOut>, Problem> {
    let b = c.bundle(&device, q.cursor, q.include_tickets.unwrap_or(false)).await.map_err(problem)?;
    Ok(Json(b.into()))
}

// ------------------------------------------------------------------ conflicts and attendance

#[derive(Debug, Serialize, ToSchema)]
pub struct ConflictOut {
    pub id: i64,
    pub ticket_id: String,
    pub scan_id: i64,
    pub device_id: String,
    pub gate_id: String,
    pub scanned_at: String,
    pub first_used_at: String,
    pub first_gate_id: String,
    pub detected_at: String,
}

impl From<ConflictRow> for ConflictOut {
    fn from(c: ConflictRow) -> Self {
        Self {
            id: c.id,
            ticket_id: c.ticket_id,
            scan_id: c.scan_id,
            device_id: c.device_id,
            gate_id: c.gate_id,
            scanned_at: ms(c.scanned_at),
            first_used_at: ms(c.first_used_at),
            first_gate_id: c.first_gate_id,
            detected_at: ms(c.detected_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConflictsOut {
    pub conflicts: Vec<ConflictOut>,
}

/// Offline admissions that collided (organizer or staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/checkin/conflicts", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = ConflictsOut), (status = 404, description = "not_found")))]
async fn conflicts(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<ConflictsOut>, Problem> {
    let cs = c.conflicts(&p, id).await.map_err(problem)?;
    Ok(Json(ConflictsOut { conflicts: cs.into_iter().map(ConflictOut::from).collect() }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteCountOut {
    pub minute: String,
    pub id: String,
    pub name: String,
    pub entries: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonCountOut {
    pub reason: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsOut {
    pub at: String,
    pub inside: i64,
    /// Tickets that entered at least once.
    pub admitted_tickets: i64,
    pub entries_per_minute_by_gate: Vec<MinuteCountOut>,
    pub entries_per_minute_by_zone: Vec<MinuteCountOut>,
    pub rejections: Vec<ReasonCountOut>,
    pub conflicts: i64,
}

impl From<Stats> for StatsOut {
    fn from(s: Stats) -> Self {
        let minutes = |v: Vec<(i64, String, String, i64)>| {
            v.into_iter().map(|(m, id, name, entries)| MinuteCountOut { minute: ms(m), id, name, entries }).collect()
        };
        Self {
            at: ms(s.at_ms),
            inside: s.inside,
            admitted_tickets: s.admitted_tickets,
            entries_per_minute_by_gate: minutes(s.per_gate),
            entries_per_minute_by_zone: minutes(s.per_zone),
            rejections: s.rejections.into_iter().map(|(reason, count)| ReasonCountOut { reason, count }).collect(),
            conflicts: s.conflicts,
        }
    }
}

/// Live attendance (organizer or staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/checkin/stats", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, body = StatsOut), (status = 404, description = "not_found")))]
async fn stats(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Json<StatsOut>, Problem> {
    Ok(Json(c.stats(&p, id).await.map_err(problem)?.into()))
}

/// Live attendance as server-sent events: a `stats` event every second and
/// whenever scans are recorded (organizer or staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/checkin/stream", tag = "checkin",
    params(("id" = EventId, Path)),
    responses((status = 200, content_type = "text/event-stream", body = StatsOut), (status = 404, description = "not_found")))]
async fn stats_stream(
    State(c): State<Checkin>,
    AuthUser(p): AuthUser,
    Path(id): Path<EventId>,
) -> Result<Response, Problem> {
    c.access(&p, id).await.map_err(problem)?;
    let rx = c.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((c, id, rx, tick), |(c, id, mut rx, mut tick)| async move {
        tokio::select! {
            _ = tick.tick() => {}
            changed = rx.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
        let event = match c.stats_of(id).await {
            Ok(s) => {
                let out = StatsOut::from(s);
                SseEvent::default()
                    .event("stats")
                    .json_data(&out)
                    .unwrap_or_else(|_| SseEvent::default().comment("unserializable"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "attendance stream: stats failed");
                SseEvent::default().comment("stats unavailable")
            }
        };
        Some((Ok::<_, Infallible>(event), (c, id, rx, tick)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
