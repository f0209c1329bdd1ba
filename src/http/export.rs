//! `GET /admin/fal-billing.csv`: the reconciled lines as CSV, for admins,
//! streamed a page at a time (bounded memory whatever the window), in the
//! order and with the columns of `falBillingLines`.
//!
//! Query parameters: `from`, `to` (RFC 3339, required), and optionally
//! `accountId`, `flag` (each repeated or comma-separated), `userId`,
//! `endpointId`. Refusals carry the GraphQL error shape and codes.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::HttpState;
use crate::auth::Role;
use crate::domain::reconcile::Flag;
use crate::errors::{ExportError, ReadError};
use crate::store::read::billing::{line_page, LineFilter};
use crate::store::read::{Cursor, Page};

/// Lines per page read from the store (and per chunk sent).
const PAGE: u64 = 1_000;
/// A query string longer than this is refused.
const MAX_QUERY: usize = 8_192;

fn refuse(e: ExportError) -> Response {
    let status = match &e {
        ExportError::Unauthenticated => StatusCode::UNAUTHORIZED,
        ExportError::Forbidden => StatusCode::FORBIDDEN,
        ExportError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        ExportError::Input(_) | ExportError::Read(_) => StatusCode::BAD_REQUEST,
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        super::operation::error_body(&e).to_string(),
    )
        .into_response();
    if let ExportError::RateLimited(secs) = e {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
    }
    resp
}

pub(super) async fn fal_billing_csv(
    State(s): State<HttpState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let caller = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| s.app.keys.verify_header(v));
    let caller = match caller {
        None | Some(Err(_)) => return refuse(ExportError::Unauthenticated),
        Some(Ok(c)) if c.role != Role::Admin => return refuse(ExportError::Forbidden),
        Some(Ok(c)) => c,
    };
    // An export counts as one operation of the admin's rate limit.
    if let Err(wait) = s.rate_limiter.check(
        Some(caller.role),
        &caller.subject_key(),
        std::time::Instant::now(),
    ) {
        return refuse(ExportError::RateLimited(wait.as_secs().max(1)));
    }
    let filter = match parse(q.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let store = s.app.store.clone();
    let ppu = s.app.settings.points_per_usd;
    let header_row = csv_line(crate::reconcile::CSV_COLUMNS.iter().map(|c| c.to_string()));
    // (header sent, cursor, finished)
    let state = (Some(header_row), None::<Cursor>, false);
    let body = futures_util::stream::unfold(state, move |(head, after, done)| {
        let store = store.clone();
        let filter = filter.clone();
        async move {
            if let Some(h) = head {
                return Some((Ok::<Bytes, std::io::Error>(h), (None, after, done)));
            }
            if done {
                return None;
            }
            let page = Page { first: PAGE, after };
            match line_page(&store, &filter, &page).await {
                Ok((rows, more)) => {
                    let next = rows.last().map(|r| Cursor {
                        at: r.line.at,
                        id: r.id,
                    });
                    let mut chunk = Vec::new();
                    for r in &rows {
                        chunk.extend_from_slice(&csv_line(crate::reconcile::csv_record(r, ppu)));
                    }
                    Some((Ok(Bytes::from(chunk)), (None, next, !more)))
                }
                Err(e) => {
                    // The status is sent already: cut the body short, so
                    // the client sees a broken transfer, not a short file.
                    tracing::error!(error = %e, "fal billing export failed");
                    Some((
                        Err(std::io::Error::other("export failed")),
                        (None, None, true),
                    ))
                }
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"fal-billing.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One CSV record with its line end.
fn csv_line(fields: impl IntoIterator<Item = String>) -> Bytes {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail; a record that could not be written
    // would come out empty rather than panic.
    let _ = w.write_record(fields.into_iter().collect::<Vec<_>>());
    Bytes::from(w.into_inner().unwrap_or_default())
}

fn parse(q: &str) -> Result<LineFilter, ExportError> {
    if q.len() > MAX_QUERY {
        return Err(ExportError::Input(format!(
            "the query string may have at most {MAX_QUERY} bytes"
        )));
    }
    let bad = |what: String| ExportError::Input(what);
    let time = |name: &str, v: &str| {
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad(format!("`{name}` must be an RFC 3339 time")))
    };
    let (mut from, mut to, mut user, mut endpoint) = (None, None, None, None);
    let mut accounts: Option<Vec<i32>> = None;
    let mut flags: Option<Vec<Flag>> = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match k.as_ref() {
            "from" => from = Some(time("from", &v)?),
            "to" => to = Some(time("to", &v)?),
            "userId" => {
                user = Some(
                    v.parse::<i32>()
                        .map_err(|_| bad("`userId` must be an integer".into()))?,
                )
            }
            "endpointId" => endpoint = Some(v.into_owned()),
            "accountId" => {
                let list = accounts.get_or_insert_with(Vec::new);
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    list.push(
                        part.parse::<i32>()
                            .map_err(|_| bad("`accountId` must be integers".into()))?,
                    );
                    if list.len() > crate::reconcile::MAX_ACCOUNTS_NAMED {
                        return Err(ReadError::TooBroad(format!(
                            "at most {} accountIds",
                            crate::reconcile::MAX_ACCOUNTS_NAMED
                        ))
                        .into());
                    }
                }
            }
            "flag" => {
                let list = flags.get_or_insert_with(Vec::new);
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    let f = Flag::parse(part).ok_or_else(|| {
                        bad(format!(
                            "`flag` must be one of {}",
                            Flag::ALL.map(|f| f.name()).join(", ")
                        ))
                    })?;
                    if !list.contains(&f) {
                        list.push(f);
                    }
                }
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{}`",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(bad("`from` and `to` are required".into()));
    };
    Ok(crate::reconcile::line_filter(
        from, to, accounts, user, endpoint, flags,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::{Code, Coded};

    #[test]
    fn parameters_parse_repeated_or_comma_separated() {
        let f = parse(
            "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00%2B08:00&accountId=1,2&accountId=3\
             &flag=UNKNOWN_REQUEST&flag=COST_MISMATCH,UNKNOWN_REQUEST&userId=7&endpointId=fal-ai%2Fflux%2Fdev",
        )
        .unwrap();
        assert_eq!(f.account_ids, Some(vec![1, 2, 3]));
        assert_eq!(f.any_flags, Some(12));
        assert_eq!(f.user_id, Some(7));
        assert_eq!(f.endpoint_id.as_deref(), Some("fal-ai/flux/dev"));
        assert_eq!(f.to.to_rfc3339(), "2026-01-31T16:00:00+00:00");
    }

    #[test]
    fn bad_parameters_are_refused_with_codes() {
        let code = |q: &str| parse(q).unwrap_err().code();
        assert_eq!(code("to=2026-01-01T00:00:00Z"), Code::InvalidInput);
        assert_eq!(
            code("from=yesterday&to=2026-01-01T00:00:00Z"),
            Code::InvalidInput
        );
        assert_eq!(
            code("from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&flag=LOSS"),
            Code::InvalidInput
        );
        assert_eq!(
            code("from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&x=1"),
            Code::InvalidInput
        );
        assert_eq!(
            code("from=2020-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"),
            Code::LimitExceeded
        );
        assert_eq!(code(&"a".repeat(9_000)), Code::InvalidInput);
    }

    #[test]
    fn fields_with_commas_and_quotes_are_quoted() {
        let l = csv_line(["a,b".to_string(), "say \"hi\"".to_string(), "c".to_string()]);
        assert_eq!(&l[..], b"\"a,b\",\"say \"\"hi\"\"\",c\n");
    }
}
