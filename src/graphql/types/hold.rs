//! Holds as the API shows them, and the hold part of a balance event.

use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, Utc};

use super::UsageDetail;
use crate::errors::GqlResult;
use crate::graphql::context::{int, state};
use crate::store::feed::{Entry, HoldNote};
use crate::store::holds::{Hold, HoldStatus};
use crate::store::ledger::LedgerKey;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "HoldStatus")]
pub enum HoldStatusGql {
    /// Reserved, not settled yet.
    Held,
    /// Settled by `captureHold`: the job's consume row was written.
    Captured,
    /// Settled by `releaseHold`: every point went back.
    Released,
    /// Not settled before its expiry: the sweep gave every point back.
    Expired,
}

impl From<HoldStatus> for HoldStatusGql {
    fn from(s: HoldStatus) -> HoldStatusGql {
        match s {
            HoldStatus::Held => HoldStatusGql::Held,
            HoldStatus::Captured => HoldStatusGql::Captured,
            HoldStatus::Released => HoldStatusGql::Released,
            HoldStatus::Expired => HoldStatusGql::Expired,
        }
    }
}

impl From<HoldStatusGql> for HoldStatus {
    fn from(s: HoldStatusGql) -> HoldStatus {
        match s {
            HoldStatusGql::Held => HoldStatus::Held,
            HoldStatusGql::Captured => HoldStatus::Captured,
            HoldStatusGql::Released => HoldStatus::Released,
            HoldStatusGql::Expired => HoldStatus::Expired,
        }
    }
}

fn status(raw: &str) -> HoldStatusGql {
    HoldStatus::parse(raw).unwrap_or(HoldStatus::Held).into()
}

/// Points reserved for one job, keyed like its consume.
pub struct HoldGql {
    pub hold: Hold,
    /// The capture's consume row, when the caller has it already.
    pub entry: Option<Entry>,
}

#[Object(name = "Hold")]
impl HoldGql {
    async fn id(&self) -> ID {
        ID(self.hold.id.to_string())
    }
    async fn user_id(&self) -> i32 {
        self.hold.user_id
    }
    async fn source_type(&self) -> &str {
        &self.hold.source_type
    }
    async fn source_id(&self) -> &str {
        &self.hold.source_id
    }
    /// Points reserved.
    async fn amount(&self) -> async_graphql::Result<i32> {
        int(self.hold.amount)
    }
    /// The estimated seconds (tts, video).
    async fn duration(&self) -> Option<f64> {
        self.hold.duration
    }
    async fn note(&self) -> Option<&str> {
        self.hold.note.as_deref()
    }
    async fn status(&self) -> HoldStatusGql {
        status(&self.hold.status)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.hold.created_at
    }
    /// When the sweep releases it if nobody settled it.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.hold.expires_at
    }
    async fn settled_at(&self) -> Option<DateTime<Utc>> {
        self.hold.settled_at
    }
    /// Points the capture charged (the rest went back).
    async fn captured(&self) -> async_graphql::Result<Option<i32>> {
        self.hold.captured.map(int).transpose()
    }
    /// The release's reason.
    async fn reason(&self) -> Option<&str> {
        self.hold.reason.as_deref()
    }
    /// The consume row the capture wrote.
    async fn entry(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UsageDetail>> {
        if let Some(e) = &self.entry {
            return Ok(Some(UsageDetail(e.clone())));
        }
        let Some(id) = self.hold.entry_id else {
            return Ok(None);
        };
        let found = state(ctx)?
            .store
            .find(LedgerKey::Consume {
                source_type: &self.hold.source_type,
                source_id: &self.hold.source_id,
            })
            .await
            .gql()?;
        Ok(found.filter(|e| e.id == id).map(UsageDetail))
    }
}

/// The hold a balance event is about.
pub struct HoldChange(pub HoldNote);

#[Object]
impl HoldChange {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn source_type(&self) -> &str {
        &self.0.source_type
    }
    async fn source_id(&self) -> &str {
        &self.0.source_id
    }
    async fn amount(&self) -> async_graphql::Result<i32> {
        int(self.0.amount)
    }
    async fn status(&self) -> HoldStatusGql {
        status(&self.0.status)
    }
    async fn captured(&self) -> async_graphql::Result<Option<i32>> {
        self.0.captured.map(int).transpose()
    }
}
