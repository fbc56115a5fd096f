//! The wallet's HTTP surface: wire types, handlers and the one mapping from
//! [`WalletError`] to problem+json. Nothing here ever carries key material.

use crate::domain::{MAX_IMAGE_BYTES, WalletError, parse_address};
use crate::service::{ArtSubject, AssetTicket, ContractMetadata, Link, TokenMetadata, Wallet};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use entrada_primitives::clock::{from_ms, rfc3339};
use entrada_primitives::extract::{Json, MaybeIdempotencyKey, Path};
use entrada_primitives::ids::{EventId, TicketId, TicketTypeId};
use entrada_primitives::{AuthUser, Principal, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::future::Future;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// All wallet endpoints, state applied.
pub fn router(wallet: Wallet) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(my_wallet))
        .routes(routes!(challenge))
        .routes(routes!(link))
        .routes(routes!(unlink))
        .routes(routes!(export))
        .routes(routes!(contract_metadata))
        .routes(routes!(token_metadata))
        .routes(routes!(attended_metadata))
        .routes(routes!(art, upload_image, delete_image))
        .with_state(wallet)
}

/// The one place wallet errors become HTTP problems.
pub fn problem(e: WalletError) -> Problem {
    use WalletError as E;
    let detail = e.to_string();
    match e {
        E::NotFound => Problem::not_found("not_found", "no such resource"),
        E::Validation { field, message } => Problem::invalid_field(field, message),
        E::BadMessage(_) => Problem::unprocessable("invalid_siwe_message", detail),
        E::WrongDomain(_) => Problem::unprocessable("siwe_wrong_domain", detail),
        E::WrongUri(_) => Problem::unprocessable("siwe_wrong_uri", detail),
        E::WrongChain { .. } => Problem::unprocessable("siwe_wrong_chain", detail),
        E::TooManyChallenges => Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_challenges", detail),
        E::UnknownNonce => Problem::unprocessable("siwe_unknown_nonce", detail),
        E::NonceUsed => Problem::conflict("siwe_nonce_used", detail),
        E::Expired => Problem::unprocessable("siwe_expired", detail),
        E::NotYetValid => Problem::unprocessable("siwe_not_yet_valid", detail),
        E::BadSignature => Problem::unprocessable("siwe_bad_signature", detail),
        E::AddressLinkedElsewhere => Problem::conflict("address_linked_elsewhere", detail),
        E::AddressNotLinked => Problem::unprocessable("address_not_linked", detail),
        E::ExportNotAllowed => Problem::conflict("export_not_allowed", detail),
        E::ExportNotYet(_) => Problem::conflict("export_not_yet", detail),
        E::TicketNotValid => Problem::conflict("ticket_not_valid", detail),
        E::AlreadyExported => Problem::conflict("already_exported", detail),
        E::TicketChanged => Problem::conflict("ticket_changed", detail),
        E::UnsupportedImage => Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image", detail),
        E::ImageTooLarge(_) => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", detail),
        // Key errors name at most a master key id; still, they are internal.
        E::Key(err) => Problem::internal(err),
        E::Storage(err) => Problem::internal(err),
        E::Internal(msg) => Problem::internal(msg),
    }
}

fn ms(t: i64) -> String {
    rfc3339(from_ms(t))
}

/// Runs a creating handler under `Idempotency-Key`.
async fn idempotent<B, F, Fut>(
    w: &Wallet,
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
    let out = entrada_storage::idempotency::run(w.db(), w.now_ms(), &scope, key.0.as_ref(), &bytes, f).await?;
    Ok((out.status, Json(out.body)).into_response())
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, Problem> {
    serde_json::to_value(v).map_err(Problem::internal)
}

// ------------------------------------------------------------------ assets

/// A linked external address.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkOut {
    /// EIP-55 checksummed.
    pub address: String,
    pub chain_id: u64,
    pub linked_at: String,
}

impl From<&Link> for LinkOut {
    fn from(l: &Link) -> Self {
        Self { address: l.address.to_checksum(None), chain_id: l.chain_id, linked_at: ms(l.linked_at) }
    }
}

/// A ticket's token.
#[derive(Debug, Serialize, ToSchema)]
pub struct NftOut {
    /// `embedded` or `rpc`; absent until the collection is planned.
    pub chain: Option<String>,
    pub chain_id: Option<i64>,
    /// The event's collection (EIP-55); absent until planned.
    pub contract: Option<String>,
    /// The token id (the ticket's serial), decimal.
    pub token_id: String,
    /// `pending`, `submitted`, `confirmed` or `burned`.
    pub status: String,
    /// Where the token is (or is being minted to).
    pub owner: Option<String>,
    /// The mint transaction.
    pub tx_hash: Option<String>,
    /// What the contract's `tokenURI` returns.
    pub metadata_url: String,
    /// A linked address the token was exported to.
    pub exported_to: Option<String>,
}

/// A ticket in the wallet.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetOut {
    pub ticket_id: String,
    pub event_id: String,
    pub event_name: String,
    pub starts_at: String,
    pub venue: String,
    pub ticket_type_id: String,
    pub ticket_type: String,
    /// The holder generation: credentials of older generations no longer admit.
    pub generation: i64,
    pub nft: NftOut,
}

fn checksummed(s: Option<String>) -> Option<String> {
    s.map(|v| v.parse::<alloy::primitives::Address>().map_or(v, |a| a.to_checksum(None)))
}

impl From<AssetTicket> for AssetOut {
    fn from(a: AssetTicket) -> Self {
        let r = a.row;
        Self {
            nft: NftOut {
                chain: r.network,
                chain_id: r.chain_id,
                contract: checksummed(r.contract),
                token_id: r.serial.to_string(),
                status: r.token_state.unwrap_or_else(|| "pending".into()),
                owner: checksummed(r.owner_address),
                tx_hash: r.tx_hash,
                metadata_url: a.metadata_url,
                exported_to: checksummed(r.exported_to),
            },
            ticket_id: r.ticket_id,
            event_id: r.event_id,
            event_name: r.event_name,
            starts_at: ms(r.starts_at),
            venue: r.venue_name,
            ticket_type_id: r.ticket_type_id,
            ticket_type: r.ticket_type_name,
            generation: r.generation,
        }
    }
}

/// The fan's wallet: their custodial address, linked addresses and tickets.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletOut {
    /// The address Entrada holds tokens at for this fan (EIP-55). The
    /// platform keeps its key and pays every fee.
    pub custodial_address: String,
    pub links: Vec<LinkOut>,
    /// Valid tickets, soonest event first (at most 500).
    pub tickets: Vec<AssetOut>,
}

/// The caller's wallet with each ticket's token. The custodial address is created on first use.
#[utoipa::path(get, path = "/api/v1/me/wallet", tag = "wallet",
    responses((status = 200, body = WalletOut), (status = 401, description = "unauthenticated")))]
async fn my_wallet(State(w): State<Wallet>, AuthUser(p): AuthUser) -> Result<Json<WalletOut>, Problem> {
    let a = w.assets(p.user_id).await.map_err(problem)?;
    Ok(Json(WalletOut {
        custodial_address: a.custodial_address.to_checksum(None),
        links: a.links.iter().map(LinkOut::from).collect(),
        tickets: a.tickets.into_iter().map(AssetOut::from).collect(),
    }))
}

// ------------------------------------------------------------------ links

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeIn {
    /// The external address to link (0x + 40 hex digits).
    pub address: String,
}

/// What the wallet app asks the external wallet to sign.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeOut {
    pub nonce: String,
    /// The exact EIP-4361 text to sign with `personal_sign`.
    pub message: String,
    pub expires_at: String,
}

/// Starts linking an external address: a single-use nonce and the EIP-4361 message to sign.
#[utoipa::path(post, path = "/api/v1/me/wallet/links/challenge", tag = "wallet", request_body = ChallengeIn,
    responses((status = 201, body = ChallengeOut), (status = 401, description = "unauthenticated"),
        (status = 422, description = "validation_failed"), (status = 429, description = "too_many_challenges")))]
async fn challenge(
    State(w): State<Wallet>,
    AuthUser(p): AuthUser,
    Json(body): Json<ChallengeIn>,
) -> Result<(StatusCode, Json<ChallengeOut>), Problem> {
    let address = parse_address("address", &body.address).map_err(problem)?;
    let c = w.challenge(&p, address).await.map_err(problem)?;
    Ok((StatusCode::CREATED, Json(ChallengeOut { nonce: c.nonce, message: c.message, expires_at: ms(c.expires_at) })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkIn {
    /// The signed EIP-4361 message, exactly as signed.
    pub message: String,
    /// The 65-byte EIP-191 signature, 0x-hex.
    pub signature: String,
}

/// Links an external address: verifies the signed Sign-In with Ethereum message (domain, URI,
/// chain, single-use nonce, times, signer).
#[utoipa::path(post, path = "/api/v1/me/wallet/links", tag = "wallet", request_body = LinkIn,
    responses((status = 201, body = LinkOut), (status = 401, description = "unauthenticated"),
        (status = 409, description = "siwe_nonce_used | address_linked_elsewhere"),
        (status = 422, description = "invalid_siwe_message | siwe_wrong_domain | siwe_wrong_uri | siwe_wrong_chain | \
            siwe_unknown_nonce | siwe_expired | siwe_not_yet_valid | siwe_bad_signature")))]
async fn link(
    State(w): State<Wallet>,
    AuthUser(p): AuthUser,
    key: MaybeIdempotencyKey,
    Json(body): Json<LinkIn>,
) -> Result<Response, Problem> {
    if body.message.len() > 4096 {
        return Err(Problem::invalid_field("message", "must be at most 4096 bytes"));
    }
    idempotent(&w, &p, "me/wallet/links", key, &body, || async {
        let l = w.link(&p, &body.message, &body.signature).await.map_err(problem)?;
        Ok((StatusCode::CREATED, to_value(&LinkOut::from(&l))?))
    })
    .await
}

/// Unlinks an external address. Tokens already exported to it stay there.
#[utoipa::path(delete, path = "/api/v1/me/wallet/links/{address}", tag = "wallet",
    params(("address" = String, Path)),
    responses((status = 204), (status = 401, description = "unauthenticated"), (status = 404, description = "not_found")))]
async fn unlink(
    State(w): State<Wallet>,
    AuthUser(p): AuthUser,
    Path(address): Path<String>,
) -> Result<StatusCode, Problem> {
    let address = parse_address("address", &address).map_err(|_| problem(WalletError::NotFound))?;
    w.unlink(&p, address).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ export

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportIn {
    /// One of the caller's linked addresses.
    pub address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportOut {
    pub ticket_id: TicketId,
    pub to_address: String,
    /// The ticket's new holder generation: credentials of older generations stop admitting.
    pub generation: i64,
    pub exported_at: String,
    /// The on-chain transfer follows asynchronously; the wallet view shows its progress.
    pub status: &'static str,
}

/// Exports the ticket's token to one of the holder's linked addresses, when the event allows it.
#[utoipa::path(post, path = "/api/v1/tickets/{id}/export", tag = "wallet", request_body = ExportIn,
    params(("id" = TicketId, Path)),
    responses((status = 201, body = ExportOut), (status = 401, description = "unauthenticated"),
        (status = 404, description = "not_found"),
        (status = 409, description = "export_not_allowed | export_not_yet | ticket_not_valid | already_exported | ticket_changed"),
        (status = 422, description = "address_not_linked | validation_failed")))]
async fn export(
    State(w): State<Wallet>,
    AuthUser(p): AuthUser,
    key: MaybeIdempotencyKey,
    Path(id): Path<TicketId>,
    Json(body): Json<ExportIn>,
) -> Result<Response, Problem> {
    let to = parse_address("address", &body.address).map_err(problem)?;
    let route = format!("tickets/{id}/export");
    idempotent(&w, &p, &route, key, &body, || async {
        let x = w.export(&p, id, to).await.map_err(problem)?;
        Ok((
            StatusCode::CREATED,
            to_value(&ExportOut {
                ticket_id: x.ticket_id,
                to_address: x.to_address.to_checksum(None),
                generation: x.generation,
                exported_at: ms(x.exported_at),
                status: "pending",
            })?,
        ))
    })
    .await
}

// ------------------------------------------------------------------ metadata

/// Cached by marketplaces and wallets: a few minutes, since a ticket type's
/// image can be replaced; attendance changes the URL, not this document.
const METADATA_CACHE: &str = "public, max-age=300";

fn cached_json(v: Value) -> Response {
    ([(header::CACHE_CONTROL, METADATA_CACHE)], Json(v)).into_response()
}

/// A token id as the contract's `tokenURI` prints it: decimal, no sign, no
/// leading zeros. Anything else names no token (404, like an unknown one).
fn token_id(s: &str) -> Result<i64, Problem> {
    let ok =
        !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) && !(s.len() > 1 && s.starts_with('0'));
    match s.parse::<i64>() {
        Ok(n) if ok && n > 0 => Ok(n),
        _ => Err(problem(WalletError::NotFound)),
    }
}

fn token_json(m: TokenMetadata) -> Value {
    let mut attributes = vec![
        json!({ "trait_type": "Event", "value": m.event_name }),
        json!({ "trait_type": "Date", "display_type": "date", "value": m.starts_at / 1000 }),
        json!({ "trait_type": "Venue", "value": m.venue }),
    ];
    if !m.city.is_empty() {
        attributes.push(json!({ "trait_type": "City", "value": m.city }));
    }
    attributes.push(json!({ "trait_type": "Ticket type", "value": m.ticket_type }));
    attributes.push(json!({ "trait_type": "Serial", "display_type": "number", "value": m.serial }));
    attributes.push(json!({ "trait_type": "Attended", "value": if m.attended { "Yes" } else { "No" } }));
    json!({
        "name": m.name,
        "description": m.description,
        "image": m.image,
        "external_url": m.external_url,
        "attributes": attributes,
    })
}

/// ERC-721 metadata JSON of a ticket's token (what `tokenURI` points to). Public, no personal data.
#[utoipa::path(get, path = "/api/v1/nft/{event_id}/{token_id}", tag = "collectibles",
    params(("event_id" = EventId, Path), ("token_id" = String, Path, description = "the ticket's serial")),
    responses((status = 200, description = "ERC-721 metadata JSON", body = Object), (status = 404, description = "not_found")))]
async fn token_metadata(
    State(w): State<Wallet>,
    Path((event_id, token)): Path<(EventId, String)>,
) -> Result<Response, Problem> {
    let m = w.token_metadata(event_id, token_id(&token)?, false).await.map_err(problem)?;
    Ok(cached_json(token_json(m)))
}

/// The token's metadata after check-in (the contract points here once the ticket is marked attended).
#[utoipa::path(get, path = "/api/v1/nft/{event_id}/{token_id}/attended", tag = "collectibles",
    params(("event_id" = EventId, Path), ("token_id" = String, Path, description = "the ticket's serial")),
    responses((status = 200, description = "ERC-721 metadata JSON", body = Object), (status = 404, description = "not_found")))]
async fn attended_metadata(
    State(w): State<Wallet>,
    Path((event_id, token)): Path<(EventId, String)>,
) -> Result<Response, Problem> {
    let m = w.token_metadata(event_id, token_id(&token)?, true).await.map_err(problem)?;
    Ok(cached_json(token_json(m)))
}

fn contract_json(m: ContractMetadata) -> Value {
    let mut v = json!({
        "name": m.name,
        "description": m.description,
        "image": m.image,
        "external_link": m.external_link,
        "seller_fee_basis_points": m.seller_fee_basis_points,
    });
    if let Some(r) = m.fee_recipient {
        v["fee_recipient"] = json!(r.to_checksum(None));
    }
    v
}

/// Contract-level metadata of an event's collection (`contractURI`).
#[utoipa::path(get, path = "/api/v1/nft/{event_id}/contract", tag = "collectibles",
    params(("event_id" = EventId, Path)),
    responses((status = 200, description = "contract metadata JSON", body = Object), (status = 404, description = "not_found")))]
async fn contract_metadata(State(w): State<Wallet>, Path(event_id): Path<EventId>) -> Result<Response, Problem> {
    let m = w.contract_metadata(event_id).await.map_err(problem)?;
    Ok(cached_json(contract_json(m)))
}

/// Generated art (`event.svg`, `{ticket_type_id}.svg`) or an organizer's uploaded image
/// (`{ticket_type_id}`).
#[utoipa::path(get, path = "/api/v1/nft/{event_id}/art/{file}", tag = "collectibles",
    params(("event_id" = EventId, Path), ("file" = String, Path, description = "`event.svg`, `{ticket_type_id}.svg` or `{ticket_type_id}`")),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 304), (status = 404, description = "not_found")))]
async fn art(
    State(w): State<Wallet>,
    Path((event_id, file)): Path<(EventId, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if let Some(stem) = file.strip_suffix(".svg") {
        let subject = if stem == "event" {
            ArtSubject::Event
        } else {
            ArtSubject::TicketType(stem.parse().map_err(|_| problem(WalletError::NotFound))?)
        };
        let svg = w.art(event_id, subject).await.map_err(problem)?;
        return Ok((
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Opened directly, the document may draw but never run anything.
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
            ],
            svg,
        )
            .into_response());
    }
    let tt: TicketTypeId = file.parse().map_err(|_| problem(WalletError::NotFound))?;
    let img = w.image(event_id, tt).await.map_err(problem)?;
    let etag = HeaderValue::from_str(&img.etag).map_err(Problem::internal)?;
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == img.etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(img.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::ETAG, etag),
        ],
        img.bytes,
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageOut {
    /// The URL metadata now points to for this ticket type.
    pub image: String,
}

/// Replaces a ticket type's generated art with the organizer's own PNG, JPEG or WebP image
/// (raw bytes as the body; SVG is refused). Organizers (owner, manager) of the event's
/// organization only.
#[utoipa::path(put, path = "/api/v1/nft/{event_id}/art/{file}", tag = "collectibles",
    params(("event_id" = EventId, Path), ("file" = String, Path, description = "the ticket type id")),
    request_body(content = Vec<u8>, content_type = "image/png"),
    responses((status = 200, body = ImageOut), (status = 401, description = "unauthenticated"),
        (status = 404, description = "not_found"), (status = 413, description = "image_too_large"),
        (status = 415, description = "unsupported_image")))]
async fn upload_image(
    State(w): State<Wallet>,
    AuthUser(p): AuthUser,
    Path((event_id, file)): Path<(EventId, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImageOut>, Problem> {
    let tt: TicketTypeId = file.parse().map_err(|_| problem(WalletError::NotFound))?;
    if body.len() > MAX_IMAGE_BYTES {
        return Err(problem(WalletError::ImageTooLarge(MAX_IMAGE_BYTES)));
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
    let image = w.upload_image(&p, event_id, tt, declared.as_deref(), &body).await.map_err(problem)?;
    Ok(Json(ImageOut { image }))
}

/// Removes the organizer's image: metadata points to the generated art again.
#[utoipa::path(delete, path = "/api/v1/nft/{event_id}/art/{file}", tag = "collectibles",
    params(("event_id" = EventId, Path), ("file" = String, Path, description = "the ticket type id")),
    responses((status = 204), (status = 401, description = "unauthenticated"), (status = 404, description = "not_found")))]
async fn delete_image(
    State(w): State<Wallet>,
    AuthUser(p): AuthUser,
    Path((event_id, file)): Path<(EventId, String)>,
) -> Result<StatusCode, Problem> {
    let tt: TicketTypeId = file.parse().map_err(|_| problem(WalletError::NotFound))?;
    w.delete_image(&p, event_id, tt).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}
