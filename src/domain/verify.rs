//! `points-gateway verify`: every invariant of DESIGN.md section 3, checked
//! over the whole database. Read-only; each violation names its rows.

use std::collections::HashMap;

use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::domain::ledger::rules::{draw_key, draw_key_before_gift_first, DrawKey};
use crate::domain::source::TxType;
use crate::store::adopt::ts_users;
use crate::store::{audit, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule: `chain`, `time_order`, `balance`, `batch`, `allocation`,
    /// `draw_order`, `refund_cap`, `mirror`, `fal_refund`, `hold`, `key` (a
    /// job key owned by a hold and a consume at once), `legacy_view`
    /// (`ts_users` out of step with the batches where an adoption keeps it
    /// so), `foreign`
    /// (a ledger row after the cutover that the gateway did not write).
    pub rule: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

/// What was checked, for the report line.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    pub users: u64,
    pub ledger_rows: u64,
    pub batches: u64,
    /// The last ledger id before the gateway took over (0: none).
    pub cutover: i64,
}

const CHUNK: i64 = 20_000;

pub async fn verify(store: &Store) -> Result<(Checked, Vec<Violation>), StoreError> {
    let mut audit = Audit {
        store,
        v: Vec::new(),
        checked: Checked::default(),
    };
    let last_after = audit.chains().await?;
    audit.balances(last_after).await?;
    audit.batches().await?;
    audit.holds_keys_and_legacy_view().await?;
    audit.allocations_and_draw_order().await?;
    audit.refund_caps().await?;
    audit.mirrors_and_fal_flags().await?;
    audit.orphans().await?;
    Ok((audit.checked, audit.v))
}

/// One pass of `verify`: the violations found so far and what was read.
struct Audit<'a> {
    store: &'a Store,
    v: Vec<Violation>,
    checked: Checked,
}

impl Audit<'_> {
    fn push(&mut self, rule: &'static str, detail: String) {
        self.v.push(Violation { rule, detail });
    }

    /// Every user's chain from the cutover on; returns each user's last
    /// `balance_after`.
    async fn chains(&mut self) -> Result<HashMap<Uuid, i64>, StoreError> {
        // 1. Chains, read in id order per user, a chunk at a time.
        let mut last_after: HashMap<Uuid, i64> = HashMap::new();
        let mut last_time: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        // The invariants hold from the cutover on (DESIGN.md 3.11): every
        // user's chain starts at 0 there (an adopted balance is an `opening`
        // row); history before it is information, not a violation.
        let cutover = audit::cutover(self.store).await?;
        self.checked.cutover = cutover;
        let mut last_id: i64 = cutover;
        loop {
            let rows = audit::chain_chunk(self.store, last_id, CHUNK).await?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let (id, user, amount, before, after) = (r.id, r.user, r.amount, r.before, r.after);
                if !r.gateway {
                    last_id = id;
                    self.checked.ledger_rows += 1;
                    self.push("foreign",
                        format!(
                            "row {id}: written after the cutover by something other than the gateway \
                             (user {user}, {} {amount}); not part of any balance",
                            r.tx_type
                        ),
                    );
                    continue;
                }
                let ty = r.tx_type;
                // Ledger order is time order per user (invariant 7): the
                // UsageDetail page, newest first by time, chains row to row.
                if let Some(prev) = last_time.insert(user, r.created_at) {
                    if r.created_at < prev {
                        self.push("time_order",
                            format!(
                                "row {id}: stamped {} before the previous row of user {user} ({prev})",
                                r.created_at
                            ),
                        );
                    }
                }
                last_id = id;
                self.checked.ledger_rows += 1;
                let sign = match TxType::parse(&ty) {
                    Some(t) => t.sign(),
                    None => {
                        self.push("chain", format!("row {id}: unknown type {ty:?}"));
                        continue;
                    }
                };
                if amount <= 0 {
                    self.push(
                        "chain",
                        format!("row {id}: amount {amount} is not positive"),
                    );
                }
                if after != before + sign * amount {
                    self.push(
                        "chain",
                        format!("row {id}: {before} {ty} {amount} gives {after}"),
                    );
                }
                if after < 0 {
                    self.push(
                        "chain",
                        format!("row {id}: balance_after {after} is negative"),
                    );
                }
                let prev = last_after.get(&user).copied().unwrap_or(0);
                if before != prev {
                    self.push("chain",
                        format!("row {id}: balance_before {before} but the previous row of user {user} ended at {prev}"),
                    );
                }
                last_after.insert(user, after);
            }
        }
        Ok(last_after)
    }

    async fn balances(&mut self, mut last_after: HashMap<Uuid, i64>) -> Result<(), StoreError> {
        // 2. Cached balance = last balance_after = what the batches hold
        // (remaining + reserved); held = open holds = reserved, within balance.
        for u in audit::users(self.store).await? {
            self.checked.users += 1;
            let (id, balance, in_batches) = (u.id, u.balance, u.in_batches);
            if u.held != u.open_holds || u.held != u.reserved || u.held > balance {
                self.push(
                    "hold",
                    format!(
                        "user {id}: held {}, open holds {}, batches reserve {}, balance {balance}",
                        u.held, u.open_holds, u.reserved
                    ),
                );
            }
            let ledger = last_after.remove(&u.uuid).unwrap_or(0);
            if balance != ledger {
                self.push(
                    "balance",
                    format!("user {id}: cached balance {balance}, ledger says {ledger}"),
                );
            }
            if balance != in_batches {
                self.push(
                    "balance",
                    format!("user {id}: cached balance {balance}, batches hold {in_batches}"),
                );
            }
        }
        for (uuid, _) in last_after {
            self.push("balance", format!("ledger rows for unknown user {uuid}"));
        }
        Ok(())
    }

    async fn batches(&mut self) -> Result<(), StoreError> {
        // 3. Each batch: remaining + reserved = amount - drawn + returned -
        // expired, within [0, amount]; reserved = its open holds' parts.
        for b in audit::batches(self.store).await? {
            self.checked.batches += 1;
            let (id, amount, remaining, moved, expired) =
                (b.id, b.amount, b.remaining, b.moved, b.expired);
            let holds = remaining + b.reserved;
            if remaining < 0 || b.reserved < 0 || holds > amount {
                self.push(
                    "batch",
                    format!(
                        "batch {id}: remaining {remaining} + reserved {} outside [0, {amount}]",
                        b.reserved
                    ),
                );
            }
            if holds != amount + moved - expired {
                self.push(
                    "batch",
                    format!("batch {id}: remaining {remaining} + reserved {}, but {amount} {moved:+} moved - {expired} expired", b.reserved),
                );
            }
            if b.reserved != b.held_parts {
                self.push(
                    "hold",
                    format!(
                        "batch {id}: reserved {}, open holds' parts {}",
                        b.reserved, b.held_parts
                    ),
                );
            }
        }
        Ok(())
    }

    async fn holds_keys_and_legacy_view(&mut self) -> Result<(), StoreError> {
        // 3b. Holds: parts add up, settlements fit their status, captures
        // wrote the consume row they say from the batches held.
        for detail in audit::hold_mismatches(self.store).await? {
            self.push("hold", detail);
        }

        // 3c. One owner per job key: a hold's key holds no other consume row.
        for detail in audit::shared_job_keys(self.store).await? {
            self.push("key", detail);
        }

        // 3d. Legacy view: where an adoption keeps ts_users in step, its
        // columns hold what the user's batches hold of each funds.
        if let Some(columns) = ts_users::followed(self.store).await? {
            for (id, paid, gift, ts_paid, ts_gift) in ts_users::drift(self.store, &columns).await? {
                self.push(
                    "legacy_view",
                    format!(
                        "ts user {id}: batches hold {paid} paid + {gift} gift, \
                         ts_users {ts_paid} + {ts_gift}"
                    ),
                );
            }
        }
        Ok(())
    }

    async fn allocations_and_draw_order(&mut self) -> Result<(), StoreError> {
        // 4. Allocations sum to every consume and refund.
        for (id, ty, amount, allocated) in audit::misallocated(self.store).await? {
            self.push(
                "allocation",
                format!("{ty} {id}: amount {amount}, allocations {allocated}"),
            );
        }

        // 4b. Consumes drew in the published order (invariant 4): each in the
        // current one, or, for consumes written before gift points came first
        // (migration 12), in the one of then.
        let mut after = (0_i64, 0_i64);
        let mut current: Option<DrawCheck> = None;
        loop {
            let steps = audit::draw_steps(self.store, after, CHUNK).await?;
            let Some(last) = steps.last() else {
                break;
            };
            after = (last.entry_id, last.allocation_id);
            for step in steps {
                let keys = (
                    draw_key(step.expires_at, step.gift, step.batch_id),
                    draw_key_before_gift_first(step.expires_at, step.batch_id),
                );
                match current.as_mut() {
                    Some(c) if c.entry == step.entry_id => c.step(keys, step.batch_id),
                    _ => {
                        if let Some(done) = current.take() {
                            done.report(&mut self.v);
                        }
                        current = Some(DrawCheck::new(step.entry_id, keys, step.batch_id));
                    }
                }
            }
        }
        if let Some(done) = current.take() {
            done.report(&mut self.v);
        }
        Ok(())
    }

    async fn refund_caps(&mut self) -> Result<(), StoreError> {
        // 5. Refund caps, per consume and per (consume, batch).
        for (id, amount, refunded) in audit::over_refunded(self.store, self.checked.cutover).await?
        {
            self.push(
                "refund_cap",
                format!("consume {id}: consumed {amount}, refunded {refunded}"),
            );
        }
        for (consume, batch, back, drawn) in
            audit::refunds_per_batch(self.store, self.checked.cutover).await?
        {
            if back > drawn {
                self.push(
                    "refund_cap",
                    format!("consume {consume}: batch {batch} got {back} back but gave {drawn}"),
                );
            }
        }
        Ok(())
    }

    async fn mirrors_and_fal_flags(&mut self) -> Result<(), StoreError> {
        // 6. One ts_points_detail mirror per ledger row, with the same figures.
        for id in audit::unmirrored(self.store).await? {
            self.push(
                "mirror",
                format!("ledger row {id}: ts_points_detail mirror missing or different"),
            );
        }

        // 7. Refunded fal jobs are flagged on the task.
        for task in audit::unflagged_fal_refunds(self.store).await? {
            self.push(
                "fal_refund",
                format!("fal task {task} was refunded but is_refund is not 1"),
            );
        }
        Ok(())
    }

    /// Rule 8: every gateway entry has its ledger row and its user, every
    /// allocation its entry and its batch. No foreign key says so on
    /// PostgreSQL since migration 15 (each was a query per write on rows
    /// the writer had just read or written); this is the check instead.
    async fn orphans(&mut self) -> Result<(), StoreError> {
        for (what, id) in audit::orphans(self.store).await? {
            self.push(
                "orphan",
                format!("{what} {id}: the row it names is missing"),
            );
        }
        Ok(())
    }
}

/// One consume's allocations, checked against both draw orders.
struct DrawCheck {
    entry: i64,
    last: (DrawKey, DrawKey),
    /// Still in order under the current key, and under the one before.
    in_order: (bool, bool),
    /// The first pair out of the current order, for the report.
    broken: Option<(i64, i64)>,
    last_batch: i64,
}

impl DrawCheck {
    fn new(entry: i64, keys: (DrawKey, DrawKey), batch: i64) -> DrawCheck {
        DrawCheck {
            entry,
            last: keys,
            in_order: (true, true),
            broken: None,
            last_batch: batch,
        }
    }

    fn step(&mut self, keys: (DrawKey, DrawKey), batch: i64) {
        if keys.0 <= self.last.0 {
            self.in_order.0 = false;
            self.broken.get_or_insert((batch, self.last_batch));
        }
        if keys.1 <= self.last.1 {
            self.in_order.1 = false;
        }
        self.last = keys;
        self.last_batch = batch;
    }

    fn report(self, v: &mut Vec<Violation>) {
        if let (false, false, Some((batch, before))) =
            (self.in_order.0, self.in_order.1, self.broken)
        {
            v.push(Violation {
                rule: "draw_order",
                detail: format!(
                    "consume {}: drew batch {batch} after batch {before}, against the draw order",
                    self.entry
                ),
            });
        }
    }
}
