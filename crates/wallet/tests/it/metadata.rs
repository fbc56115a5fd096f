//! Collectible metadata, generated art and organizers' own images: public, cacheable, no
//! personal data, 404 for tokens that were never issued.

use crate::{PUBLIC_URL, spawn};
use serde_json::json;

/// A minimal valid PNG header and a few bytes: enough for the magic-byte check.
fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&[0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
    v
}

/// The token's metadata follows the ERC-721 schema with marketplace attributes, names no
/// holder, is cacheable, and points at the generated art.
#[tokio::test]
async fn token_metadata_follows_the_schema() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (_, serial) = app.ticket(&f, f.fan).await;
    let r = app.send("GET", &format!("/api/v1/nft/{}/{serial}", f.event), None, None).await;
    let m = r.ok(200).clone();
    assert_eq!(r.header("cache-control"), "public, max-age=300");
    assert_eq!(m["name"], json!(format!("Summer <Show> — General admission #{serial}")));
    assert_eq!(m["image"], json!(format!("{PUBLIC_URL}/api/v1/nft/{}/art/{}.svg", f.event, f.ticket_type)));
    assert_eq!(m["external_url"], json!(format!("{PUBLIC_URL}/events/{}", f.event)));
    assert!(m["description"].as_str().unwrap().contains("Arena, Lisbon"));
    let attrs = m["attributes"].as_array().unwrap();
    let trait_of = |t: &str| attrs.iter().find(|a| a["trait_type"] == json!(t)).map(|a| a["value"].clone());
    assert_eq!(trait_of("Event"), Some(json!("Summer <Show>")));
    assert_eq!(trait_of("Date"), Some(json!(1_906_574_400)));
    assert_eq!(trait_of("Venue"), Some(json!("Arena")));
    assert_eq!(trait_of("City"), Some(json!("Lisbon")));
    assert_eq!(trait_of("Ticket type"), Some(json!("General admission")));
    assert_eq!(trait_of("Serial"), Some(json!(serial)));
    assert_eq!(trait_of("Attended"), Some(json!("No")));
    // No personal data: neither the holder's id, name nor email appear.
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(!text.contains(&f.fan.to_string()) && !text.contains("Ana") && !text.contains('@'), "{text}");
}

/// Unknown events, never-issued serials, malformed token ids and draft events are 404
/// problems; the `/attended` document exists only once the ticket was admitted.
#[tokio::test]
async fn unknown_tokens_and_attendance() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (ticket, serial) = app.ticket(&f, f.fan).await;
    let e = &f.event;
    for path in [
        format!("/api/v1/nft/{e}/{}", serial + 1),
        format!("/api/v1/nft/{e}/0"),
        format!("/api/v1/nft/{e}/0{serial}"),
        format!("/api/v1/nft/{e}/-1"),
        format!("/api/v1/nft/{e}/abc"),
        format!("/api/v1/nft/{e}/99999999999999999999999"),
        format!("/api/v1/nft/{}/{serial}", uuid::Uuid::now_v7()),
        format!("/api/v1/nft/{e}/{serial}/attended"),
    ] {
        let r = app.send("GET", &path, None, None).await;
        assert_eq!(r.header("content-type"), "application/problem+json", "{path}");
        r.problem(404, "not_found");
    }
    app.exec(
        "INSERT INTO admissions (ticket_id, event_id, entries, inside, first_used_at, first_gate_id, last_at, \
         last_gate_id) VALUES ($1, $2, 1, TRUE, 0, 'g', 0, 'g')",
        &[&ticket, e],
    )
    .await;
    let r = app.send("GET", &format!("/api/v1/nft/{e}/{serial}/attended"), None, None).await;
    let attrs = r.ok(200)["attributes"].as_array().unwrap().clone();
    assert!(attrs.contains(&json!({ "trait_type": "Attended", "value": "Yes" })), "{attrs:?}");

    app.exec("UPDATE events SET status = 'draft' WHERE id = $1", &[e]).await;
    app.send("GET", &format!("/api/v1/nft/{e}/{serial}"), None, None).await.problem(404, "not_found");
    app.send("GET", &format!("/api/v1/nft/{e}/contract"), None, None).await.problem(404, "not_found");
}

/// Contract-level metadata carries the collection's name, art, link and royalty terms.
#[tokio::test]
async fn contract_metadata() {
    let app = spawn().await;
    let f = app.fixture().await;
    let r = app.send("GET", &format!("/api/v1/nft/{}/contract", f.event), None, None).await;
    let m = r.ok(200);
    assert_eq!(m["name"], json!("Summer <Show>"));
    assert_eq!(m["image"], json!(format!("{PUBLIC_URL}/api/v1/nft/{}/art/event.svg", f.event)));
    assert_eq!(m["external_link"], json!(format!("{PUBLIC_URL}/events/{}", f.event)));
    assert_eq!(m["seller_fee_basis_points"], json!(500));
    assert_eq!(m["fee_recipient"].as_str().unwrap().to_lowercase(), "0x00000000000000000000000000000000000000fe");
    assert!(m["description"].as_str().unwrap().contains("Summer <Show>"));
}

/// The generated art is the same bytes on every request, escapes the event's name, differs
/// per ticket type, and is served so that it cannot run script.
#[tokio::test]
async fn generated_art() {
    let app = spawn().await;
    let f = app.fixture().await;
    let vip = app.ticket_type(&f.event, "VIP").await;
    let path = |tt: &str| format!("/api/v1/nft/{}/art/{tt}.svg", f.event);
    let a = app.send("GET", &path(&f.ticket_type), None, None).await;
    let b = app.send("GET", &path(&f.ticket_type), None, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.bytes, b.bytes);
    assert_eq!(a.header("content-type"), "image/svg+xml");
    assert_eq!(a.header("x-content-type-options"), "nosniff");
    assert!(a.header("content-security-policy").starts_with("default-src 'none'"));
    let svg = String::from_utf8(a.bytes.clone()).unwrap();
    assert!(svg.contains("Summer &lt;Show&gt;") && !svg.contains("<Show>"), "{svg}");
    assert!(svg.contains("General admission"));
    let v = app.send("GET", &path(&vip), None, None).await;
    assert_ne!(v.bytes, a.bytes);
    app.send("GET", &path("event"), None, None).await.ok(200);
    app.send("GET", &path(&uuid::Uuid::now_v7().to_string()), None, None).await.problem(404, "not_found");
    app.send("GET", &path("nope"), None, None).await.problem(404, "not_found");
}

/// An organizer's PNG replaces the generated art in metadata and is served with its own type
/// and an ETag; SVG, mislabelled and oversized uploads are refused; only the event's organizers
/// may upload; removing it brings the generated art back.
#[tokio::test]
async fn organizer_images() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (_, serial) = app.ticket(&f, f.fan).await;
    let art = format!("/api/v1/nft/{}/art/{}", f.event, f.ticket_type);

    // Refusals first: nothing is stored.
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>".to_vec();
    app.send_bytes("PUT", &art, Some(f.organizer), "image/svg+xml", svg.clone())
        .await
        .problem(415, "unsupported_image");
    app.send_bytes("PUT", &art, Some(f.organizer), "image/png", svg).await.problem(415, "unsupported_image");
    app.send_bytes("PUT", &art, Some(f.organizer), "image/jpeg", png()).await.problem(415, "unsupported_image");
    let mut big = png();
    big.resize(600 * 1024, 0);
    app.send_bytes("PUT", &art, Some(f.organizer), "image/png", big).await.problem(413, "image_too_large");
    app.send_bytes("PUT", &art, Some(f.fan), "image/png", png()).await.problem(404, "not_found");
    app.send_bytes("PUT", &art, None, "image/png", png()).await.problem(401, "unauthenticated");
    let viewer = app.user("viewer").await;
    app.exec(
        "INSERT INTO org_members (organization_id, user_id, role, created_at) VALUES ($1, $2, 'viewer', 0)",
        &[&f.org, &viewer.to_db()],
    )
    .await;
    app.send_bytes("PUT", &art, Some(viewer), "image/png", png()).await.problem(404, "not_found");
    app.send("GET", &art, None, None).await.problem(404, "not_found");

    let up = app.send_bytes("PUT", &art, Some(f.organizer), "image/png", png()).await;
    let image_url = up.ok(200)["image"].as_str().unwrap().to_owned();
    assert!(image_url.starts_with(&format!("{PUBLIC_URL}{art}?v=")), "{image_url}");
    let meta = app.send("GET", &format!("/api/v1/nft/{}/{serial}", f.event), None, None).await;
    assert_eq!(meta.ok(200)["image"], json!(image_url));

    let got = app.send("GET", &art, None, None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, png());
    assert_eq!(got.header("content-type"), "image/png");
    let etag = got.header("etag").to_owned();
    let cached = app.send_with("GET", &art, None, None, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", "collectible.image_uploaded").await, 1);

    app.send("DELETE", &art, Some(f.fan), None).await.problem(404, "not_found");
    app.send("DELETE", &art, Some(f.organizer), None).await.ok(204);
    let meta = app.send("GET", &format!("/api/v1/nft/{}/{serial}", f.event), None, None).await;
    assert_eq!(meta.ok(200)["image"], json!(format!("{PUBLIC_URL}{art}.svg")));
}
