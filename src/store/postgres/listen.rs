//! PostgreSQL's feed of balance events: every instance `LISTEN`s on
//! `points_ledger` (fed by the ledger trigger, migration 4) and hands each
//! notification to its sink (the broker),
//! so a change committed through any instance reaches subscribers on all.
//!
//! When the listening connection is lost (database restart, network), the
//! listener reconnects with backoff and then tells subscribers they may have
//! missed events: single-user subscribers resync their user, all-users
//! subscribers resync every user whose ledger moved since shortly before
//! the loss. Subscribers never just go silent.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use entity::point_transaction;
use sea_orm::sqlx::postgres::{PgListener, PgNotification};
use sea_orm::EntityTrait;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::store::feed::{Change, Entry, HoldNote, LedgerSink};
use crate::store::{Store, StoreError};

pub const CHANNEL: &str = "points_ledger";

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The triggers' payload: a ledger row (or only its id when the row is too
/// big for a notification), or a hold's change (`kind = "hold"`, migration 5).
#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    kind: Option<String>,
    id: i64,
    /// The user's held points after the change.
    #[serde(default)]
    held: Option<i64>,
    /// A hold's: the user's settled balance, its state and change count.
    #[serde(default)]
    balance: Option<i64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    captured: Option<i64>,
    #[serde(default)]
    seq: Option<i64>,
    user: Option<i32>,
    #[serde(default)]
    partial: bool,
    user_uuid: Option<uuid::Uuid>,
    #[serde(rename = "type")]
    tx_type: Option<String>,
    amount: Option<i64>,
    balance_before: Option<i64>,
    balance_after: Option<i64>,
    source_type: Option<String>,
    source_id: Option<String>,
    batch_id: Option<i64>,
    duration: Option<f64>,
    description: Option<String>,
    /// Whether the gateway wrote the row (its sessions' application name).
    #[serde(default = "yes")]
    gateway: bool,
    created_us: Option<i64>,
}

fn yes() -> bool {
    true
}

impl Payload {
    /// A hold's change, when this payload is one.
    fn hold_change(&self) -> Option<Change> {
        if self.kind.as_deref() != Some("hold") {
            return None;
        }
        Some(Change::Hold {
            hold: HoldNote {
                id: self.id,
                source_type: self.source_type.clone()?,
                source_id: self.source_id.clone()?,
                amount: self.amount?,
                status: self.status.clone()?,
                captured: self.captured,
                seq: self.seq?,
            },
            balance: self.balance?,
            held: self.held?,
        })
    }

    /// The row, when the payload carries all of it.
    fn entry(self) -> Option<Entry> {
        let created: DateTime<Utc> = Utc.timestamp_micros(self.created_us?).single()?;
        Some(Entry {
            id: self.id,
            user_id: self.user_uuid?,
            r#type: self.tx_type?,
            amount: self.amount?,
            balance_before: self.balance_before?,
            balance_after: self.balance_after?,
            source_type: self.source_type,
            source_id: self.source_id,
            batch_id: self.batch_id,
            duration: self.duration,
            description: self.description,
            refund_key: None,
            refund_of: None,
            request_hash: None,
            created_at: created,
            updated_at: created,
        })
    }
}

/// Starts listening before returning, so no subscriber of this instance can
/// miss a commit that follows start-up; then keeps listening in the
/// background until `stop`.
pub async fn start(
    store: Store,
    url: String,
    sink: Arc<dyn LedgerSink>,
    catch_up: Duration,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let listener = connect(&url)
        .await
        .map_err(|e| StoreError::custom(format!("LISTEN {CHANNEL}: {e}")))?;
    let task = Listen {
        store,
        url,
        sink,
        catch_up,
        stop,
    };
    Ok(tokio::spawn(task.run(listener)))
}

async fn connect(url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen(CHANNEL).await?;
    Ok(l)
}

struct Listen {
    store: Store,
    url: String,
    sink: Arc<dyn LedgerSink>,
    catch_up: Duration,
    stop: CancellationToken,
}

impl Listen {
    async fn run(self, mut listener: PgListener) {
        loop {
            let lost_at = tokio::select! {
                at = self.receive(&mut listener) => at,
                _ = self.stop.cancelled() => return,
            };
            tracing::warn!("ledger notifications: connection lost; reconnecting");
            let mut backoff = Duration::from_millis(100);
            listener = loop {
                match connect(&self.url).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(error = %e, "ledger notifications: reconnect failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = self.stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            };
            tracing::info!("ledger notifications: listening again; resyncing subscribers");
            self.resync(lost_at).await;
        }
    }

    /// Delivers notifications until the connection fails; returns when.
    async fn receive(&self, listener: &mut PgListener) -> DateTime<Utc> {
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => self.deliver(n).await,
                // sqlx reconnected and listens again: resync, carry on.
                Ok(None) => {
                    tracing::warn!("ledger notifications: connection lost and re-established");
                    self.resync(crate::time::now()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ledger notifications: receive failed");
                    return crate::time::now();
                }
            }
        }
    }

    async fn deliver(&self, n: PgNotification) {
        let payload: Payload = match serde_json::from_str(n.payload()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "ledger notification not understood");
                return;
            }
        };
        if !payload.gateway {
            // DESIGN.md 3.11: never absorbed into balances; `verify` lists it.
            tracing::error!(
                id = payload.id,
                user = ?payload.user,
                "a ledger row was written by something other than the gateway: \
                 not announced, and not in any balance; `points-gateway verify` reports it"
            );
            return;
        }
        let Some(user_id) = payload.user else {
            tracing::error!(id = payload.id, "ledger row of an unknown user");
            return;
        };
        if payload.kind.is_some() {
            match payload.hold_change() {
                Some(change) => self.sink.committed(user_id, &[change]),
                None => {
                    tracing::error!(id = payload.id, "hold notification incomplete");
                    self.sink.missed(&[user_id]);
                }
            }
            return;
        }
        let id = payload.id;
        let held = payload.held.unwrap_or(0);
        let entry = if payload.partial {
            match point_transaction::Entity::find_by_id(id)
                .one(self.store.conn())
                .await
            {
                Ok(Some(row)) => row,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, id, "cannot read an announced ledger row");
                    self.sink.missed(&[user_id]);
                    return;
                }
            }
        } else {
            match payload.entry() {
                Some(e) => e,
                None => {
                    tracing::error!(id, "ledger notification incomplete");
                    return;
                }
            }
        };
        self.sink.committed(user_id, &[Change::Row { entry, held }]);
    }

    /// Every user whose ledger or holds moved since `lost_at` minus the catch-up
    /// margin (a transaction stamps its rows when it starts, and may commit
    /// up to a request budget later).
    async fn resync(&self, lost_at: DateTime<Utc>) {
        let since = lost_at - chrono::Duration::from_std(self.catch_up).unwrap_or_default();
        let changed = match changed_users(&self.store, since).await {
            Ok(users) => users,
            Err(e) => {
                tracing::error!(error = %e, "cannot list users changed during the outage");
                Vec::new()
            }
        };
        tracing::info!(users = changed.len(), "resync after notification outage");
        self.sink.missed(&changed);
    }
}

async fn changed_users(store: &Store, since: DateTime<Utc>) -> Result<Vec<i32>, StoreError> {
    let rows = store
        .all(
            "SELECT u.id FROM mjk_point_transactions t \
             JOIN gw_users u ON u.uuid = t.user_id WHERE t.created_at >= $1 \
             UNION SELECT h.user_id FROM gw_holds h WHERE h.created_at >= $1 \
             UNION SELECT h.user_id FROM gw_holds h WHERE h.settled_at >= $1",
            vec![since.into()],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i32>("", "id")?))
        .collect()
}
