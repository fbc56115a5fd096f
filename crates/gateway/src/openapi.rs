//! The parts of the OpenAPI document that no single context can write: the
//! problem+json shape of every error, and the statuses that the shared
//! extractors and layers answer on every route (a bad token, a rate limit,
//! malformed JSON, an unparsable id), so the document lists every status a
//! client can actually receive.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

const PROBLEM_JSON: &str = entrada_primitives::problem::PROBLEM_JSON;

/// Completes the merged document; call after every context's router is in.
pub fn complete(api: &mut OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    if let Some(schema) = problem_schema() {
        components.schemas.insert("Problem".to_owned(), RefOr::T(schema));
    }
    // Routes that allow anonymous access still refuse a bad token, so the
    // bearer scheme is optional everywhere and each route says who may call.
    api.security = Some(vec![SecurityRequirement::default(), SecurityRequirement::new("bearer", Vec::<String>::new())]);
    for item in api.paths.paths.values_mut() {
        let ops = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
            item.head.as_mut(),
            item.options.as_mut(),
            item.trace.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            complete_operation(op);
        }
    }
}

fn complete_operation(op: &mut Operation) {
    let mut has_path = false;
    let mut has_query = false;
    let mut has_idempotency_key = false;
    for p in op.parameters.iter().flatten() {
        if let RefOr::T(p) = p {
            match p.parameter_in {
                ParameterIn::Path => has_path = true,
                ParameterIn::Query => has_query = true,
                ParameterIn::Header if p.name.eq_ignore_ascii_case("idempotency-key") => has_idempotency_key = true,
                _ => {}
            }
        }
    }

    // The gateway's authentication layer refuses a bad token on every route,
    // and the rate limiter and the panic guard sit in front of all of them.
    add(op, "401", &["unauthenticated", "invalid_token"], "missing, invalid or expired access token");
    add(op, "429", &["rate_limited"], "too many requests; see `Retry-After`");
    add(op, "500", &["internal"], "unexpected server error");
    if has_path {
        // An id that cannot parse names nothing, exactly like an unknown one.
        add(op, "404", &["not_found"], "no such resource");
    }
    if has_query {
        add(op, "400", &["invalid_query"], "the query string cannot be read");
        add(op, "422", &["validation_failed"], "a query parameter is out of range");
    }
    if op.request_body.is_some() {
        add(op, "413", &["body_too_large"], "the body is larger than 1 MiB");
    }
    if takes_json_body(op) {
        add(op, "400", &["malformed_json"], "the body is not valid JSON");
        add(op, "415", &["unsupported_media_type"], "the body is not sent as application/json");
        add(op, "422", &["invalid_body"], "the body does not match the schema");
    }
    if has_idempotency_key {
        add(op, "400", &["invalid_idempotency_key"], "the Idempotency-Key header is malformed");
        add(op, "409", &["idempotency_key_in_flight"], "a request with this key is still running");
        add(op, "422", &["idempotency_key_reused"], "this key was used with a different body");
    }
    for (status, response) in op.responses.responses.iter_mut() {
        if let (true, RefOr::T(r)) = (is_error(status), response)
            && (r.content.is_empty() || r.content.keys().all(|k| k == PROBLEM_JSON))
        {
            r.content.insert(PROBLEM_JSON.to_owned(), RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))));
        }
    }
}

/// Whether the operation reads a typed JSON body through the problem+json
/// `Json` extractor (its schema is a named wire type); raw bodies such as
/// signed webhooks are read as bytes and answer their own codes.
fn takes_json_body(op: &Operation) -> bool {
    let Some(RefOr::T(RequestBody { content, .. })) = &op.request_body else {
        return false;
    };
    content.get("application/json").is_some_and(|c| match c {
        RefOr::T(c) => matches!(c.schema, Some(RefOr::Ref(_))),
        RefOr::Ref(_) => false,
    })
}

fn is_error(status: &str) -> bool {
    status.starts_with('4') || status.starts_with('5')
}

/// Documents `codes` under `status`: a new response, or the codes appended
/// to the description of the one the route already declares.
fn add(op: &mut Operation, status: &str, codes: &[&str], why: &str) {
    let listed = codes.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    match op.responses.responses.get_mut(status) {
        Some(RefOr::T(r)) => {
            let missing: Vec<String> =
                codes.iter().filter(|c| !r.description.contains(*c)).map(|c| format!("`{c}`")).collect();
            if !missing.is_empty() {
                r.description = format!("{}; {}", r.description, missing.join(", "));
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            op.responses.responses.insert(status.to_owned(), RefOr::T(Response::new(format!("{listed}: {why}"))));
        }
    }
}

/// RFC 9457 problem details with Entrada's stable `code`; extension members
/// (such as `errors` for field-level failures) may follow.
fn problem_schema() -> Option<Schema> {
    serde_json::from_value(serde_json::json!({
        "type": "object",
        "description": "RFC 9457 problem details; `code` is stable and machine-readable, extension members may follow.",
        "required": ["type", "title", "status", "code"],
        "properties": {
            "type": {"type": "string", "description": "https://entrada.dev/problems/{code}"},
            "title": {"type": "string"},
            "status": {"type": "integer", "description": "the HTTP status"},
            "code": {"type": "string", "description": "stable snake_case error code"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "description": "field-level failures of `validation_failed`",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}}
                }
            }
        },
        "additionalProperties": true
    }))
    .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_problem_schema_parses() {
        assert!(problem_schema().is_some());
    }
}
