//! Holds: reserve points when a job starts, settle the actual amount when
//! it ends.
//!
//! A hold takes points from the user's live batches in the published draw
//! order and moves them to those batches' `reserved`: the settled balance
//! does not move (no ledger row), what the user may spend drops. A capture
//! writes the job's one consume row, drawn from the held batches (first
//! drawn pays first), and gives the rest back to exactly those batches; a
//! release or the expiry sweep gives everything back. Points given back to
//! a batch that expired meanwhile expire at once (an `expire` row), as a
//! refund's do.
//!
//! Every step runs under the user's row lock, like every ledger operation,
//! so holds, consumes and refunds of one user are serialised; a hold is
//! settled at most once (`status = 'held'` is checked by the update that
//! settles it).

use chrono::{DateTime, Duration, Utc};

use super::rules;
use super::writer::{NewRow, RowTime, Writer};
use super::{CaptureError, Entry, HoldError, ReleaseError};
use crate::domain::hold_input::{CaptureRequest, HoldRequest, ReleaseRequest};
use crate::domain::source::{describe, SourceType, TxType};
use crate::store::holds::{HeldPart, Hold, HoldStatus, NewHold, Settlement};
use crate::store::ledger::{LedgerKey, UserKey};
use crate::store::{Store, StoreError, WriteTx};

/// A hold placed, or found again by a retry.
#[derive(Debug, Clone)]
pub struct Held {
    pub hold: Hold,
    pub replayed: bool,
}

/// A captured hold and its consume row.
#[derive(Debug, Clone)]
pub struct Captured {
    pub hold: Hold,
    pub entry: Entry,
    pub replayed: bool,
}

fn key_text(source_type: &SourceType, source_id: &str) -> String {
    format!("{source_type}:{source_id}")
}

fn status_of(hold: &Hold) -> HoldStatus {
    HoldStatus::parse(&hold.status).unwrap_or(HoldStatus::Held)
}

/// Reserves points for a job; idempotent on the job's key.
pub async fn hold(store: &Store, req: &HoldRequest) -> Result<Held, HoldError> {
    let hash = req.fingerprint();
    let mut tx = store.begin_write().await?;
    match hold_in(&mut tx, req, &hash).await {
        Ok(held) => {
            tx.commit().await?;
            Ok(held)
        }
        Err(e) => {
            tx.rollback().await?;
            // Two identical requests raced past the check: the unique
            // index took one; the other is its retry (or a conflict).
            if let HoldError::Internal(se) = &e {
                if se.is_unique_violation() {
                    if let Some(h) = store
                        .find_hold(req.source_type.as_str(), req.source_id.as_str())
                        .await?
                    {
                        return replay_hold(req, h, &hash);
                    }
                }
            }
            Err(e)
        }
    }
}

fn replay_hold(req: &HoldRequest, hold: Hold, hash: &str) -> Result<Held, HoldError> {
    if hold.request_hash == hash {
        Ok(Held {
            hold,
            replayed: true,
        })
    } else {
        Err(HoldError::IdempotencyConflict(key_text(
            &req.source_type,
            req.source_id.as_str(),
        )))
    }
}

async fn hold_in(tx: &mut WriteTx, req: &HoldRequest, hash: &str) -> Result<Held, HoldError> {
    let (source_type, source_id) = (req.source_type.as_str(), req.source_id.as_str());
    let key = LedgerKey::Consume {
        source_type,
        source_id,
    };
    let conflict = || HoldError::IdempotencyConflict(key_text(&req.source_type, source_id));
    let (mut w, consumed) = Writer::lock(tx, UserKey::Id(req.user_id), RowTime::Now, Some(key))
        .await?
        .ok_or(HoldError::UserNotFound(req.user_id))?;
    if w.hold_probed.is_some() || !w.probe_current {
        if let Some(h) = tx.find_hold(source_type, source_id).await? {
            return replay_hold(req, h, hash);
        }
    }
    // A job already charged by a plain consume cannot be held again.
    if consumed.is_some() || (!w.probe_current && tx.find(key).await?.is_some()) {
        return Err(conflict());
    }
    let live = w.expire_due_then_live(tx).await?;
    let amount = req.amount.get();
    if w.available() < amount {
        return Err(HoldError::InsufficientBalance {
            available: w.available(),
            requested: amount,
        });
    }
    let parts = rules::draw(&live, amount).map_err(|s| {
        StoreError::custom(format!(
            "user {}: cached balance {} ({} held) but {s}",
            w.user_id, w.balance, w.held
        ))
    })?;
    let (user_id, now, held, seq) = (w.user_id, w.now, w.held + amount, w.hold_seq + 1);
    tx.store_held(user_id, held, seq).await?;
    w.finish(tx).await?;
    let hold = tx
        .insert_hold(
            &NewHold {
                user_id,
                source_type,
                source_id,
                amount,
                duration: req.duration.map(|d| d.secs()),
                note: req.note.as_ref().map(|n| n.as_str()),
                request_hash: hash,
                expires_at: now + Duration::seconds(req.ttl.secs()),
                created_at: now,
                seq,
            },
            &parts,
        )
        .await?;
    Ok(Held {
        hold,
        replayed: false,
    })
}

/// Settles a hold for the job's actual amount: its one consume row.
pub async fn capture_hold(store: &Store, req: &CaptureRequest) -> Result<Captured, CaptureError> {
    let hash = req.fingerprint();
    let mut tx = store.begin_write().await?;
    match capture_in(&mut tx, req, &hash).await {
        Ok(c) => {
            tx.commit().await?;
            Ok(c)
        }
        Err(e) => {
            tx.rollback().await?;
            if let CaptureError::Internal(se) = &e {
                // The job's consume key was taken by a consume of another
                // user racing this hold's placement: not this hold's row.
                if se.is_unique_violation() {
                    return Err(CaptureError::IdempotencyConflict(key_text(
                        &req.source_type,
                        req.source_id.as_str(),
                    )));
                }
            }
            Err(e)
        }
    }
}

async fn capture_in(
    tx: &mut WriteTx,
    req: &CaptureRequest,
    hash: &str,
) -> Result<Captured, CaptureError> {
    let (source_type, source_id) = (req.source_type.as_str(), req.source_id.as_str());
    let key = || key_text(&req.source_type, source_id);
    let Some((mut w, hold)) = lock_hold(tx, source_type, source_id).await? else {
        return Err(CaptureError::HoldNotFound(key()));
    };
    match status_of(&hold) {
        HoldStatus::Held => {}
        HoldStatus::Captured if hold.settle_hash.as_deref() == Some(hash) => {
            let entry = captured_entry(tx, &hold, source_type, source_id).await?;
            return Ok(Captured {
                hold,
                entry,
                replayed: true,
            });
        }
        HoldStatus::Captured => return Err(CaptureError::IdempotencyConflict(key())),
        s @ (HoldStatus::Released | HoldStatus::Expired) => {
            return Err(CaptureError::Settled {
                key: key(),
                status: s.as_str(),
            })
        }
    }
    // Past its expiry a hold is over, swept or not: a late capture would
    // charge points the sweep is about to give back (and that the user
    // may already see as available). The sweep returns them.
    if hold.expires_at <= w.now {
        return Err(CaptureError::Settled {
            key: key(),
            status: HoldStatus::Expired.as_str(),
        });
    }
    let amount = req.amount.get();
    if amount > hold.amount {
        return Err(CaptureError::ExceedsHold {
            held: hold.amount,
            requested: amount,
        });
    }
    // Every held point back to its batch, then the consume draws its part
    // from the same batches: the rest stays returned.
    let (held_parts, pairs, seq) = unhold(tx, &mut w, &hold).await?;
    let taken = rules::capture_parts(&pairs, amount)
        .map_err(|s| StoreError::custom(format!("hold {}: parts hold {s}", hold.id)))?;
    let note = req
        .note
        .as_ref()
        .map(|n| n.as_str())
        .or(hold.note.as_deref());
    let mut row = NewRow::new(
        TxType::Consume,
        amount,
        describe(req.source_type.label(), note),
        "consume",
    );
    row.fields.source_type = Some(source_type.to_owned());
    row.fields.source_id = Some(source_id.to_owned());
    row.fields.batch_id = taken.first().map(|p| p.0);
    row.fields.duration = req.duration.map(|d| d.secs()).or(hold.duration);
    row.fields.request_hash = Some(hash.to_owned());
    row.fields.mirror_order = Some(source_id.to_owned());
    row.fields.written_by = req.by.as_ref().map(|a| a.as_str().to_owned());
    let entry = w.append_spend(tx, row, &taken).await?;
    let rest = rules::capture_rest(&pairs, &taken);
    let settled = settle(tx, w, &hold, &held_parts, &rest, |at| Settlement {
        status: HoldStatus::Captured,
        at,
        hash: Some(hash),
        captured: Some(amount),
        entry_id: Some(entry.id),
        reason: None,
        seq,
    })
    .await?
    .ok_or_else(|| StoreError::custom(format!("hold {} changed under its lock", hold.id)))?;
    Ok(Captured {
        hold: settled,
        entry,
        replayed: false,
    })
}

/// Whether any of `returned` (`(batch_id, amount)`) lands in a batch of
/// `parts` that is due at `now`: those points expire at once.
fn returns_to_due(parts: &[HeldPart], returned: &[(i64, i64)], now: DateTime<Utc>) -> bool {
    returned.iter().any(|&(batch, amount)| {
        amount > 0
            && parts
                .iter()
                .any(|p| p.batch_id == batch && rules::is_due(p.expires_at, now))
    })
}

/// The consume row a captured hold wrote.
async fn captured_entry(
    tx: &mut WriteTx,
    hold: &Hold,
    source_type: &str,
    source_id: &str,
) -> Result<Entry, StoreError> {
    tx.find(LedgerKey::Consume {
        source_type,
        source_id,
    })
    .await?
    .filter(|e| Some(e.id) == hold.entry_id)
    .ok_or_else(|| StoreError::custom(format!("captured hold {} has no consume row", hold.id)))
}

/// Locks the user of the hold under a key and reads the hold under that
/// lock (a settlement may have committed while this waited).
async fn lock_hold(
    tx: &mut WriteTx,
    source_type: &str,
    source_id: &str,
) -> Result<Option<(Writer, Hold)>, StoreError> {
    let user = UserKey::Hold {
        source_type,
        source_id,
    };
    let Some((w, _)) = Writer::lock(tx, user, RowTime::Now, None).await? else {
        return Ok(None);
    };
    // Read under the lock: every change of a hold holds its user's lock.
    Ok(tx
        .find_hold(source_type, source_id)
        .await?
        .map(|hold| (w, hold)))
}

/// Gives a hold's points back: a release by the caller (`hash`), or the
/// sweep (`None`) for an expired one. The hold must be open and its user
/// locked by `w`.
async fn give_back(
    tx: &mut WriteTx,
    mut w: Writer,
    hold: &Hold,
    status: HoldStatus,
    hash: Option<&str>,
    reason: Option<&str>,
) -> Result<Option<Hold>, StoreError> {
    let (held_parts, all, seq) = unhold(tx, &mut w, hold).await?;
    settle(tx, w, hold, &held_parts, &all, |at| Settlement {
        status,
        at,
        hash,
        captured: None,
        entry_id: None,
        reason,
        seq,
    })
    .await
}

/// The first steps of settling an open hold whose user `w` locked: the
/// user's due batches expire, the held figure drops (first, so a ledger
/// row announced next carries it) and every reserved point goes back to
/// its batch. Returns the hold's parts, as `(batch_id, amount)` too, and
/// the user's hold change count for the settlement.
async fn unhold(
    tx: &mut WriteTx,
    w: &mut Writer,
    hold: &Hold,
) -> Result<(Vec<HeldPart>, Vec<(i64, i64)>, i64), StoreError> {
    let parts = tx.hold_parts(hold.id).await?;
    w.expire_due(tx).await?;
    let seq = w.hold_seq + 1;
    tx.store_held(w.user_id, w.held - hold.amount, seq).await?;
    w.unreserve_hold(tx, hold.id).await?;
    let pairs = parts.iter().map(|p| (p.batch_id, p.amount)).collect();
    Ok((parts, pairs, seq))
}

/// The last steps: what went back (`returned`) to a batch that expired
/// meanwhile expires now, the user's balance is stored, and the hold is
/// settled as `settlement` says given the writer's time; `None` when it
/// was not open any more.
async fn settle<'a>(
    tx: &mut WriteTx,
    mut w: Writer,
    hold: &Hold,
    parts: &[HeldPart],
    returned: &[(i64, i64)],
    settlement: impl FnOnce(DateTime<Utc>) -> Settlement<'a>,
) -> Result<Option<Hold>, StoreError> {
    if returns_to_due(parts, returned, w.now) {
        w.expire_due(tx).await?;
    }
    let at = w.now;
    w.finish(tx).await?;
    tx.settle_hold(hold, &settlement(at)).await
}

/// Releases a hold (the job failed): every point back, no ledger row.
pub async fn release_hold(store: &Store, req: &ReleaseRequest) -> Result<Held, ReleaseError> {
    let hash = req.fingerprint();
    let mut tx = store.begin_write().await?;
    match release_in(&mut tx, req, &hash).await {
        Ok(r) => {
            tx.commit().await?;
            Ok(r)
        }
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    }
}

async fn release_in(
    tx: &mut WriteTx,
    req: &ReleaseRequest,
    hash: &str,
) -> Result<Held, ReleaseError> {
    let (source_type, source_id) = (req.source_type.as_str(), req.source_id.as_str());
    let key = || key_text(&req.source_type, source_id);
    let Some((w, hold)) = lock_hold(tx, source_type, source_id).await? else {
        return Err(ReleaseError::HoldNotFound(key()));
    };
    match status_of(&hold) {
        HoldStatus::Held => {}
        HoldStatus::Released if hold.settle_hash.as_deref() == Some(hash) => {
            return Ok(Held {
                hold,
                replayed: true,
            })
        }
        HoldStatus::Released => return Err(ReleaseError::IdempotencyConflict(key())),
        s @ (HoldStatus::Captured | HoldStatus::Expired) => {
            return Err(ReleaseError::Settled {
                key: key(),
                status: s.as_str(),
            })
        }
    }
    let reason = req.reason.as_ref().map(|n| n.as_str());
    let released = give_back(tx, w, &hold, HoldStatus::Released, Some(hash), reason)
        .await?
        .ok_or_else(|| StoreError::custom(format!("hold {} changed under its lock", hold.id)))?;
    Ok(Held {
        hold: released,
        replayed: false,
    })
}

/// What one hold sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldSweep {
    pub holds: i64,
    pub points: i64,
}

/// Holds read per round; bounds one sweep's memory.
const SWEEP_PAGE: u64 = 200;
/// Holds expired per transaction: one durable commit covers them all, so
/// a thousand due holds take a few commits, not a thousand.
const SWEEP_BATCH: usize = 50;

/// Releases every hold past its expiry at `now` as `expired`, in short
/// transactions of up to [`SWEEP_BATCH`] holds, their users locked in
/// ascending id order (every other transaction locks one user, and other
/// sweeps lock in the same order, so no two wait on each other). Several
/// instances may sweep at once: each hold is re-read under its user's lock
/// and settled only while still open, so each is expired exactly once.
pub async fn expire_holds(store: &Store, now: DateTime<Utc>) -> Result<HoldSweep, StoreError> {
    let mut report = HoldSweep::default();
    loop {
        let mut due = store.due_holds(now, SWEEP_PAGE).await?;
        due.sort_by_key(|h| (h.user_id, h.id));
        let mut progressed = false;
        for batch in due.chunks(SWEEP_BATCH) {
            let mut tx = store.begin_write().await?;
            let mut swept = HoldSweep::default();
            for found in batch {
                let Some((w, hold)) =
                    lock_hold(&mut tx, &found.source_type, &found.source_id).await?
                else {
                    continue;
                };
                progressed = true;
                // Settled by its job or another sweep meanwhile.
                if status_of(&hold) != HoldStatus::Held {
                    continue;
                }
                if give_back(&mut tx, w, &hold, HoldStatus::Expired, None, None)
                    .await?
                    .is_some()
                {
                    swept.holds += 1;
                    swept.points += hold.amount;
                }
            }
            tx.commit().await?;
            report.holds += swept.holds;
            report.points += swept.points;
        }
        if due.len() < SWEEP_PAGE as usize || !progressed {
            break;
        }
    }
    Ok(report)
}
