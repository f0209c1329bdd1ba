//! The input checks the GraphQL fields and the CSV export share, so the
//! two refuse the same requests with the same codes.

use chrono::{DateTime, Utc};

use crate::domain::reconcile::{Flag, Flags};
use crate::errors::ReadError;
use crate::store::read::billing::LineFilter;

/// The longest window a reconciliation or a read covers.
pub const MAX_WINDOW_DAYS: i64 = 366;
/// Most accounts named at once.
pub const MAX_ACCOUNTS: usize = 1_000;

/// `[from, to)`: both storable, in order, at most [`MAX_WINDOW_DAYS`].
pub fn window(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ReadError> {
    if !crate::time::storable(from) || !crate::time::storable(to) {
        return Err(ReadError::BadWindow(
            "`from` and `to` must lie between the years 1970 and 9999",
        ));
    }
    if from >= to {
        return Err(ReadError::BadWindow("`from` must be before `to`"));
    }
    if to - from > chrono::Duration::days(MAX_WINDOW_DAYS) {
        return Err(ReadError::TooBroad(format!(
            "the window may span at most {MAX_WINDOW_DAYS} days"
        )));
    }
    Ok((from, to))
}

pub fn account_ids(ids: Option<Vec<i32>>) -> Result<Option<Vec<i32>>, ReadError> {
    match ids {
        Some(ids) if ids.len() > MAX_ACCOUNTS => Err(ReadError::TooBroad(format!(
            "at most {MAX_ACCOUNTS} accountIds"
        ))),
        other => Ok(other),
    }
}

/// The lines asked for.
pub fn line_filter(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    accounts: Option<Vec<i32>>,
    user_id: Option<i32>,
    endpoint_id: Option<String>,
    flags: Option<Vec<Flag>>,
) -> Result<LineFilter, ReadError> {
    let (from, to) = window(from, to)?;
    if endpoint_id
        .as_ref()
        .is_some_and(|e| e.chars().count() > 200)
    {
        return Err(ReadError::TooBroad(
            "`endpointId` may have at most 200 characters".into(),
        ));
    }
    Ok(LineFilter {
        from,
        to,
        account_ids: account_ids(accounts)?,
        user_id,
        endpoint_id,
        any_flags: flags.map(|f| Flags::of(&f).bits()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn windows_are_checked() {
        assert!(window(t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z")).is_ok());
        assert!(matches!(
            window(t("2026-02-01T00:00:00Z"), t("2026-01-01T00:00:00Z")),
            Err(ReadError::BadWindow(_))
        ));
        assert!(matches!(
            window(t("2024-01-01T00:00:00Z"), t("2026-01-01T00:00:00Z")),
            Err(ReadError::TooBroad(_))
        ));
        assert!(matches!(
            line_filter(
                t("2026-01-01T00:00:00Z"),
                t("2026-01-02T00:00:00Z"),
                Some(vec![1; 1001]),
                None,
                None,
                None
            ),
            Err(ReadError::TooBroad(_))
        ));
    }

    #[test]
    fn no_flag_named_means_every_line_and_an_empty_list_none() {
        let f = |flags| {
            line_filter(
                t("2026-01-01T00:00:00Z"),
                t("2026-01-02T00:00:00Z"),
                None,
                None,
                None,
                flags,
            )
            .unwrap()
            .any_flags
        };
        assert_eq!(f(None), None);
        assert_eq!(f(Some(vec![])), Some(0));
        assert_eq!(
            f(Some(vec![Flag::UnknownRequest, Flag::CostMismatch])),
            Some(12)
        );
    }
}
