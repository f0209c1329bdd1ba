//! How a line reads outside the store: the same columns, under the same
//! names and in the same units, in GraphQL (`FalBillingLine`) and in the
//! CSV export.

use crate::domain::reconcile::Flags;
use crate::store::read::billing::LineRow;

/// nano-USD as dollars (display; exact sums use the integers).
pub fn usd(nano: i64) -> f64 {
    nano as f64 / 1e9
}

/// nano-USD as points at `points_per_usd`.
pub fn points(nano: i64, points_per_usd: f64) -> f64 {
    ((nano as f64) * points_per_usd / 1e9 * 1e6).round() / 1e6
}

/// The flag names of a line, in their fixed order.
pub fn flag_names(bits: i32) -> Vec<&'static str> {
    Flags::from_bits(bits).iter().map(|f| f.name()).collect()
}

/// The export's header: the GraphQL field names of `FalBillingLine`.
pub const CSV_COLUMNS: [&str; 23] = [
    "id",
    "accountId",
    "at",
    "taskId",
    "requestId",
    "userId",
    "endpointId",
    "taskStatus",
    "chargedPoints",
    "refundedPoints",
    "taskRefunded",
    "ledgerChargedPoints",
    "ledgerRefundedPoints",
    "costMoneyUsd",
    "falCostUsd",
    "falCostNanoUsd",
    "falEvents",
    "falQuantity",
    "falUnit",
    "marginUsd",
    "marginNanoUsd",
    "marginPoints",
    "flags",
];

/// One record of the export, in [`CSV_COLUMNS`] order; flags joined by `|`.
pub fn csv_record(row: &LineRow, points_per_usd: f64) -> Vec<String> {
    let l = &row.line;
    let opt = |v: Option<String>| v.unwrap_or_default();
    vec![
        row.id.to_string(),
        l.account_id.to_string(),
        l.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        opt(l.task_id.clone()),
        opt(l.request_id.clone()),
        opt(l.user_id.map(|u| u.to_string())),
        l.endpoint_id.clone(),
        opt(l.task_status.clone()),
        l.charged_points.to_string(),
        l.refunded_points.to_string(),
        l.task_refunded.to_string(),
        l.ledger_charged.to_string(),
        l.ledger_refunded.to_string(),
        opt(l.cost_money_nano.map(|n| usd(n).to_string())),
        opt(l.fal_cost_nano.map(|n| usd(n).to_string())),
        opt(l.fal_cost_nano.map(|n| n.to_string())),
        l.fal_events.to_string(),
        opt(l.fal_quantity.map(|q| q.to_string())),
        opt(l.fal_unit.clone()),
        usd(l.margin_nano).to_string(),
        l.margin_nano.to_string(),
        points(l.margin_nano, points_per_usd).to_string(),
        flag_names(l.flags).join("|"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_exactly_where_they_can() {
        assert_eq!(usd(45_000_000), 0.045);
        assert_eq!(points(-320_000_000, 100.0), -32.0);
        assert_eq!(points(1, 100.0), 0.0);
        assert_eq!(
            flag_names(4 | 16),
            vec!["UNKNOWN_REQUEST", "NEGATIVE_MARGIN"]
        );
    }
}
