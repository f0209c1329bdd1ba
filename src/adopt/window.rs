//! `adopt --apply` on PostgreSQL, in the phases of the adoption window
//! ([`crate::store::adopt::window`]): the legacy tables are held against
//! writes only while arming and while closing; the inventory, the plan
//! and the openings run meanwhile, and the writes the legacy systems make
//! meanwhile are absorbed after them.

use std::time::{Duration, Instant};

use super::{adopted_line, coexistence_note, open, report, AdoptOptions, Outcome};
use crate::domain::adopt::UserMap;
use crate::store::adopt::{self as sa, window as w};
use crate::store::{Store, StoreError, WriteTx};

/// Recorded transactions absorbed per drain transaction: small enough that
/// a drain holds the row locks it takes for well under a second.
const DRAIN_BATCH: i32 = 200;

/// Draining before the switch stops when this few entries are left ...
const LEFT_FOR_SWITCH: i64 = 200;

/// ... or after this long: the legacy writers may outpace a drain while
/// each of their writes costs only its record; after the switch most of
/// them are absorbed live instead, so the record only shrinks (at 100
/// writes a second a 10 s budget ran out every time).
const DRAIN_BUDGET: Duration = Duration::from_secs(3);

/// Draining after the switch stops when this few are left (drained under
/// the close's hold) ...
const LEFT_FOR_CLOSE: i64 = 50;

/// ... or after this long (then the close's hold drains the rest).
const SETTLE_BUDGET: Duration = Duration::from_secs(600);

pub(super) async fn apply(
    store: &Store,
    opts: &AdoptOptions,
    map: &UserMap,
) -> anyhow::Result<Outcome> {
    // Seconds per index on a million rows, concurrently: before any lock.
    w::build_seed_indexes(store).await?;

    // 1. Arm, under the lock.
    let (arming, arm_wait, locked) = hold(store).await?;
    let columns = match sa::ts_columns_in(&arming, &opts.ts_balance_columns).await? {
        Ok(c) => c,
        Err(problem) => {
            arming.rollback().await?;
            return Ok(Outcome::refused(format!(
                "{problem}; nothing was changed\n"
            )));
        }
    };
    sa::install(&arming).await?;
    w::arm(&arming, columns.as_ref(), store.legacy_zone().name()).await?;
    let mut openings = sa::begin_snapshot(store).await?;
    arming.commit().await?;
    let armed_in = locked.elapsed();
    let opening = Instant::now();

    // 2. Openings, from the snapshot, without a lock.
    let inv = sa::inventory_in(&openings, false, &opts.ts_balance_columns).await?;
    let inventoried = opening.elapsed();
    let (text, verdict) = report(store, opts, &inv, map);
    let plan = match verdict {
        Ok(p) => p,
        Err(()) => {
            openings.rollback().await?;
            disarm(store).await?;
            return Ok(Outcome::refused(text));
        }
    };
    let opened = open(&mut openings, &plan).await?;
    sa::record(
        &openings,
        &inv,
        plan.policy.as_str(),
        plan.users.len(),
        &text,
        columns.as_ref().map(sa::TsBalanceColumns::text),
        w::OPENING,
    )
    .await?;
    openings.commit().await?;
    let opened_in = opening.elapsed();

    let mut closed = close(store).await?;
    closed.waited.0 = arm_wait;
    Ok(Outcome::done(
        format!(
            "{text}\n{}{}{}",
            adopted_line(&plan, opened, inv.ledger_max_id),
            closed.describe(armed_in, opened_in, inventoried),
            coexistence_note(columns.as_ref())
        ),
        false,
    ))
}

/// Finishes an apply interrupted after its openings committed.
pub(super) async fn finish(store: &Store) -> anyhow::Result<Outcome> {
    let columns = sa::ts_users::followed(store).await?;
    let closed = close(store).await?;
    Ok(Outcome::done(
        format!(
            "Finished the interrupted `adopt --apply` (its openings were written).\n{}{}",
            closed.describe(Duration::ZERO, Duration::ZERO, Duration::ZERO),
            coexistence_note(columns.as_ref())
        ),
        false,
    ))
}

/// Undoes an armed window whose openings never committed.
pub(super) async fn disarm(store: &Store) -> Result<(), StoreError> {
    let tx = sa::begin(store).await?;
    sa::lock_legacy(&tx).await?;
    w::disarm(&tx).await?;
    tx.commit().await?;
    Ok(())
}

/// What draining and closing did.
struct Closed {
    absorbed: i64,
    refused: Vec<(i64, String)>,
    drains: usize,
    /// The drains before the switch, between it and the close.
    before: Duration,
    after: Duration,
    /// The holds of the switch and of the close.
    switch: Duration,
    close: Duration,
    /// How long each hold waited for its locks (arming, switch, close):
    /// each attempt holds the writers at most 100 ms.
    waited: (Duration, Duration, Duration),
    /// The recording triggers were dropped (else they stay, idle).
    retired: bool,
}

impl Closed {
    fn describe(&self, armed_in: Duration, opened_in: Duration, inventory: Duration) -> String {
        let mut s = format!(
            "Legacy writes made while it ran: {} transaction(s) absorbed in {} drain(s), {} refused. \
             The legacy tables were held against writes for {} ms (arming), {} ms (switching \
             absorbing on) and {} ms (closing), once each had its locks (asked for {}, {} and \
             {} ms); openings {:.1} s (the inventory {:.1} s), drains {:.1} s before the \
             switch and {:.1} s after it.\n",
            self.absorbed,
            self.drains,
            self.refused.len(),
            armed_in.as_millis(),
            self.switch.as_millis(),
            self.close.as_millis(),
            self.waited.0.as_millis(),
            self.waited.1.as_millis(),
            self.waited.2.as_millis(),
            opened_in.as_secs_f64(),
            inventory.as_secs_f64(),
            self.before.as_secs_f64(),
            self.after.as_secs_f64(),
        );
        if !self.retired {
            s.push_str(
                "  The recording triggers (gw_absorb_record) could not be dropped beside the \
                 legacy writers; they stay, idle, until `release` drops them.\n",
            );
        }
        for (entries, reason) in &self.refused {
            s.push_str(&format!(
                "  - refused, its {entries} row(s) left as written (`verify` lists them): {reason}\n"
            ));
        }
        s
    }

    /// Drains in transactions of their own beside the legacy writers until
    /// at most `left` entries wait, or `budget` has passed.
    async fn drain_until(
        &mut self,
        store: &Store,
        left: i64,
        budget: Duration,
    ) -> anyhow::Result<Duration> {
        let began = Instant::now();
        let mut failed = 0;
        loop {
            // A drain beside live writers can lose a deadlock to one; it is
            // undone whole, and the next takes the same transactions again.
            let d = match drain_once(store).await {
                Ok(d) => d,
                Err(e) if failed < 5 => {
                    failed += 1;
                    tracing::warn!(error = %e, "a drain of the adoption window failed; retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.drains += 1;
            self.absorbed += d.absorbed;
            if d.left <= left || began.elapsed() > budget {
                return Ok(began.elapsed());
            }
        }
    }
}

/// A transaction holding the legacy tables against writes: with how long
/// taking them took, and when it had them (a hold is timed from there).
async fn hold(store: &Store) -> Result<(WriteTx, Duration, Instant), StoreError> {
    let asked = Instant::now();
    let tx = sa::begin(store).await?;
    sa::lock_legacy(&tx).await?;
    let held = Instant::now();
    Ok((tx, held - asked, held))
}

/// One drain in its own transaction.
async fn drain_once(store: &Store) -> Result<w::Drained, StoreError> {
    let tx = sa::begin(store).await?;
    let d = w::drain(&tx, DRAIN_BATCH).await?;
    tx.commit().await?;
    Ok(d)
}

/// Drains what the legacy systems wrote since arming and closes the
/// window: drains beside the writers; the switch (absorbing on for every
/// user with nothing waiting) under a brief hold; drains again, the
/// writers of users with nothing waiting now absorbed live, so the record
/// only shrinks; the rest and the close under a second brief hold.
async fn close(store: &Store) -> anyhow::Result<Closed> {
    let mut out = Closed {
        absorbed: 0,
        refused: Vec::new(),
        drains: 0,
        before: Duration::ZERO,
        after: Duration::ZERO,
        switch: Duration::ZERO,
        close: Duration::ZERO,
        waited: (Duration::ZERO, Duration::ZERO, Duration::ZERO),
        retired: false,
    };
    out.before = out
        .drain_until(store, LEFT_FOR_SWITCH, DRAIN_BUDGET)
        .await?;

    let (tx, waited, held) = hold(store).await?;
    out.waited.1 = waited;
    let columns = sa::ts_users::followed_in(&tx).await?;
    if let Some(c) = &columns {
        sa::ts_users::align(&tx, c).await?;
    }
    w::switch(&tx, columns.as_ref()).await?;
    tx.commit().await?;
    out.switch = held.elapsed();

    out.after = out
        .drain_until(store, LEFT_FOR_CLOSE, SETTLE_BUDGET)
        .await?;

    let (tx, waited, held) = hold(store).await?;
    out.waited.2 = waited;
    loop {
        let d = w::drain(&tx, i32::MAX).await?;
        out.drains += 1;
        out.absorbed += d.absorbed;
        if d.left == 0 {
            break;
        }
    }
    out.refused = w::refused(&tx).await?;
    w::close(&tx).await?;
    tx.commit().await?;
    out.close = held.elapsed();
    out.retired = w::retire(store).await?;
    Ok(out)
}
