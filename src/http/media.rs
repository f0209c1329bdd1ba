//! GraphQL-over-HTTP media types: which one a client accepts, whether a
//! POST body is one we read, and the status code each outcome gets.

use axum::http::{header, HeaderMap, StatusCode};

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
pub const JSON: &str = "application/json; charset=utf-8";

/// The response media type chosen from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/graphql-response+json`: 4xx for request errors.
    GraphqlResponse,
    /// `application/json`: 200 for every well-formed request (legacy clients).
    Json,
}

impl Media {
    pub fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
            Media::Json => JSON,
        }
    }

    /// Status of a GraphQL response: under `graphql-response+json` a request
    /// error (no `data` entry: unparsable, invalid, or rejected before
    /// execution) is 400; under `application/json` every well-formed request
    /// is 200.
    pub fn status(self, request_error: bool) -> StatusCode {
        match (self, request_error) {
            (Media::GraphqlResponse, true) => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        }
    }
}

/// Picks the response media type, or `None` (406) when the client accepts
/// neither. No `Accept` means `application/json`, as the spec asks of
/// servers that still serve legacy clients; so does `*/*`.
pub fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Some(Media::Json);
    };
    let Ok(accept) = accept.to_str() else {
        return None;
    };
    let mut best: Option<(Media, f32, u8)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|v| v.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        // (media, specificity): an exact match beats a wildcard at equal q.
        let candidate = match range.as_str() {
            "application/graphql-response+json" => Some((Media::GraphqlResponse, 3)),
            "application/json" => Some((Media::Json, 3)),
            "application/*" | "*/*" => Some((Media::Json, 1)),
            _ => None,
        };
        if let Some((m, spec)) = candidate {
            let better = match best {
                None => true,
                Some((_, bq, bs)) => q > bq || (q == bq && spec > bs),
            };
            if better {
                best = Some((m, q, spec));
            }
        }
    }
    best.map(|(m, _, _)| m)
}

/// A POST body must be declared `application/json` (any charset param).
pub fn is_json_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t == "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> Option<Media> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        negotiate(&h)
    }

    #[test]
    fn accept_negotiation_follows_the_spec() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(Media::Json));
        assert_eq!(
            accept("application/graphql-response+json"),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(accept("application/json"), Some(Media::Json));
        assert_eq!(
            accept("application/graphql-response+json, application/json;q=0.9"),
            Some(Media::GraphqlResponse)
        );
        assert_eq!(
            accept("application/graphql-response+json;q=0.5, application/json"),
            Some(Media::Json)
        );
        assert_eq!(accept("*/*"), Some(Media::Json));
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("application/graphql-response+json;q=0"), None);
    }

    #[test]
    fn only_json_bodies_are_read() {
        let mut h = HeaderMap::new();
        assert!(!is_json_body(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json_body(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json_body(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        assert!(!is_json_body(&h));
    }
}
