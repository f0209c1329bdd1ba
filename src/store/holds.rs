//! The statements of holds: reserving and returning batch points, the
//! hold rows and their parts, and the reads of holds.
//!
//! A reservation moves points of a batch from `remaining` to `reserved`;
//! returning moves them back. Draws read `remaining` only, so nothing but
//! the hold's own capture can spend reserved points.

use chrono::{DateTime, Utc};
use entity::hold;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::feed::HoldNote;
use super::read::Page;
use super::{Store, StoreError, WriteTx};

pub type Hold = hold::Model;

/// A hold's state, as stored in `gw_holds.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<HoldStatus> {
        [
            HoldStatus::Held,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// What a hold reserves in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldPart {
    pub batch_id: i64,
    pub amount: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A hold about to be written.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    pub user_id: i32,
    pub source_type: &'a str,
    pub source_id: &'a str,
    pub amount: i64,
    pub duration: Option<f64>,
    pub note: Option<&'a str>,
    pub request_hash: &'a str,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub seq: i64,
}

/// How a hold was settled.
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    pub status: HoldStatus,
    pub at: DateTime<Utc>,
    /// The capture's or release's request hash (none for the sweep).
    pub hash: Option<&'a str>,
    pub captured: Option<i64>,
    pub entry_id: Option<i64>,
    pub reason: Option<&'a str>,
    pub seq: i64,
}

impl WriteTx {
    /// The hold under a job's key, read in this transaction.
    pub async fn find_hold(
        &mut self,
        source_type: &str,
        source_id: &str,
    ) -> Result<Option<Hold>, StoreError> {
        find_hold(self.txn(), source_type, source_id).await
    }

    /// Inserts a hold and its parts (`(batch_id, amount)` in draw order),
    /// and moves those points of each batch from `remaining` to `reserved`.
    pub async fn insert_hold(
        &mut self,
        h: &NewHold<'_>,
        parts: &[(i64, i64)],
    ) -> Result<Hold, StoreError> {
        let row = self
            .txn()
            .query_one_raw(self.raw(
                "INSERT INTO gw_holds (user_id, source_type, source_id, amount, duration, note, \
                   status, request_hash, expires_at, created_at, seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'held', $7, $8, $9, $10) RETURNING id",
                vec![
                    h.user_id.into(),
                    h.source_type.into(),
                    h.source_id.into(),
                    h.amount.into(),
                    h.duration.into(),
                    h.note.map(str::to_owned).into(),
                    h.request_hash.into(),
                    h.expires_at.into(),
                    h.created_at.into(),
                    h.seq.into(),
                ],
            ))
            .await?
            .ok_or_else(|| StoreError::custom("the hold insert returned no row"))?;
        let id: i64 = row.try_get("", "id")?;
        for &(batch_id, amount) in parts {
            self.txn()
                .execute_raw(self.raw(
                    "INSERT INTO gw_hold_parts (hold_id, batch_id, amount) VALUES ($1, $2, $3)",
                    vec![id.into(), batch_id.into(), amount.into()],
                ))
                .await?;
            self.reserve(batch_id, amount).await?;
        }
        let hold = Hold {
            id,
            user_id: h.user_id,
            source_type: h.source_type.to_owned(),
            source_id: h.source_id.to_owned(),
            amount: h.amount,
            duration: h.duration,
            note: h.note.map(str::to_owned),
            status: HoldStatus::Held.as_str().to_owned(),
            request_hash: h.request_hash.to_owned(),
            expires_at: h.expires_at,
            created_at: h.created_at,
            settled_at: None,
            settle_hash: None,
            captured: None,
            entry_id: None,
            reason: None,
            seq: h.seq,
        };
        self.hold_changed(h.user_id, note(&hold));
        Ok(hold)
    }

    /// The parts of a hold, in draw order, with their batches' expiry.
    pub async fn hold_parts(&mut self, hold_id: i64) -> Result<Vec<HeldPart>, StoreError> {
        let rows = self
            .txn()
            .query_all_raw(self.raw(
                "SELECT p.batch_id AS batch_id, p.amount AS amount, b.expires_at AS expires_at \
                 FROM gw_hold_parts p JOIN gw_point_batches b ON b.id = p.batch_id \
                 WHERE p.hold_id = $1 ORDER BY p.id",
                vec![hold_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HeldPart {
                    batch_id: r.try_get("", "batch_id")?,
                    amount: r.try_get("", "amount")?,
                    expires_at: r.try_get("", "expires_at")?,
                })
            })
            .collect()
    }

    /// Moves every point a hold reserves back to its batch's `remaining`,
    /// in one statement whatever the number of parts.
    pub async fn unreserve_hold(&mut self, hold_id: i64) -> Result<(), StoreError> {
        self.txn()
            .execute_raw(self.raw(
                "UPDATE gw_point_batches AS b SET remaining = b.remaining + p.amount, \
                   reserved = b.reserved - p.amount \
                 FROM gw_hold_parts p WHERE p.hold_id = $1 AND b.id = p.batch_id",
                vec![hold_id.into()],
            ))
            .await?;
        Ok(())
    }

    /// Moves `amount` points of a batch into `reserved` (negative: back
    /// to `remaining`).
    pub async fn reserve(&mut self, batch_id: i64, amount: i64) -> Result<(), StoreError> {
        self.txn()
            .execute_raw(self.raw(
                "UPDATE gw_point_batches SET remaining = remaining - $1, reserved = reserved + $1 \
                 WHERE id = $2",
                vec![amount.into(), batch_id.into()],
            ))
            .await?;
        Ok(())
    }

    /// Stores a locked user's held figure and hold change count.
    pub async fn store_held(
        &mut self,
        user_id: i32,
        held: i64,
        seq: i64,
    ) -> Result<(), StoreError> {
        self.txn()
            .execute_raw(self.raw(
                "UPDATE gw_users SET held = $1, hold_seq = $2 WHERE id = $3",
                vec![held.into(), seq.into(), user_id.into()],
            ))
            .await?;
        self.held_now(user_id, held);
        Ok(())
    }

    /// Settles an open hold; `None` when it was not open any more.
    pub async fn settle_hold(
        &mut self,
        hold: &Hold,
        s: &Settlement<'_>,
    ) -> Result<Option<Hold>, StoreError> {
        let done = self
            .txn()
            .execute_raw(self.raw(
                "UPDATE gw_holds SET status = $1, settled_at = $2, settle_hash = $3, \
                   captured = $4, entry_id = $5, reason = $6, seq = $7 \
                 WHERE id = $8 AND status = 'held'",
                vec![
                    s.status.as_str().into(),
                    s.at.into(),
                    s.hash.map(str::to_owned).into(),
                    s.captured.into(),
                    s.entry_id.into(),
                    s.reason.map(str::to_owned).into(),
                    s.seq.into(),
                    hold.id.into(),
                ],
            ))
            .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let settled = Hold {
            status: s.status.as_str().to_owned(),
            settled_at: Some(s.at),
            settle_hash: s.hash.map(str::to_owned),
            captured: s.captured,
            entry_id: s.entry_id,
            reason: s.reason.map(str::to_owned),
            seq: s.seq,
            ..hold.clone()
        };
        self.hold_changed(hold.user_id, note(&settled));
        Ok(Some(settled))
    }

    fn raw(&self, sql: &str, values: Vec<sea_orm::Value>) -> sea_orm::Statement {
        sea_orm::Statement::from_sql_and_values(self.engine().backend(), sql, values)
    }
}

/// What subscribers hear about a hold.
fn note(h: &Hold) -> HoldNote {
    HoldNote {
        id: h.id,
        source_type: h.source_type.clone(),
        source_id: h.source_id.clone(),
        amount: h.amount,
        status: h.status.clone(),
        captured: h.captured,
        seq: h.seq,
    }
}

async fn find_hold<C: ConnectionTrait>(
    conn: &C,
    source_type: &str,
    source_id: &str,
) -> Result<Option<Hold>, StoreError> {
    Ok(hold::Entity::find()
        .filter(hold::Column::SourceType.eq(source_type))
        .filter(hold::Column::SourceId.eq(source_id))
        .one(conn)
        .await?)
}

impl Store {
    /// The hold under a job's key (outside any transaction).
    pub async fn find_hold(
        &self,
        source_type: &str,
        source_id: &str,
    ) -> Result<Option<Hold>, StoreError> {
        find_hold(self.conn(), source_type, source_id).await
    }

    /// Open holds past their expiry at `now`, oldest expiry first; at
    /// most `limit`.
    pub async fn due_holds(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<Hold>, StoreError> {
        Ok(hold::Entity::find()
            .filter(hold::Column::Status.eq(HoldStatus::Held.as_str()))
            .filter(hold::Column::ExpiresAt.lte(now))
            .order_by_asc(hold::Column::ExpiresAt)
            .order_by_asc(hold::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?)
    }

    /// A page of a user's holds, newest first, optionally of one status;
    /// `true` when more follow.
    pub async fn holds_page(
        &self,
        user_id: i32,
        status: Option<HoldStatus>,
        page: &Page,
    ) -> Result<(Vec<Hold>, bool), StoreError> {
        let mut sel = hold::Entity::find().filter(hold::Column::UserId.eq(user_id));
        if let Some(s) = status {
            sel = sel.filter(hold::Column::Status.eq(s.as_str()));
        }
        let sel = page.apply(sel, hold::Column::CreatedAt, hold::Column::Id);
        Ok(page.finish(sel.all(self.conn()).await?))
    }

    /// How many holds [`Store::holds_page`] pages through.
    pub async fn holds_count(
        &self,
        user_id: i32,
        status: Option<HoldStatus>,
    ) -> Result<u64, StoreError> {
        let mut sel = hold::Entity::find().filter(hold::Column::UserId.eq(user_id));
        if let Some(s) = status {
            sel = sel.filter(hold::Column::Status.eq(s.as_str()));
        }
        Ok(sel.count(self.conn()).await?)
    }
}
