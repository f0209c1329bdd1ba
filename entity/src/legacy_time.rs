//! Times in the ts platform's tables: peewee writes naive wall-clock time of
//! the platform's zone (`LEGACY_TIMEZONE`). An adopter may have widened a
//! column to `timestamptz`; both read the same.
//!
//! Decoding cannot know the configured zone, so a value keeps what the
//! column held — a wall-clock reading or an instant — and whoever has the
//! zone (the store) turns it into an instant. The gateway always writes wall
//! clock ([`LocalTime::Wall`]), which is what a naive column stores and what
//! PostgreSQL converts with the session's zone (set to the legacy zone) when
//! the column is `timestamptz`.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, ValueType, ValueTypeErr};
use sea_orm::{ColIdx, QueryResult, TryGetError, TryGetable, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalTime {
    /// Naive wall-clock time in the legacy zone (a `timestamp` column; on
    /// SQLite, peewee's text).
    Wall(NaiveDateTime),
    /// An instant (a `timestamptz` column).
    Instant(DateTime<Utc>),
}

impl LocalTime {
    /// The wall-clock reading of `t` in `zone`, to be written.
    pub fn of(t: DateTime<Utc>, zone: Tz) -> LocalTime {
        LocalTime::Wall(t.with_timezone(&zone).naive_local())
    }

    /// The instant this value names in `zone`. A wall-clock time that
    /// occurs twice (the hour repeated when DST ends) is the earlier
    /// instant; one that never occurs (skipped when DST starts) is read as
    /// if the clock had not been moved yet (its offset before the gap).
    pub fn instant(self, zone: Tz) -> DateTime<Utc> {
        match self {
            LocalTime::Instant(t) => t,
            LocalTime::Wall(w) => match zone.from_local_datetime(&w) {
                LocalResult::Single(t) => t.with_timezone(&Utc),
                LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
                LocalResult::None => {
                    let before = w - chrono::Duration::hours(3);
                    let offset = match zone.from_local_datetime(&before) {
                        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                            t.naive_utc() - before
                        }
                        LocalResult::None => chrono::Duration::zero(),
                    };
                    Utc.from_utc_datetime(&(w + offset))
                }
            },
        }
    }
}

/// `w` as peewee writes a `DateTimeField` to SQLite (Python's `str()` of a
/// datetime): microseconds only when there are any.
pub fn peewee_text(w: NaiveDateTime) -> String {
    use chrono::Timelike;
    let micros = w.nanosecond() / 1_000;
    if micros == 0 {
        w.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", w.format("%Y-%m-%d %H:%M:%S"))
    }
}

impl From<LocalTime> for Value {
    fn from(t: LocalTime) -> Value {
        match t {
            LocalTime::Wall(w) => w.into(),
            LocalTime::Instant(i) => i.into(),
        }
    }
}

impl TryGetable for LocalTime {
    fn try_get_by<I: ColIdx>(res: &QueryResult, idx: I) -> Result<Self, TryGetError> {
        // A `timestamptz` column refuses to decode as naive on PostgreSQL;
        // SQLite text without an offset is naive.
        match NaiveDateTime::try_get_by(res, idx) {
            Ok(w) => Ok(LocalTime::Wall(w)),
            Err(TryGetError::Null(c)) => Err(TryGetError::Null(c)),
            Err(_) => DateTime::<Utc>::try_get_by(res, idx).map(LocalTime::Instant),
        }
    }
}

impl ValueType for LocalTime {
    fn try_from(v: Value) -> Result<Self, ValueTypeErr> {
        match v {
            Value::ChronoDateTime(Some(w)) => Ok(LocalTime::Wall(w)),
            Value::ChronoDateTimeUtc(Some(i)) => Ok(LocalTime::Instant(i)),
            _ => Err(ValueTypeErr),
        }
    }

    fn type_name() -> String {
        "LocalTime".to_owned()
    }

    fn array_type() -> ArrayType {
        ArrayType::ChronoDateTime
    }

    fn column_type() -> ColumnType {
        ColumnType::DateTime
    }
}

impl Nullable for LocalTime {
    fn null() -> Value {
        Value::ChronoDateTime(None)
    }
}

impl sea_orm::IntoActiveValue<LocalTime> for LocalTime {
    fn into_active_value(self) -> sea_orm::ActiveValue<LocalTime> {
        sea_orm::ActiveValue::Set(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(s: &str) -> LocalTime {
        LocalTime::Wall(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("valid"))
    }

    #[test]
    fn wall_clock_time_is_read_in_the_zone() {
        let t = wall("2025-12-01 09:00:00").instant(chrono_tz::Asia::Shanghai);
        assert_eq!(t.to_rfc3339(), "2025-12-01T01:00:00+00:00");
        let back = LocalTime::of(t, chrono_tz::Asia::Shanghai);
        assert_eq!(back, wall("2025-12-01 09:00:00"));
    }

    #[test]
    fn repeated_and_skipped_hours_have_one_reading() {
        let ny = chrono_tz::America::New_York;
        // 01:30 happens twice on 2025-11-02: the earlier (EDT, -4) instant.
        assert_eq!(
            wall("2025-11-02 01:30:00").instant(ny).to_rfc3339(),
            "2025-11-02T05:30:00+00:00"
        );
        // 02:30 never happens on 2025-03-09: read with the offset before (-5).
        assert_eq!(
            wall("2025-03-09 02:30:00").instant(ny).to_rfc3339(),
            "2025-03-09T07:30:00+00:00"
        );
    }
}
