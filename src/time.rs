//! Timestamps at the precision both engines store (microseconds), so a value
//! written and read back compares equal and keyset cursors round-trip.

use chrono::{DateTime, SubsecRound, Utc};

pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

pub fn now() -> DateTime<Utc> {
    truncate_micros(Utc::now())
}
