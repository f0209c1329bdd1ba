//! A consume in one round trip, where the engine has one (PostgreSQL's
//! `gw_consume`, migration 7). The domain tries it first and runs the
//! general path for whatever it declines.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::feed::Entry;
use super::{postgres, Engine, Store, StoreError};

/// Everything a consume writes that does not depend on the user's state.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeCall<'a> {
    pub user_id: i32,
    pub source_type: &'a str,
    pub source_id: &'a str,
    pub amount: i64,
    pub duration: Option<f64>,
    /// The ledger row's description, also the mirror's title (a titled
    /// consume never comes here: it writes a money-page row the call does
    /// not know).
    pub description: &'a str,
    /// `gw_entries.written_by`.
    pub written_by: Option<&'a str>,
    pub request_hash: &'a str,
    /// The clock when the request was taken; the row is stamped no earlier
    /// than the user's last row.
    pub at: DateTime<Utc>,
}

/// What the one call did.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// Wrote the consume (committed).
    Done(Box<Entry>),
    /// A row already holds the job's key; nothing written. The user's
    /// ledger uuid, for telling a legacy row of another user.
    Exists { user_uuid: Uuid },
    /// Nothing written: a case the general path decides (unknown user, a
    /// hold under the key, too few points available, a batch due to expire,
    /// figures the mirror cannot hold).
    Declined,
}

impl Store {
    /// Runs a consume as one call, when this store has one (PostgreSQL,
    /// unless switched off with [`Store::without_consume_call`]); `None`
    /// otherwise. A unique violation (the same job key consumed by another
    /// user at the same moment) comes back as the error, like the general
    /// path's insert.
    pub async fn consume_call(
        &self,
        call: &ConsumeCall<'_>,
    ) -> Result<Option<CallOutcome>, StoreError> {
        if !self.consume_call {
            return Ok(None);
        }
        match self.engine {
            Engine::Postgres => {
                let outcome = postgres::consume_call::run(&self.db, call, self.zone).await?;
                if matches!(outcome, CallOutcome::Done(_)) {
                    self.feed.changed();
                }
                Ok(Some(outcome))
            }
            Engine::Sqlite => Ok(None),
        }
    }

    /// The same store with every consume through the general path (the
    /// benchmark's A/B, and `PG_CONSUME_CALL=false`).
    pub fn without_consume_call(mut self) -> Store {
        self.consume_call = false;
        self
    }
}
