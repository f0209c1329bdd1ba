//! The ledger's pure rules: the published draw order, which batches are
//! due, how a consume draws, how a refund returns. No I/O: every reader
//! and writer of batches takes its order and its arithmetic from here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

pub use crate::store::ledger::BatchRow;

/// The published draw order (DESIGN.md invariant 4) as a sort key: soonest
/// `expires_at` first, never-expiring last; among batches expiring alike,
/// given points (`gift`) before bought ones, as the ts platform's old
/// `deduct_user_money_by_id` spent them, so its `money`/`gift_money`
/// columns move as they always did; then oldest (ids grow with creation).
/// Compared in Rust, on the time values themselves, so it holds whatever
/// the engine's storage of timestamps.
pub fn draw_key(expires_at: Option<DateTime<Utc>>, gift: bool, id: i64) -> DrawKey {
    (expires_at.is_none(), expires_at, !gift, id)
}

/// The draw order before gift points came first (migration 12): consumes
/// written then drew in it, and `verify` accepts them.
pub fn draw_key_before_gift_first(expires_at: Option<DateTime<Utc>>, id: i64) -> DrawKey {
    (expires_at.is_none(), expires_at, false, id)
}

/// A batch's place in the draw order: never-expiring, expiry, paid, id.
pub type DrawKey = (bool, Option<DateTime<Utc>>, bool, i64);

/// The time a new ledger row of a user is stamped with: `at`, or the
/// user's last row's time if that is later (a clock behind another
/// instance's, or a clock step back). Ties are ordered by row id.
pub fn row_time(at: DateTime<Utc>, last: Option<DateTime<Utc>>) -> DateTime<Utc> {
    last.map_or(at, |last| at.max(last))
}

/// A batch is due (its points expire) from its `expires_at` on.
pub fn is_due(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

/// Splits a user's batches with points left into `(due, live)` at `now`,
/// each in the draw order. Due batches are expired before anything is
/// drawn, so an expired batch is never spent even when the sweep has not
/// run yet.
pub fn split_due(mut batches: Vec<BatchRow>, now: DateTime<Utc>) -> (Vec<BatchRow>, Vec<BatchRow>) {
    batches.sort_by_key(|b| draw_key(b.expires_at, b.gift, b.id));
    batches.into_iter().partition(|b| is_due(b.expires_at, now))
}

/// The live batches hold less than the amount drawn: batches and cached
/// balance disagree (which `verify` reports). The draw refuses rather than
/// overdraw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batches hold {missing} points less than drawn")]
pub struct Shortfall {
    pub missing: i64,
}

/// `(batch_id, amount)` parts covering `amount` from `live` (in the draw
/// order, as [`split_due`] gives them): each batch is emptied before the
/// next is touched, and no batch appears twice.
pub fn draw(live: &[BatchRow], amount: i64) -> Result<Vec<(i64, i64)>, Shortfall> {
    let mut need = amount;
    let mut parts = Vec::new();
    for b in live {
        if need == 0 {
            break;
        }
        if b.remaining <= 0 {
            continue;
        }
        let take = b.remaining.min(need);
        parts.push((b.id, take));
        need -= take;
    }
    if need > 0 {
        return Err(Shortfall { missing: need });
    }
    Ok(parts)
}

/// What a capture of `amount` takes from a hold's parts (`(batch_id,
/// amount)` in the hold's draw order): the batches the hold drew first pay
/// first, exactly as a consume of `amount` would have drawn them; the rest
/// of the hold goes back to the batches it came from, the last drawn first
/// untouched. More than the hold is a shortfall.
pub fn capture_parts(held: &[(i64, i64)], amount: i64) -> Result<Vec<(i64, i64)>, Shortfall> {
    let mut need = amount;
    let mut parts = Vec::new();
    for &(batch, reserved) in held {
        if need == 0 {
            break;
        }
        let take = reserved.min(need);
        if take > 0 {
            parts.push((batch, take));
            need -= take;
        }
    }
    if need > 0 {
        return Err(Shortfall { missing: need });
    }
    Ok(parts)
}

/// What a capture leaves of a hold, per batch: `held` less `taken` (both
/// `(batch_id, amount)`), in the hold's order.
pub fn capture_rest(held: &[(i64, i64)], taken: &[(i64, i64)]) -> Vec<(i64, i64)> {
    held.iter()
        .map(|&(batch, amount)| {
            let took: i64 = taken.iter().filter(|t| t.0 == batch).map(|t| t.1).sum();
            (batch, amount - took)
        })
        .filter(|p| p.1 > 0)
        .collect()
}

/// A refund asks for nothing or for more than is still refundable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refund of {requested} points, {refundable} still refundable")]
pub struct NotRefundable {
    pub refundable: i64,
    pub requested: i64,
}

/// Where a refund's points go, as `(batch_id, amount)`.
///
/// `drawn` is what the consume took, in its draw order; `returned` what
/// earlier refunds of it gave back, per batch. Each batch gets back at most
/// what it gave (the cap is cumulative over all refunds of one consume),
/// and a partial refund goes first to the batch drawn last: the one the
/// user would keep longest (reverse draw order). `requested: None` refunds
/// everything still refundable.
pub fn refund_plan(
    drawn: &[(i64, i64)],
    returned: &[(i64, i64)],
    requested: Option<i64>,
) -> Result<Vec<(i64, i64)>, NotRefundable> {
    let mut back: HashMap<i64, i64> = HashMap::with_capacity(returned.len());
    for &(batch, amount) in returned {
        *back.entry(batch).or_default() += amount;
    }
    let back = |batch: i64| back.get(&batch).copied().unwrap_or(0);
    let refundable: Vec<(i64, i64)> = drawn
        .iter()
        .rev()
        .map(|&(batch, amount)| (batch, amount - back(batch)))
        .filter(|&(_, left)| left > 0)
        .collect();
    let total: i64 = refundable.iter().map(|p| p.1).sum();
    let requested = requested.unwrap_or(total);
    if requested <= 0 || requested > total {
        return Err(NotRefundable {
            refundable: total,
            requested,
        });
    }
    let mut need = requested;
    let mut parts = Vec::new();
    for (batch, left) in refundable {
        if need == 0 {
            break;
        }
        let give = left.min(need);
        parts.push((batch, give));
        need -= give;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> Option<DateTime<Utc>> {
        Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).single()
    }

    fn batch(id: i64, remaining: i64, expires_at: Option<DateTime<Utc>>) -> BatchRow {
        BatchRow {
            id,
            remaining,
            expires_at,
            gift: false,
        }
    }

    #[test]
    fn gift_points_go_before_paid_ones_expiring_alike() {
        let now = at(1).expect("date");
        let gift = |id, expires_at| BatchRow {
            gift: true,
            ..batch(id, 10, expires_at)
        };
        let (_, live) = split_due(
            vec![
                batch(1, 10, None),
                gift(2, None),
                batch(3, 10, at(10)),
                gift(4, at(20)),
                gift(5, at(10)),
            ],
            now,
        );
        // Expiry still decides first: a gift that never expires waits
        // behind paid points that do.
        assert_eq!(ids(&live), vec![5, 3, 4, 2, 1]);
    }

    fn ids(v: &[BatchRow]) -> Vec<i64> {
        v.iter().map(|b| b.id).collect()
    }

    #[test]
    fn soonest_expiry_first_never_expiring_last_then_oldest() {
        let now = at(1).expect("date");
        let (due, live) = split_due(
            vec![
                batch(1, 10, None),
                batch(2, 10, at(20)),
                batch(3, 10, at(10)),
                batch(4, 10, None),
                batch(5, 10, at(10)),
            ],
            now,
        );
        assert!(due.is_empty());
        assert_eq!(ids(&live), vec![3, 5, 2, 1, 4]);
    }

    #[test]
    fn far_future_expiries_still_sort_before_never() {
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single();
        let (_, live) = split_due(
            vec![batch(1, 1, None), batch(2, 1, far)],
            at(1).expect("date"),
        );
        assert_eq!(ids(&live), vec![2, 1]);
    }

    #[test]
    fn expired_but_unswept_batches_are_due_not_live() {
        let now = at(15).expect("date");
        let (due, live) = split_due(
            vec![
                batch(1, 10, at(20)),
                batch(2, 10, at(15)),
                batch(3, 10, at(3)),
                batch(4, 10, None),
            ],
            now,
        );
        // Due exactly at its expiry instant, and in the draw order too.
        assert_eq!(ids(&due), vec![3, 2]);
        assert_eq!(ids(&live), vec![1, 4]);
        assert!(is_due(at(15), now));
        assert!(!is_due(at(16), now));
        assert!(!is_due(None, now));
    }

    #[test]
    fn row_times_never_go_back_for_a_user() {
        let (d1, d2) = (at(1).expect("date"), at(2).expect("date"));
        assert_eq!(row_time(d2, Some(d1)), d2);
        assert_eq!(row_time(d1, Some(d2)), d2, "a clock behind the last row");
        assert_eq!(row_time(d1, None), d1);
    }

    #[test]
    fn an_exact_fit_empties_the_batches_it_needs_and_no_more() {
        let live = [batch(1, 30, at(2)), batch(2, 20, at(3)), batch(3, 50, None)];
        assert_eq!(draw(&live, 50), Ok(vec![(1, 30), (2, 20)]));
        assert_eq!(draw(&live, 100), Ok(vec![(1, 30), (2, 20), (3, 50)]));
        assert_eq!(draw(&live, 31), Ok(vec![(1, 30), (2, 1)]));
        assert_eq!(draw(&live, 1), Ok(vec![(1, 1)]));
    }

    #[test]
    fn a_draw_beyond_the_batches_is_refused() {
        let live = [batch(1, 30, None)];
        assert_eq!(draw(&live, 31), Err(Shortfall { missing: 1 }));
        assert_eq!(draw(&[], 5), Err(Shortfall { missing: 5 }));
    }

    #[test]
    fn many_batches_are_drawn_in_order_each_once() {
        let live: Vec<BatchRow> = (0..4000).map(|i| batch(i, 1, None)).collect();
        let parts = draw(&live, 3999).expect("enough");
        assert_eq!(parts.len(), 3999);
        assert!(parts.iter().enumerate().all(|(i, p)| *p == (i as i64, 1)));
    }

    #[test]
    fn empty_batches_are_skipped() {
        let live = [batch(1, 0, at(2)), batch(2, 5, None)];
        assert_eq!(draw(&live, 5), Ok(vec![(2, 5)]));
    }

    #[test]
    fn a_capture_pays_from_the_batches_the_hold_drew_first() {
        let held = [(1, 30), (2, 20), (3, 50)];
        assert_eq!(
            capture_parts(&held, 100),
            Ok(vec![(1, 30), (2, 20), (3, 50)])
        );
        assert_eq!(capture_parts(&held, 35), Ok(vec![(1, 30), (2, 5)]));
        assert_eq!(capture_parts(&held, 1), Ok(vec![(1, 1)]));
        assert_eq!(capture_parts(&held, 101), Err(Shortfall { missing: 1 }));
        assert_eq!(capture_parts(&[], 1), Err(Shortfall { missing: 1 }));
        let taken = capture_parts(&held, 35).expect("within the hold");
        assert_eq!(capture_rest(&held, &taken), vec![(2, 15), (3, 50)]);
        assert_eq!(capture_rest(&held, &held), vec![]);
    }

    #[test]
    fn a_full_refund_returns_every_batch_its_share() {
        let drawn = [(1, 30), (2, 20)];
        assert_eq!(refund_plan(&drawn, &[], None), Ok(vec![(2, 20), (1, 30)]));
    }

    #[test]
    fn a_partial_refund_goes_to_the_batch_drawn_last() {
        let drawn = [(1, 30), (2, 20)];
        assert_eq!(
            refund_plan(&drawn, &[], Some(25)),
            Ok(vec![(2, 20), (1, 5)])
        );
        assert_eq!(refund_plan(&drawn, &[], Some(5)), Ok(vec![(2, 5)]));
    }

    #[test]
    fn refunds_together_never_exceed_the_consume() {
        let drawn = [(1, 30), (2, 20)];
        let returned = [(2, 20), (1, 5)];
        assert_eq!(refund_plan(&drawn, &returned, Some(25)), Ok(vec![(1, 25)]));
        assert_eq!(
            refund_plan(&drawn, &returned, Some(26)),
            Err(NotRefundable {
                refundable: 25,
                requested: 26
            })
        );
        let all_back = [(1, 30), (2, 20)];
        assert_eq!(
            refund_plan(&drawn, &all_back, None),
            Err(NotRefundable {
                refundable: 0,
                requested: 0
            })
        );
    }

    #[test]
    fn a_refund_of_nothing_is_refused() {
        assert!(refund_plan(&[(1, 3)], &[], Some(0)).is_err());
        assert!(refund_plan(&[(1, 3)], &[], Some(-1)).is_err());
        assert!(refund_plan(&[], &[], None).is_err());
    }
}
