//! The web apps' static files (`web/dist`, embedded at compile time): the fan app at `/` and the scanner app at
//! `/scan`, each a single-page app whose unknown paths fall back to its `index.html`.
//!
//! This is the router's fallback, so every API route keeps priority; an unknown path under `/api`, `/sandbox`
//! or `/.well-known` stays a problem+json 404 rather than an HTML page. Vite's content-hashed files under
//! `assets/` are cached for a year; everything else (index pages, the service workers, the manifests) is
//! revalidated on every load, so a new release is picked up at once.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../web/dist"]
struct Dist;

/// Paths that belong to the API and its neighbours: never answered with an app page.
const API_PREFIXES: &[&str] = &["/api/", "/sandbox/", "/.well-known/", "/assets/"];

const NOT_BUILT: &str = "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport \
content=\"width=device-width\"><title>Entrada</title><body style=\"font-family:sans-serif;max-width:40rem;margin:2rem auto\">\
<h1>Entrada</h1><p>The web apps are not built into this binary. Run <code>scripts/run</code> (it builds them and \
starts the server), or <code>npm ci &amp;&amp; npm run build</code> in <code>web/</code> and then \
<code>cargo run -- serve --demo</code>.</p><p>The API is here: <a href=\"/api/docs\">/api/docs</a>.</p></body></html>";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https:; \
connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; \
frame-ancestors 'none'; form-action 'self'";

fn is_api(path: &str) -> bool {
    path == "/api" || API_PREFIXES.iter().any(|p| path.starts_with(p))
}

fn file(path: &str, immutable: bool) -> Option<Response> {
    let f = Dist::get(path)?;
    let mime = f.metadata.mimetype();
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut res = Response::new(Body::from(f.data.into_owned()));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if mime.starts_with("text/html") {
        // The apps load nothing from elsewhere; only a collectible's art may be an image on another host.
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    if path.ends_with("sw.js") {
        // The scanner's worker lives under /scan/ but the fan app's at the root; each scopes itself.
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    Some(res)
}

/// The router's fallback: an embedded file, an app's `index.html` for its client-side routes, or a problem.
pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if method != Method::GET && method != Method::HEAD {
        return crate::middleware::not_found().await.into_response();
    }
    let rel = path.trim_start_matches('/');
    if !rel.is_empty()
        && !rel.ends_with('/')
        && let Some(res) = file(rel, rel.starts_with("assets/"))
    {
        return res;
    }
    if path == "/scan" {
        // The scanner's service worker scope is `/scan/`; a page outside it could not work offline.
        return axum::response::Redirect::permanent("/scan/").into_response();
    }
    if is_api(path) {
        return crate::middleware::not_found().await.into_response();
    }
    let index = if path == "/scan" || path.starts_with("/scan/") { "scan/index.html" } else { "index.html" };
    if let Some(res) = file(index, false) {
        return res;
    }
    if Dist::get("index.html").is_none() {
        return (StatusCode::OK, [(header::CACHE_CONTROL, "no-cache")], Html(NOT_BUILT)).into_response();
    }
    crate::middleware::not_found().await.into_response()
}

#[cfg(test)]
mod tests {
    use super::is_api;

    /// API paths and their neighbours never fall back to an app page; app routes do.
    #[test]
    fn api_paths_are_not_app_routes() {
        for p in ["/api", "/api/v1/nope", "/sandbox/checkout/x", "/.well-known/jwks.json", "/assets/missing.js"] {
            assert!(is_api(p), "{p}");
        }
        for p in ["/", "/wallet", "/tickets/1", "/scan/", "/scan/gate", "/apiary", "/orders/1"] {
            assert!(!is_api(p), "{p}");
        }
    }
}
