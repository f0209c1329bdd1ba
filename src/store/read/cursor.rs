//! Opaque keyset cursors on `(created_at, id)`, newest first.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};

pub const DEFAULT_PAGE: u64 = 20;
pub const MAX_PAGE: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("`after` is not a cursor this API issued")]
    Malformed,
    #[error("`first` must be between 1 and {MAX_PAGE}")]
    PageSize,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at.timestamp_micros(), self.id))
    }

    pub fn decode(s: &str) -> Result<Cursor, CursorError> {
        let raw = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CursorError::Malformed)?;
        let text = String::from_utf8(raw).map_err(|_| CursorError::Malformed)?;
        let (micros, id) = text.split_once(':').ok_or(CursorError::Malformed)?;
        let micros: i64 = micros.parse().map_err(|_| CursorError::Malformed)?;
        let id: i64 = id.parse().map_err(|_| CursorError::Malformed)?;
        let at = DateTime::from_timestamp_micros(micros)
            .filter(|t| crate::time::storable(*t))
            .ok_or(CursorError::Malformed)?;
        Ok(Cursor { at, id })
    }
}

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub first: u64,
    pub after: Option<Cursor>,
}

impl Page {
    pub fn new(first: Option<i32>, after: Option<&str>) -> Result<Page, CursorError> {
        let first = match first {
            None => DEFAULT_PAGE,
            Some(n) if n >= 1 && (n as u64) <= MAX_PAGE => n as u64,
            Some(_) => return Err(CursorError::PageSize),
        };
        let after = after.map(Cursor::decode).transpose()?;
        Ok(Page { first, after })
    }

    /// Applies the keyset condition, the newest-first order and `first + 1`
    /// (the extra row tells whether there is a next page).
    pub fn apply<E: EntityTrait>(
        &self,
        sel: Select<E>,
        created: impl ColumnTrait,
        id: impl ColumnTrait,
    ) -> Select<E> {
        self.apply_with(sel, created, id, |t| t.into())
    }

    /// [`Page::apply`] on a ts platform table, whose times are naive local
    /// time in `zone`.
    pub fn apply_local<E: EntityTrait>(
        &self,
        sel: Select<E>,
        zone: chrono_tz::Tz,
        created: impl ColumnTrait,
        id: impl ColumnTrait,
    ) -> Select<E> {
        self.apply_with(sel, created, id, |t| {
            entity::legacy_time::LocalTime::of(t, zone).into()
        })
    }

    fn apply_with<E: EntityTrait>(
        &self,
        sel: Select<E>,
        created: impl ColumnTrait,
        id: impl ColumnTrait,
        value: impl Fn(DateTime<Utc>) -> sea_orm::Value,
    ) -> Select<E> {
        let sel = match self.after {
            Some(c) => sel.filter(
                Condition::any().add(created.lt(value(c.at))).add(
                    Condition::all()
                        .add(created.eq(value(c.at)))
                        .add(id.lt(c.id)),
                ),
            ),
            None => sel,
        };
        sel.order_by_desc(created)
            .order_by_desc(id)
            .limit(self.first + 1)
    }

    /// Splits the fetched rows into the page and whether more follow.
    pub fn finish<T>(&self, mut rows: Vec<T>) -> (Vec<T>, bool) {
        let more = rows.len() as u64 > self.first;
        rows.truncate(self.first as usize);
        (rows, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert_eq!(Cursor::decode("!!"), Err(CursorError::Malformed));
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("x:y")),
            Err(CursorError::Malformed)
        );
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(Page::new(None, None).unwrap().first, DEFAULT_PAGE);
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(Some(-1), None).is_err());
        assert!(Page::new(Some(101), None).is_err());
        assert_eq!(Page::new(Some(100), None).unwrap().first, 100);
    }
}
