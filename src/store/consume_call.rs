//! A consume in one round trip, where the engine has one (PostgreSQL's
//! `gw_consume`, migration 7). The domain tries it first and runs the
//! general path for whatever it declines.

use super::{postgres, Engine, Store, StoreError};

pub use super::rows::{CallOutcome, ConsumeCall};

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
