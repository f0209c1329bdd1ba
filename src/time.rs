//! Timestamps at the precision both engines store (microseconds), so a value
//! written and read back compares equal and keyset cursors round-trip.

use chrono::{DateTime, SubsecRound, Utc};

pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

pub fn now() -> DateTime<Utc> {
    truncate_micros(Utc::now())
}

/// The earliest instant the gateway accepts or stores.
pub const EARLIEST: &str = "0001-01-01T00:00:00Z";
/// The latest instant the gateway accepts or stores.
pub const LATEST: &str = "9999-12-31T23:59:59.999999Z";

/// Whether `t` lies in the range every engine stores and compares
/// correctly: four-digit years. SQLite keeps timestamps as text and
/// compares them as text, so a year 10000 would sort before 2026; and
/// PostgreSQL refuses years its `timestamp` cannot hold. Inputs outside are
/// refused (`INVALID_INPUT`), never stored.
pub fn storable(t: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&t.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_digit_years_are_storable_and_nothing_else() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("rfc3339").to_utc();
        assert!(storable(at(EARLIEST)));
        assert!(storable(at(LATEST)));
        assert!(storable(at("2026-11-26T00:00:00Z")));
        assert!(!storable(
            DateTime::from_timestamp(253_402_300_800, 0).expect("year 10000")
        ));
        assert!(!storable(
            DateTime::from_timestamp(-62_135_596_801, 0).expect("year 0")
        ));
    }
}
