//! GraphiQL, served entirely by the gateway: the page and pinned production
//! builds of GraphiQL and React compiled into the binary (see
//! `assets/graphiql/README.md`), so it works without internet and no request
//! leaves the admin's network. A Content-Security-Policy holds the page to
//! its own origin.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::HttpState;

/// The embedded files, by the name the page asks for.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "plugin-explorer.umd.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/plugin-explorer.umd.js"),
    ),
    (
        "plugin-explorer.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/plugin-explorer.css"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/init.js"),
    ),
];

/// Scripts, styles, fonts and connections from the page's own origin only
/// (the fonts are data: URIs inside the stylesheet; GraphiQL sets inline
/// styles).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   font-src 'self' data:; img-src 'self' data:; connect-src 'self' ws: wss:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>points-gateway · GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/graphiql/graphiql.min.css">
<link rel="stylesheet" href="/graphiql/plugin-explorer.css">
<style>
  html, body { height: 100%; margin: 0; }
  body { display: flex; flex-direction: column; font-family: system-ui, sans-serif; }
  #bar { display: flex; gap: 8px; align-items: center; padding: 6px 10px; border-bottom: 1px solid #ddd; font-size: 14px; }
  #token { flex: 1; font-family: monospace; }
  #graphiql { flex: 1; min-height: 0; }
</style>
</head>
<body>
<div id="bar">
  <label for="token">Bearer token</label>
  <input id="token" type="password" autocomplete="off" placeholder="points-gateway token --role admin">
</div>
<div id="graphiql">Loading…</div>
<script src="/graphiql/react.production.min.js"></script>
<script src="/graphiql/react-dom.production.min.js"></script>
<script src="/graphiql/graphiql.min.js"></script>
<script src="/graphiql/plugin-explorer.umd.js"></script>
<script src="/graphiql/init.js"></script>
</body>
</html>
"#;

/// The GraphiQL page.
pub fn page() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// One embedded file, ready to send: gzip-compressed once, on first use,
/// and named by a content hash.
struct Prepared {
    gzip: Vec<u8>,
    etag: String,
}

/// The assets prepared, in [`ASSETS`] order.
fn prepared() -> &'static [Prepared] {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| {
                let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                // Writing to a Vec cannot fail; an empty body would only
                // make the browser fall back to the plain one.
                let gzip = z
                    .write_all(bytes)
                    .and_then(|()| z.finish())
                    .unwrap_or_default();
                let digest = Sha256::digest(bytes);
                Prepared {
                    gzip,
                    etag: format!("\"{}\"", hex::encode(&digest[..12])),
                }
            })
            .collect()
    })
}

/// `/graphiql/{name}`: one embedded file, cached by browsers for a day (the
/// files change only with the binary) and revalidated by its ETag (a 304,
/// nothing sent); gzip-compressed when the browser accepts it (978 KB of
/// scripts are about 270 KB). A full answer spends one token of the
/// client address's anonymous rate, like an anonymous GraphQL request, so
/// one client cannot make the gateway send megabytes in a loop.
pub async fn asset(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (_, content_type, bytes) = ASSETS[i];
    let prepared = &prepared()[i];
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == prepared.etag));
    let common = [
        (header::CACHE_CONTROL, "public, max-age=86400".to_owned()),
        (header::ETAG, prepared.etag.clone()),
        (header::VARY, "accept-encoding".to_owned()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let key = format!("ip:{}", peer.ip());
    if let Err(wait) = s.rate_limiter.check(None, &key, Instant::now()) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
        )
            .into_response();
    }
    let gzip = !prepared.gzip.is_empty()
        && headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut resp = (
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, content_type)],
    )
        .into_response();
    if gzip {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        *resp.body_mut() = Body::from(prepared.gzip.as_slice());
    } else {
        *resp.body_mut() = Body::from(bytes);
    }
    resp
}
