//! PostgreSQL's feed of balance events: every instance tails `gw_events`
//! (appended by the ledger's and the holds' triggers inside the writing
//! transaction, migration 6) and hands each change to its sink (the
//! broker), so a change committed through any instance reaches subscribers
//! on all, rows written by anything but the gateway included (reported,
//! not announced).
//!
//! No notification is sent inside a ledger transaction: PostgreSQL
//! serialises the commits of notifying transactions behind each one's WAL
//! flush. Instead the instance that committed sends `NOTIFY points_wake`
//! afterwards, on its own (coalesced: one per burst of commits, in a
//! transaction that writes nothing and so flushes nothing), and every
//! instance polls the table when woken, and every [`IDLE_POLL`] anyway.
//!
//! **Commit order.** Event ids come from a sequence when the row is
//! inserted; transactions commit in another order, so a poll may see id 12
//! while 10 is still uncommitted. The tail delivers what it sees in id
//! order and remembers the missing ids (gaps). A user's events are never
//! reordered by this: all of a user's changes are made under that user's
//! row lock, so a later one can only become visible after the earlier one.
//! A gap is filled by a later poll, or given up once every transaction
//! that could have taken that id has ended: an id below one already
//! visible was taken before that poll's snapshot, so by a transaction with
//! an xid below that snapshot's `xmax`; when a later snapshot's `xmin` has
//! passed that `xmax` and still does not show the id, it never will (the
//! transaction rolled back). Nothing is dropped silently.
//!
//! When the waking connection is lost (database restart, network), the
//! tail reconnects with backoff and tells subscribers they may have missed
//! events (single-user subscribers resync their user, all-users
//! subscribers every user whose ledger or holds moved since shortly before
//! the loss), then carries on from where it was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::sqlx::postgres::PgListener;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::feed::{Change, Entry, HoldNote, LedgerSink};
use crate::store::{Store, StoreError};

/// The channel instances wake each other on (no payload).
pub const WAKE_CHANNEL: &str = "points_wake";

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often the tail polls without being woken: rows written by other
/// programs wake no one, and a wake can be lost with its connection.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// How long a wake waits for more commits to cover.
const WAKE_GATHER: Duration = Duration::from_millis(1);

/// How soon the tail polls again while ids are missing.
const GAP_POLL: Duration = Duration::from_millis(20);

/// Events read per poll.
const BATCH: i64 = 1_000;

/// Events older than this are deleted (each instance prunes now and then).
/// The oldest are found by bisecting the primary key on `created_at`
/// ([`prune`]): an index on the time would cost every event a second index
/// entry for a delete that runs once a minute.
const RETENTION_SECS: i64 = 600;
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One event with what it is about (a ledger row, or a hold).
#[derive(Debug, Deserialize)]
struct EventRow {
    id: i64,
    user_id: Option<i32>,
    ledger_id: Option<i64>,
    gateway: bool,
    balance: Option<i64>,
    held: Option<i64>,
    // A hold's change.
    hold_id: Option<i64>,
    status: Option<String>,
    seq: Option<i64>,
    captured: Option<i64>,
    hold_source_type: Option<String>,
    hold_source_id: Option<String>,
    hold_amount: Option<i64>,
    // The ledger row.
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
    created_us: Option<i64>,
}

impl EventRow {
    fn change(&self) -> Option<Change> {
        if let Some(hold_id) = self.hold_id {
            return Some(Change::Hold {
                hold: HoldNote {
                    id: hold_id,
                    source_type: self.hold_source_type.clone()?,
                    source_id: self.hold_source_id.clone()?,
                    amount: self.hold_amount?,
                    status: self.status.clone()?,
                    captured: self.captured,
                    seq: self.seq?,
                },
                balance: self.balance?,
                held: self.held?,
            });
        }
        let created: DateTime<Utc> = Utc.timestamp_micros(self.created_us?).single()?;
        Some(Change::Row {
            entry: Entry {
                id: self.ledger_id?,
                user_id: self.user_uuid?,
                r#type: self.tx_type.clone()?,
                amount: self.amount?,
                balance_before: self.balance_before?,
                balance_after: self.balance_after?,
                source_type: self.source_type.clone(),
                source_id: self.source_id.clone(),
                batch_id: self.batch_id,
                duration: self.duration,
                description: self.description.clone(),
                refund_key: None,
                refund_of: None,
                request_hash: None,
                created_at: created,
                updated_at: created,
            },
            held: self.held.unwrap_or(0),
        })
    }
}

/// The poll: the statement's snapshot bounds (as text: `xid8`) and the
/// events after `$1` (at most `$3`) and among the missing ids `$2`, with
/// their rows, as JSON, all from one snapshot. Every read is a
/// primary-key lookup, whatever the generic plan guesses (an `OR` of the
/// two conditions, or plain joins, had it scan tables; `LIMIT 1` keeps the
/// lateral lookups from being flattened into joins).
pub const POLL_SQL: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin, \
    pg_snapshot_xmax(pg_current_snapshot())::text AS xmax, \
    (SELECT COALESCE(json_agg(row_to_json(x) ORDER BY x.id), '[]')::text FROM ( \
       SELECT e.id, e.user_id, e.ledger_id, e.gateway, e.balance, e.held, e.hold_id, e.status, \
         e.seq, e.captured, h.source_type AS hold_source_type, h.source_id AS hold_source_id, \
         h.amount AS hold_amount, t.user_id AS user_uuid, t.type, \
         CAST(t.amount AS BIGINT) AS amount, CAST(t.balance_before AS BIGINT) AS balance_before, \
         CAST(t.balance_after AS BIGINT) AS balance_after, t.source_type, t.source_id, \
         t.batch_id, t.duration, t.description, \
         (extract(epoch FROM t.created_at) * 1000000)::bigint AS created_us \
       FROM ((SELECT * FROM gw_events WHERE id > $1 ORDER BY id LIMIT $3) \
             UNION ALL \
             (SELECT * FROM gw_events WHERE id = ANY(string_to_array($2, ',')::bigint[]))) e \
       LEFT JOIN LATERAL (SELECT * FROM mjk_point_transactions WHERE id = e.ledger_id LIMIT 1) t ON true \
       LEFT JOIN LATERAL (SELECT * FROM gw_holds WHERE id = e.hold_id LIMIT 1) h ON true) x) AS events";

/// Where the tail is: the highest id delivered, and the ids below it not
/// seen yet, each with the `xmax` of the snapshot that first missed it.
#[derive(Debug, Default)]
struct Position {
    last: i64,
    gaps: BTreeMap<i64, u64>,
}

impl Position {
    /// Takes one poll's events (in id order) and returns those to deliver,
    /// then gives up the gaps no transaction can fill any more.
    fn advance(&mut self, events: Vec<EventRow>, xmin: u64, xmax: u64) -> Vec<EventRow> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            if e.id > self.last {
                for missing in self.last + 1..e.id {
                    self.gaps.insert(missing, xmax);
                }
                self.last = e.id;
                out.push(e);
            } else if self.gaps.remove(&e.id).is_some() {
                out.push(e);
            }
        }
        self.gaps.retain(|_, seen_below| xmin < *seen_below);
        out
    }

    fn gap_list(&self) -> String {
        self.gaps
            .keys()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Starts listening for wakes before returning, so no subscriber of this
/// instance can miss a commit that follows start-up; then tails in the
/// background until `stop`. `wake` is signalled after each commit of this
/// instance that wrote something: a task turns bursts of them into one
/// `NOTIFY` each.
pub async fn start(
    store: Store,
    url: String,
    sink: Arc<dyn LedgerSink>,
    wake: Arc<Notify>,
    catch_up: Duration,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let listener = connect(&url)
        .await
        .map_err(|e| StoreError::custom(format!("LISTEN {WAKE_CHANNEL}: {e}")))?;
    let last = store
        .all(
            "SELECT COALESCE(MAX(id), 0) AS last FROM gw_events",
            Vec::new(),
        )
        .await?
        .first()
        .map(|r| r.try_get::<i64>("", "last"))
        .transpose()?
        .unwrap_or(0);
    tokio::spawn(send_wakes(store.clone(), wake, stop.clone()));
    let (signals, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(listen(listener, url, signals, stop.clone()));
    let mut tail = Tail {
        store,
        sink,
        catch_up,
        stop,
        // Transactions in flight now may commit ids below the last one:
        // the recent ids not visible yet become gaps, delivered if they
        // appear; what is visible is history to this instance.
        position: Position {
            last: (last - BATCH).max(0),
            gaps: BTreeMap::new(),
        },
        pruned: Instant::now(),
    };
    tail.poll(Some(last)).await?;
    tail.position.last = last;
    Ok(tokio::spawn(tail.run(rx)))
}

async fn connect(url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen(WAKE_CHANNEL).await?;
    Ok(l)
}

/// Sends one `NOTIFY` per burst of this instance's commits, outside any
/// ledger transaction.
async fn send_wakes(store: Store, wake: Arc<Notify>, stop: CancellationToken) {
    let mut sent = Instant::now() - WAKE_GATHER;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.cancelled() => return,
        }
        // The first commit after a quiet moment wakes at once; commits
        // that follow within WAKE_GATHER share the next wake: under load
        // one NOTIFY (and one poll per instance) covers many commits.
        let since = sent.elapsed();
        if since < WAKE_GATHER {
            tokio::time::sleep(WAKE_GATHER - since).await;
        }
        sent = Instant::now();
        if let Err(e) = store
            .all(
                format!("SELECT pg_notify('{WAKE_CHANNEL}', '')"),
                Vec::new(),
            )
            .await
        {
            // The other instances still poll every IDLE_POLL.
            tracing::warn!(error = %e, "cannot wake the other instances");
        }
    }
}

/// What the waking connection tells the tail.
enum Signal {
    /// Another commit (of any instance): poll now.
    Wake,
    /// The connection was lost at this time and is back: notifications
    /// (and with them other instances' wakes) may have been missed.
    Resync(DateTime<Utc>),
}

/// Owns the `LISTEN` connection (so no receive is ever cancelled half-way)
/// and forwards what it hears; reconnects with backoff.
async fn listen(
    mut listener: PgListener,
    url: String,
    signals: tokio::sync::mpsc::UnboundedSender<Signal>,
    stop: CancellationToken,
) {
    loop {
        let got = tokio::select! {
            got = listener.try_recv() => got,
            _ = stop.cancelled() => return,
        };
        let lost_at = match got {
            Ok(Some(_)) => {
                if signals.send(Signal::Wake).is_err() {
                    return;
                }
                continue;
            }
            // sqlx reconnected and listens again.
            Ok(None) => {
                tracing::warn!("balance events: wake connection lost and re-established");
                if signals.send(Signal::Resync(crate::time::now())).is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "balance events: receive failed; reconnecting");
                crate::time::now()
            }
        };
        let mut backoff = Duration::from_millis(100);
        listener = loop {
            match connect(&url).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, "balance events: reconnect failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        tracing::info!("balance events: listening again; resyncing subscribers");
        if signals.send(Signal::Resync(lost_at)).is_err() {
            return;
        }
    }
}

struct Tail {
    store: Store,
    sink: Arc<dyn LedgerSink>,
    catch_up: Duration,
    stop: CancellationToken,
    position: Position,
    pruned: Instant,
}

impl Tail {
    /// Polls when woken, soon while gaps are open, and every
    /// [`IDLE_POLL`] anyway, until `stop`.
    async fn run(mut self, mut signals: tokio::sync::mpsc::UnboundedReceiver<Signal>) {
        let stop = self.stop.clone();
        loop {
            self.poll_all().await;
            let wait = if self.position.gaps.is_empty() {
                IDLE_POLL
            } else {
                GAP_POLL
            };
            tokio::select! {
                signal = signals.recv() => match signal {
                    Some(Signal::Wake) => {}
                    Some(Signal::Resync(lost_at)) => self.resync(lost_at).await,
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
            // Wakes that arrived meanwhile are covered by the next poll.
            while let Ok(signal) = signals.try_recv() {
                if let Signal::Resync(lost_at) = signal {
                    self.resync(lost_at).await;
                }
            }
        }
    }

    /// Polls until a poll returns less than a full batch.
    async fn poll_all(&mut self) {
        loop {
            match self.poll(None).await {
                Ok(full) if full => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "balance events: poll failed");
                    break;
                }
            }
        }
        if self.pruned.elapsed() >= PRUNE_EVERY {
            self.pruned = Instant::now();
            if let Err(e) = prune(&self.store).await {
                tracing::warn!(error = %e, "balance events: pruning failed");
            }
        }
    }

    /// One poll, delivering what is new; true when it read a full batch
    /// (more may follow). `history`: at start-up, only learn the gaps up
    /// to this id, deliver nothing.
    async fn poll(&mut self, history: Option<i64>) -> Result<bool, StoreError> {
        let rows = self
            .store
            .all(
                POLL_SQL,
                vec![
                    self.position.last.into(),
                    self.position.gap_list().into(),
                    BATCH.into(),
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::custom("the event poll returned no row"))?;
        let xid = |name: &str| -> Result<u64, StoreError> {
            let text: String = row.try_get("", name)?;
            text.parse()
                .map_err(|_| StoreError::custom(format!("snapshot {name} {text:?} unreadable")))
        };
        let (xmin, xmax) = (xid("xmin")?, xid("xmax")?);
        let text: String = row.try_get("", "events")?;
        let mut events: Vec<EventRow> = serde_json::from_str(&text)
            .map_err(|e| StoreError::custom(format!("unreadable events: {e}")))?;
        if let Some(up_to) = history {
            events.retain(|e| e.id <= up_to);
        }
        let full = events.len() as i64 >= BATCH;
        for e in self.position.advance(events, xmin, xmax) {
            if history.is_none() {
                self.deliver(e);
            }
        }
        Ok(full)
    }

    fn deliver(&self, e: EventRow) {
        if !e.gateway {
            if e.ledger_id.is_some() {
                // DESIGN.md 3.11: never absorbed into balances; `verify` lists it.
                tracing::error!(
                    id = e.ledger_id,
                    user = ?e.user_id,
                    "a ledger row was written by something other than the gateway: \
                     not announced, and not in any balance; `points-gateway verify` reports it"
                );
            }
            return;
        }
        let Some(user_id) = e.user_id else {
            tracing::error!(event = e.id, "balance event of an unknown user");
            return;
        };
        match e.change() {
            Some(change) => self.sink.committed(user_id, &[change]),
            None => {
                tracing::error!(event = e.id, "balance event incomplete");
                self.sink.missed(&[user_id]);
            }
        }
    }

    /// Every user whose ledger or holds moved since `lost_at` minus the
    /// catch-up margin (a transaction stamps its rows when it starts, and
    /// may commit up to a request budget later).
    async fn resync(&self, lost_at: DateTime<Utc>) {
        let since = lost_at - chrono::Duration::from_std(self.catch_up).unwrap_or_default();
        let changed = match changed_users(&self.store, since).await {
            Ok(users) => users,
            Err(e) => {
                tracing::error!(error = %e, "cannot list users changed during the outage");
                Vec::new()
            }
        };
        tracing::info!(users = changed.len(), "resync after an event feed outage");
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

/// Deletes the events older than [`RETENTION_SECS`]. Ids grow with insertion
/// and `created_at` is the inserting transaction's start, so the old rows are
/// a prefix of the id order up to the length of a transaction: the end of
/// that prefix is found by bisecting ids, one primary-key probe per step
/// (about 20 for a million events), then deleted as one id range.
pub async fn prune(store: &Store) -> Result<u64, StoreError> {
    let bounds = store
        .rows(
            "SELECT MIN(id) AS lo, MAX(id) AS hi FROM gw_events",
            Vec::new(),
            |r| {
                Ok((
                    r.try_get::<Option<i64>>("", "lo")?,
                    r.try_get::<Option<i64>>("", "hi")?,
                ))
            },
        )
        .await?;
    let Some((Some(mut lo), Some(mut hi))) = bounds.into_iter().next() else {
        return Ok(0);
    };
    // The first event at or after `k`, and whether it is old.
    let probe = |k: i64| async move {
        let rows = store
            .rows(
                format!(
                    "SELECT id, created_at < now() - interval '{RETENTION_SECS} seconds' AS old \
                     FROM gw_events WHERE id >= $1 ORDER BY id LIMIT 1"
                ),
                vec![k.into()],
                |r| Ok((r.try_get::<i64>("", "id")?, r.try_get::<bool>("", "old")?)),
            )
            .await?;
        Ok::<_, StoreError>(rows.into_iter().next())
    };
    let mut cut = match probe(lo).await? {
        Some((id, true)) => id,
        _ => return Ok(0),
    };
    lo = cut;
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        match probe(mid).await? {
            Some((id, true)) => {
                cut = id;
                lo = id.max(mid);
            }
            _ => hi = mid - 1,
        }
    }
    let deleted = store
        .rows(
            "WITH d AS (DELETE FROM gw_events WHERE id <= $1 RETURNING 1) SELECT COUNT(*) AS n FROM d",
            vec![cut.into()],
            |r| r.try_get::<i64>("", "n"),
        )
        .await?;
    Ok(deleted.into_iter().next().unwrap_or(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64) -> EventRow {
        serde_json::from_value(serde_json::json!({ "id": id, "gateway": true })).expect("an event")
    }

    fn ids(v: &[EventRow]) -> Vec<i64> {
        v.iter().map(|e| e.id).collect()
    }

    #[test]
    fn ids_seen_out_of_order_are_delivered_once_and_gaps_wait_for_their_transactions() {
        let mut p = Position::default();
        // 1 and 3 committed; 2 is in flight (its xid is below xmax 100).
        assert_eq!(ids(&p.advance(vec![ev(1), ev(3)], 90, 100)), vec![1, 3]);
        assert_eq!(p.gap_list(), "2");
        // 2 commits: delivered; a repeat of 3 is not.
        assert_eq!(
            ids(&p.advance(vec![ev(2), ev(3), ev(4)], 95, 101)),
            vec![2, 4]
        );
        assert!(p.gaps.is_empty());
        // 5 never shows (rolled back): kept while a transaction older than
        // the snapshot that missed it may still run, then given up.
        assert_eq!(ids(&p.advance(vec![ev(6)], 99, 110)), vec![6]);
        assert_eq!(p.gap_list(), "5");
        assert!(p.advance(Vec::new(), 109, 120).is_empty());
        assert_eq!(p.gap_list(), "5");
        assert!(p.advance(Vec::new(), 110, 120).is_empty());
        assert!(p.gaps.is_empty());
    }
}
