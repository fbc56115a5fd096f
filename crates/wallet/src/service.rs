//! Wallet use cases: the fan's assets, external addresses linked with
//! Sign-In with Ethereum, export of a ticket's token to one of them, and the
//! collectibles' public metadata and images.

use crate::art::{self, ArtText};
use crate::custody::Custody;
use crate::domain::{ImageKind, MAX_IMAGE_BYTES, WalletError, address_from_db, address_to_db};
use crate::siwe::SiweMessage;
use crate::store::{self, EventFacts, ExportRow, LinkRow, NewImage};
use alloy::primitives::Address;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use entrada_identity::membership::{OrgRole, role_of};
use entrada_primitives::clock::{from_ms, rfc3339, to_ms};
use entrada_primitives::ids::{EventId, TicketId, TicketTypeId, UserId};
use entrada_primitives::token::random_bytes;
use entrada_primitives::{Principal, SharedClock};
use entrada_storage::audit::{self, Actor};
use entrada_storage::{Db, DomainEvent, outbox};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

type Result<T, E = WalletError> = std::result::Result<T, E>;

/// Deployment facts the wallet needs.
#[derive(Debug, Clone)]
pub struct WalletConfig {
    /// The deployment's public URL without a trailing slash: the SIWE domain
    /// and URI, and the base of every metadata and image URL.
    pub public_url: String,
    /// The EIP-155 chain id linked addresses are proven on (the chain tokens live on).
    pub chain_id: u64,
    /// How long a link challenge may be answered.
    pub challenge_ttl_ms: i64,
    /// Where ERC-2981 royalties go, shown in the contract-level metadata.
    pub fee_recipient: Option<Address>,
}

impl WalletConfig {
    pub fn new(public_url: &str, chain_id: u64) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            chain_id,
            challenge_ttl_ms: 10 * 60 * 1000,
            fee_recipient: None,
        }
    }

    /// `host[:port]` of the public URL: the EIP-4361 domain.
    pub fn domain(&self) -> &str {
        let rest = self.public_url.split_once("://").map_or(self.public_url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }

    fn scheme(&self) -> Option<&str> {
        self.public_url.split_once("://").map(|(s, _)| s)
    }

    /// `tokenURI` base of an event's collection (the pipeline builds the same string).
    pub fn token_base(&self, event: &str) -> String {
        format!("{}/api/v1/nft/{event}/", self.public_url)
    }
}

/// The wallet service. Cheap to clone.
#[derive(Clone)]
pub struct Wallet {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    clock: SharedClock,
    custody: Custody,
    config: WalletConfig,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").field("custody", &self.inner.custody).finish_non_exhaustive()
    }
}

/// Unanswered, unexpired link challenges one user may have at a time.
const MAX_OPEN_CHALLENGES: i64 = 10;

/// The most tickets the wallet view lists; a fan with more sees the soonest.
const MAX_ASSETS: i64 = 500;

/// The fan's wallet.
#[derive(Debug, Clone)]
pub struct Assets {
    pub custodial_address: Address,
    pub links: Vec<Link>,
    pub tickets: Vec<AssetTicket>,
}

/// A ticket in the wallet with its token facts and its `tokenURI`.
#[derive(Debug, Clone)]
pub struct AssetTicket {
    pub row: store::AssetRow,
    pub metadata_url: String,
}

/// An address challenge: the exact EIP-4361 text to sign.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub nonce: String,
    pub message: String,
    pub expires_at: i64,
}

/// A linked external address.
#[derive(Debug, Clone)]
pub struct Link {
    pub address: Address,
    pub chain_id: u64,
    pub linked_at: i64,
}

/// The outcome of an export.
#[derive(Debug, Clone)]
pub struct Export {
    pub ticket_id: TicketId,
    pub to_address: Address,
    pub generation: i64,
    pub exported_at: i64,
}

/// ERC-721 metadata of one token (serialized in `http.rs`).
#[derive(Debug, Clone)]
pub struct TokenMetadata {
    pub name: String,
    pub description: String,
    pub image: String,
    pub external_url: String,
    pub event_name: String,
    pub starts_at: i64,
    pub venue: String,
    pub city: String,
    pub ticket_type: String,
    pub serial: i64,
    pub attended: bool,
}

/// Contract-level metadata (ERC-7572 / OpenSea `contractURI`).
#[derive(Debug, Clone)]
pub struct ContractMetadata {
    pub name: String,
    pub description: String,
    pub image: String,
    pub external_link: String,
    pub seller_fee_basis_points: i64,
    pub fee_recipient: Option<Address>,
}

/// An image to send: bytes, content type and a strong validator.
#[derive(Debug, Clone)]
pub struct Image {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    pub etag: String,
}

/// Which picture: the collection's, or a ticket type's.
#[derive(Debug, Clone, Copy)]
pub enum ArtSubject {
    Event,
    TicketType(TicketTypeId),
}

impl Wallet {
    pub fn new(db: Db, clock: SharedClock, custody: Custody, config: WalletConfig) -> Self {
        Self { inner: Arc::new(Inner { db, clock, custody, config }) }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    pub fn custody(&self) -> &Custody {
        &self.inner.custody
    }

    pub fn config(&self) -> &WalletConfig {
        &self.inner.config
    }

    // ------------------------------------------------------------------ assets

    /// The fan's wallet: custodial address (created on first need), linked
    /// addresses, and their valid tickets with each token's chain facts.
    pub async fn assets(&self, user: UserId) -> Result<Assets> {
        let custodial_address = self.inner.custody.custodial_address(user).await?;
        let links = self.links(user).await?;
        let rows = store::assets(&self.inner.db, &user.to_db(), MAX_ASSETS).await?;
        let tickets = rows
            .into_iter()
            .map(|r| {
                let mut metadata_url = format!("{}{}", self.inner.config.token_base(&r.event_id), r.serial);
                if r.attended {
                    metadata_url.push_str("/attended");
                }
                AssetTicket { metadata_url, row: r }
            })
            .collect();
        Ok(Assets { custodial_address, links, tickets })
    }

    // ------------------------------------------------------------------ links

    /// Issues a single-use nonce and the exact message `address` should sign.
    pub async fn challenge(&self, p: &Principal, address: Address) -> Result<Challenge> {
        let now = self.inner.clock.now();
        // Open challenges are bounded per user, so a script cannot fill the table.
        if store::open_nonces(&self.inner.db, &p.user_id.to_db(), to_ms(now)).await? >= MAX_OPEN_CHALLENGES {
            return Err(WalletError::TooManyChallenges);
        }
        let nonce = hex::encode(random_bytes::<16>());
        let expires = now + time::Duration::milliseconds(self.inner.config.challenge_ttl_ms);
        let msg = SiweMessage {
            scheme: None,
            domain: self.inner.config.domain().to_owned(),
            address,
            statement: Some("Link this address to your Entrada account. Tickets you export go to it.".into()),
            uri: self.inner.config.public_url.clone(),
            chain_id: self.inner.config.chain_id,
            nonce: nonce.clone(),
            issued_at: now,
            expiration_time: Some(expires),
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        let message = msg.to_string();
        let user = p.user_id.to_db();
        let mut tx = self.inner.db.begin().await?;
        store::insert_nonce(&mut tx, &nonce, &user, &message, to_ms(now), to_ms(expires)).await?;
        audit::record(
            &mut tx,
            to_ms(now),
            &Actor::User(p.user_id),
            "wallet.link_challenge_issued",
            "user",
            &user,
            json!({ "address": address_to_db(&address), "expires_at": to_ms(expires) }),
        )
        .await?;
        tx.commit().await?;
        Ok(Challenge { nonce, message, expires_at: to_ms(expires) })
    }

    /// Verifies a signed EIP-4361 message and links its address to the caller.
    ///
    /// Order: the signature is checked over the exact bytes first (nothing of
    /// an unsigned claim is believed), then every field against this
    /// deployment and the clock, and last the nonce is consumed by one
    /// conditional update in the transaction that stores the link, so a
    /// refused message never burns the nonce and an accepted one can never
    /// be replayed.
    pub async fn link(&self, p: &Principal, message: &str, signature: &str) -> Result<Link> {
        let signer = SiweMessage::recover_signer(message, signature);
        let msg = SiweMessage::parse(message).map_err(|e| WalletError::BadMessage(e.to_string()))?;
        if signer != Some(msg.address) {
            return Err(WalletError::BadSignature);
        }
        let cfg = &self.inner.config;
        if msg.domain != cfg.domain() || msg.scheme.as_deref().is_some_and(|s| Some(s) != cfg.scheme()) {
            return Err(WalletError::WrongDomain(cfg.domain().to_owned()));
        }
        if msg.uri.trim_end_matches('/') != cfg.public_url {
            return Err(WalletError::WrongUri(cfg.public_url.clone()));
        }
        if msg.chain_id != cfg.chain_id {
            return Err(WalletError::WrongChain { got: msg.chain_id, want: cfg.chain_id });
        }
        let now = self.inner.clock.now();
        if msg.expiration_time.is_some_and(|t| t <= now) {
            return Err(WalletError::Expired);
        }
        // A minute of tolerance for the wallet's clock running ahead.
        if msg.not_before.is_some_and(|t| t > now) || msg.issued_at > now + time::Duration::minutes(1) {
            return Err(WalletError::NotYetValid);
        }

        let user = p.user_id.to_db();
        let address = address_to_db(&msg.address);
        let now_ms = to_ms(now);
        let mut tx = self.inner.db.begin().await?;
        if !store::consume_nonce(&mut tx, &msg.nonce, &user, now_ms).await? {
            let why = match store::nonce_state(&mut tx, &msg.nonce).await? {
                Some((owner, _, _)) if owner != user => WalletError::UnknownNonce,
                Some((_, _, Some(_))) => WalletError::NonceUsed,
                Some(_) => WalletError::Expired,
                None => WalletError::UnknownNonce,
            };
            return Err(why);
        }
        let row = LinkRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.clone(),
            address: address.clone(),
            chain_id: i64::try_from(msg.chain_id).unwrap_or(i64::MAX),
            linked_at: now_ms,
        };
        if !store::insert_link(&mut tx, &row).await? {
            let existing = store::link_by_address(&mut tx, &address).await?;
            return match existing {
                Some(l) if l.user_id == user => {
                    tx.commit().await?;
                    link_out(&l)
                }
                _ => Err(WalletError::AddressLinkedElsewhere),
            };
        }
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(p.user_id),
            "wallet.address_linked",
            "user",
            &user,
            json!({ "address": address, "chain_id": msg.chain_id }),
        )
        .await?;
        tx.commit().await?;
        link_out(&row)
    }

    pub async fn links(&self, user: UserId) -> Result<Vec<Link>> {
        store::links_of(&self.inner.db, &user.to_db()).await?.iter().map(link_out).collect()
    }

    /// Removes a link. Tokens already exported stay where they are.
    pub async fn unlink(&self, p: &Principal, address: Address) -> Result<()> {
        let user = p.user_id.to_db();
        let addr = address_to_db(&address);
        let now = self.now_ms();
        let mut tx = self.inner.db.begin().await?;
        if !store::delete_link(&mut tx, &user, &addr).await? {
            return Err(WalletError::NotFound);
        }
        audit::record(
            &mut tx,
            now,
            &Actor::User(p.user_id),
            "wallet.address_unlinked",
            "user",
            &user,
            json!({ "address": addr }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------ export

    /// Takes a ticket's token out to one of the holder's linked addresses.
    ///
    /// One transaction: the guarded generation bump (the old QR stops
    /// admitting, invariant 5), the export row (one per ticket), the
    /// `ticket.exported` event for the chain pipeline, and the audit record.
    /// Another context's ticket row is changed only through that one
    /// conditional update, which names the holder and generation it checked.
    pub async fn export(&self, p: &Principal, ticket: TicketId, to: Address) -> Result<Export> {
        let db = &self.inner.db;
        let user = p.user_id.to_db();
        let tid = ticket.to_db();
        let to_db = address_to_db(&to);
        let now = self.now_ms();
        let mut tx = db.begin().await?;
        let facts = store::export_facts(&mut tx, db, &tid).await?.ok_or(WalletError::NotFound)?;
        // Another fan's ticket is indistinguishable from no ticket (invariant 8).
        if facts.holder_id != user {
            return Err(WalletError::NotFound);
        }
        if facts.status != "valid" {
            return Err(WalletError::TicketNotValid);
        }
        if facts.exported_to.is_some() {
            return Err(WalletError::AlreadyExported);
        }
        if !facts.export_allowed {
            return Err(WalletError::ExportNotAllowed);
        }
        if let Some(after) = facts.export_after
            && now < after
        {
            return Err(WalletError::ExportNotYet(rfc3339(from_ms(after))));
        }
        match store::link_by_address(&mut tx, &to_db).await? {
            Some(l) if l.user_id == user => {}
            _ => return Err(WalletError::AddressNotLinked),
        }
        let generation =
            store::bump_generation(&mut tx, &tid, &user, facts.generation).await?.ok_or(WalletError::TicketChanged)?;
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = store::insert_export(
            &mut tx,
            &ExportRow {
                id: &id,
                ticket_id: &tid,
                event_id: &facts.event_id,
                user_id: &user,
                to_address: &to_db,
                generation,
                created_at: now,
            },
        )
        .await?;
        if !inserted {
            return Err(WalletError::AlreadyExported);
        }
        let event_id: EventId = facts.event_id.parse().map_err(|_| WalletError::Internal("stored event id".into()))?;
        outbox::append(
            &mut tx,
            now,
            &DomainEvent::TicketExported {
                ticket_id: ticket,
                event_id,
                holder: p.user_id,
                to_address: to.to_checksum(None),
                generation,
            },
        )
        .await?;
        audit::record(
            &mut tx,
            now,
            &Actor::User(p.user_id),
            "ticket.exported",
            "ticket",
            &tid,
            json!({ "to_address": to_db, "generation": generation }),
        )
        .await?;
        tx.commit().await?;
        Ok(Export { ticket_id: ticket, to_address: to, generation, exported_at: now })
    }

    // ------------------------------------------------------------------ metadata

    /// Events whose collectibles are public: anything past draft.
    async fn public_event(&self, event: EventId) -> Result<EventFacts> {
        match store::event(&self.inner.db, &event.to_db()).await? {
            Some(e) if e.status != "draft" => Ok(e),
            _ => Err(WalletError::NotFound),
        }
    }

    fn image_url(&self, event: &str, ticket_type: &str, digest: Option<&str>) -> String {
        let base = &self.inner.config.public_url;
        match digest {
            Some(d) => format!("{base}/api/v1/nft/{event}/art/{ticket_type}?v={}", &d[..d.len().min(16)]),
            None => format!("{base}/api/v1/nft/{event}/art/{ticket_type}.svg"),
        }
    }

    /// The metadata `tokenURI` points to. `attended_variant` is the
    /// `/attended` URL the contract switches to after check-in: it exists
    /// only for tickets that were admitted.
    pub async fn token_metadata(&self, event: EventId, token_id: i64, attended_variant: bool) -> Result<TokenMetadata> {
        let e = self.public_event(event).await?;
        let t = store::token(&self.inner.db, &e.id, token_id).await?.ok_or(WalletError::NotFound)?;
        if attended_variant && !t.attended {
            return Err(WalletError::NotFound);
        }
        let digest = store::image_digest(&self.inner.db, &t.ticket_type_id).await?;
        let date = date_text(e.starts_at);
        let place = [e.venue_name.as_str(), e.venue_city.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let mut description =
            format!("Ticket #{} ({}) for {} at {place} on {date}.", t.serial, t.ticket_type_name, e.name);
        if t.attended {
            description.push_str(" Its holder was there.");
        }
        if !e.description.trim().is_empty() {
            description.push_str("\n\n");
            description.push_str(e.description.trim());
        }
        Ok(TokenMetadata {
            name: format!("{} — {} #{}", e.name, t.ticket_type_name, t.serial),
            description,
            image: self.image_url(&e.id, &t.ticket_type_id, digest.as_deref()),
            external_url: format!("{}/events/{}", self.inner.config.public_url, e.id),
            event_name: e.name,
            starts_at: e.starts_at,
            venue: e.venue_name,
            city: e.venue_city,
            ticket_type: t.ticket_type_name,
            serial: t.serial,
            attended: t.attended,
        })
    }

    pub async fn contract_metadata(&self, event: EventId) -> Result<ContractMetadata> {
        let e = self.public_event(event).await?;
        let base = &self.inner.config.public_url;
        let description = if e.description.trim().is_empty() {
            format!(
                "Tickets for {} at {}, {}. Every ticket is a collectible.",
                e.name,
                e.venue_name,
                date_text(e.starts_at)
            )
        } else {
            e.description.trim().to_owned()
        };
        Ok(ContractMetadata {
            name: e.name.clone(),
            description,
            image: format!("{base}/api/v1/nft/{}/art/event.svg", e.id),
            external_link: format!("{base}/events/{}", e.id),
            seller_fee_basis_points: e.royalty_bps.clamp(0, 10_000),
            fee_recipient: self.inner.config.fee_recipient,
        })
    }

    /// The generated SVG of the collection or of a ticket type.
    pub async fn art(&self, event: EventId, subject: ArtSubject) -> Result<String> {
        let e = self.public_event(event).await?;
        let date = date_text(e.starts_at);
        let venue = [e.venue_name.as_str(), e.venue_city.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        match subject {
            ArtSubject::Event => {
                Ok(art::svg(&e.id, &ArtText { event_name: &e.name, ticket_type: None, date: &date, venue: &venue }))
            }
            ArtSubject::TicketType(tt) => {
                let name =
                    store::ticket_type_name(&self.inner.db, &e.id, &tt.to_db()).await?.ok_or(WalletError::NotFound)?;
                let seed = format!("{}/{}", e.id, tt);
                Ok(art::svg(
                    &seed,
                    &ArtText { event_name: &e.name, ticket_type: Some(&name), date: &date, venue: &venue },
                ))
            }
        }
    }

    /// An organizer's uploaded image of a ticket type.
    pub async fn image(&self, event: EventId, ticket_type: TicketTypeId) -> Result<Image> {
        self.public_event(event).await?;
        let row =
            store::image(&self.inner.db, &event.to_db(), &ticket_type.to_db()).await?.ok_or(WalletError::NotFound)?;
        let kind = ImageKind::from_content_type(&row.content_type)
            .ok_or_else(|| WalletError::Internal("stored image type".into()))?;
        let bytes = B64.decode(&row.data).map_err(|_| WalletError::Internal("stored image data".into()))?;
        Ok(Image { content_type: kind.content_type(), bytes, etag: format!("\"{}\"", row.sha256) })
    }

    async fn organizer_of(&self, p: &Principal, event: EventId, ticket_type: TicketTypeId) -> Result<EventFacts> {
        let e = store::event(&self.inner.db, &event.to_db()).await?.ok_or(WalletError::NotFound)?;
        let org = e.organization_id.parse().map_err(|_| WalletError::Internal("stored organization id".into()))?;
        if !matches!(role_of(&self.inner.db, p.user_id, org).await?, Some(OrgRole::Owner | OrgRole::Manager)) {
            return Err(WalletError::NotFound);
        }
        store::ticket_type_name(&self.inner.db, &e.id, &ticket_type.to_db()).await?.ok_or(WalletError::NotFound)?;
        Ok(e)
    }

    /// Replaces a ticket type's generated art with the organizer's own image.
    /// The format is decided by the bytes' magic numbers and must agree with
    /// the declared content type; SVG is refused (it can carry script).
    pub async fn upload_image(
        &self,
        p: &Principal,
        event: EventId,
        ticket_type: TicketTypeId,
        declared: Option<&str>,
        bytes: &[u8],
    ) -> Result<String> {
        self.organizer_of(p, event, ticket_type).await?;
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(WalletError::ImageTooLarge(MAX_IMAGE_BYTES));
        }
        let kind = ImageKind::sniff(bytes).ok_or(WalletError::UnsupportedImage)?;
        if declared.is_some_and(|d| ImageKind::from_content_type(d) != Some(kind)) {
            return Err(WalletError::UnsupportedImage);
        }
        let sha = hex::encode(Sha256::digest(bytes));
        let data = B64.encode(bytes);
        let now = self.now_ms();
        let (eid, tid) = (event.to_db(), ticket_type.to_db());
        let mut tx = self.inner.db.begin().await?;
        store::put_image(
            &mut tx,
            &NewImage {
                ticket_type_id: &tid,
                event_id: &eid,
                content_type: kind.content_type(),
                data: &data,
                sha256: &sha,
                size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
                uploaded_by: &p.user_id.to_db(),
                uploaded_at: now,
            },
        )
        .await?;
        audit::record(
            &mut tx,
            now,
            &Actor::User(p.user_id),
            "collectible.image_uploaded",
            "ticket_type",
            &tid,
            json!({ "content_type": kind.content_type(), "size": bytes.len(), "sha256": sha }),
        )
        .await?;
        tx.commit().await?;
        Ok(self.image_url(&eid, &tid, Some(&sha)))
    }

    /// Goes back to the generated art.
    pub async fn delete_image(&self, p: &Principal, event: EventId, ticket_type: TicketTypeId) -> Result<()> {
        self.organizer_of(p, event, ticket_type).await?;
        let now = self.now_ms();
        let tid = ticket_type.to_db();
        let mut tx = self.inner.db.begin().await?;
        if !store::delete_image(&mut tx, &event.to_db(), &tid).await? {
            return Err(WalletError::NotFound);
        }
        audit::record(
            &mut tx,
            now,
            &Actor::User(p.user_id),
            "collectible.image_removed",
            "ticket_type",
            &tid,
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn link_out(l: &LinkRow) -> Result<Link> {
    Ok(Link {
        address: address_from_db(&l.address)?,
        chain_id: u64::try_from(l.chain_id).unwrap_or_default(),
        linked_at: l.linked_at,
    })
}

/// `YYYY-MM-DD` of an instant, in UTC (the event's own time zone would need a
/// time-zone database; the exact start is in the metadata as a timestamp).
fn date_text(ms: i64) -> String {
    let d = from_ms(ms).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}
