//! `GET /v1/models/billing-events`: one event per billed request, tolerant
//! of the schema's generations (fal-platform-api.md §2.2):
//! - the oldest has `output_units`, `unit_price`, `percent_discount` and
//!   `cost_estimate_nano_usd`, no subtotal/discount/total;
//! - the current adds `cost_subtotal`, `cost_discount`, `cost_total`;
//! - a later one replaces `output_units` by `quantity` and adds `unit`
//!   and `tags`.
//!
//! The charge is kept in integer nano-USD, so sums are exact: from
//! `cost_estimate_nano_usd` when present, else from `cost_total`, else
//! from `quantity × unit_price` less the discount.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::FalError;

/// Events asked for per page: the documented maximum.
pub const BILLING_PAGE_LIMIT: u32 = 10_000;

/// Longest window fal accepts in one request (the documented cap).
pub const BILLING_MAX_WINDOW_DAYS: i64 = 90;

/// One page as fal sends it.
#[derive(Debug, Deserialize)]
pub(super) struct RawBillingPage {
    #[serde(default)]
    billing_events: Option<Vec<RawEvent>>,
    #[serde(default)]
    next_cursor: Option<String>,
    #[serde(default)]
    has_more: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    request_id: String,
    endpoint_id: String,
    timestamp: String,
    #[serde(default)]
    quantity: Option<f64>,
    #[serde(default)]
    output_units: Option<f64>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    unit_price: Option<f64>,
    #[serde(default)]
    percent_discount: Option<f64>,
    #[serde(default)]
    cost_total: Option<f64>,
    /// An integer in every example; a float is accepted and rounded.
    #[serde(default)]
    cost_estimate_nano_usd: Option<f64>,
    #[serde(default)]
    tags: Option<Value>,
}

/// One billed request.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingEvent {
    /// fal's queue request id (`ts_fal_tasks.online_task_id`).
    pub request_id: String,
    pub endpoint_id: String,
    pub billed_at: DateTime<Utc>,
    /// What fal charged, in nano-USD (1 USD = 10⁹).
    pub cost_nano: i64,
    pub quantity: Option<f64>,
    pub unit: Option<String>,
    pub unit_price: Option<f64>,
    pub percent_discount: Option<f64>,
    /// `tags` as fal sent them (JSON text), when present.
    pub tags: Option<String>,
}

/// A page of events and the cursor of the next, if any.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BillingPage {
    pub events: Vec<BillingEvent>,
    pub next_cursor: Option<String>,
}

impl RawBillingPage {
    pub(super) fn parse(self) -> Result<BillingPage, FalError> {
        let events = self
            .billing_events
            .ok_or_else(|| FalError::Malformed("no `billing_events` in the page".into()))?
            .into_iter()
            .map(RawEvent::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let more = self.has_more.unwrap_or(self.next_cursor.is_some());
        Ok(BillingPage {
            events,
            next_cursor: if more { self.next_cursor } else { None },
        })
    }
}

/// USD as fal writes it, in nano-USD; `None` for a value no charge can be.
fn nano(usd: f64) -> Option<i64> {
    let n = (usd * 1e9).round();
    (n.is_finite() && n.abs() < 9.0e18).then_some(n as i64)
}

impl RawEvent {
    fn parse(self) -> Result<BillingEvent, FalError> {
        let bad = |what: &str| {
            FalError::Malformed(format!("billing event {:?}: {what}", self.request_id))
        };
        let billed_at = DateTime::parse_from_rfc3339(&self.timestamp)
            .map_err(|_| bad("`timestamp` is not an RFC 3339 time"))?
            .with_timezone(&Utc);
        let quantity = self.quantity.or(self.output_units);
        let computed = || {
            let q = quantity?;
            let p = self.unit_price?;
            let off = self.percent_discount.unwrap_or(0.0);
            nano(q * p * (1.0 - off / 100.0))
        };
        let cost_nano = match self.cost_estimate_nano_usd {
            Some(n) if n.is_finite() && n.abs() < 9.0e18 => Some(n.round() as i64),
            Some(_) => return Err(bad("`cost_estimate_nano_usd` is not a number of nano-USD")),
            None => self.cost_total.and_then(nano).or_else(computed),
        }
        .ok_or_else(|| bad("no cost field"))?;
        if self.request_id.is_empty() || self.request_id.len() > 100 {
            return Err(bad("`request_id` is empty or longer than 100 characters"));
        }
        if self.endpoint_id.len() > 200 {
            return Err(bad("`endpoint_id` is longer than 200 characters"));
        }
        let tags = match self.tags {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.to_string()),
        };
        Ok(BillingEvent {
            request_id: self.request_id,
            endpoint_id: self.endpoint_id,
            billed_at,
            cost_nano,
            quantity,
            unit: self.unit,
            unit_price: self.unit_price,
            percent_discount: self.percent_discount,
            tags,
        })
    }
}

/// `[from, to)` cut into windows fal accepts, oldest first.
pub fn billing_windows(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step = chrono::Duration::days(BILLING_MAX_WINDOW_DAYS);
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = (start + step).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str) -> Result<BillingPage, FalError> {
        serde_json::from_str::<RawBillingPage>(json)
            .unwrap()
            .parse()
    }

    #[test]
    fn the_current_schema_reads_the_nano_usd_figure() {
        let p = page(
            r#"{"billing_events":[{"request_id":"abc123","endpoint_id":"fal-ai/flux/dev","timestamp":"2025-01-15T10:30:45Z",
              "output_units":2,"unit_price":0.025,"percent_discount":10,"cost_subtotal":0.05,"cost_discount":0.005,
              "cost_total":0.045,"cost_estimate_nano_usd":45000000}],"next_cursor":"MjAy","has_more":true}"#,
        )
        .unwrap();
        assert_eq!(p.events[0].cost_nano, 45_000_000);
        assert_eq!(p.events[0].quantity, Some(2.0));
        assert_eq!(p.next_cursor.as_deref(), Some("MjAy"));
        assert_eq!(
            p.events[0].billed_at,
            "2025-01-15T10:30:45Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn older_and_later_generations_fall_back_field_by_field() {
        // Oldest: no cost_total.
        let old = page(
            r#"{"billing_events":[{"request_id":"r","endpoint_id":"e","timestamp":"2025-01-15T10:30:45+08:00",
              "output_units":1.5,"unit_price":0.001,"percent_discount":null,"cost_estimate_nano_usd":1500000}],
              "next_cursor":null,"has_more":false}"#,
        )
        .unwrap();
        assert_eq!(old.events[0].cost_nano, 1_500_000);
        assert_eq!(
            old.events[0].billed_at.to_rfc3339(),
            "2025-01-15T02:30:45+00:00"
        );
        assert_eq!(old.next_cursor, None);
        // Later: quantity and unit, tags; no nano figure: from cost_total.
        let later = page(
            r#"{"billing_events":[{"request_id":"r","endpoint_id":"e","timestamp":"2025-01-15T10:30:45Z",
              "quantity":3,"unit":"images","unit_price":0.1,"percent_discount":null,"cost_total":0.3,
              "tags":{"job":"t-1"}}],"next_cursor":null,"has_more":false}"#,
        )
        .unwrap();
        assert_eq!(later.events[0].cost_nano, 300_000_000);
        assert_eq!(later.events[0].unit.as_deref(), Some("images"));
        assert_eq!(later.events[0].tags.as_deref(), Some(r#"{"job":"t-1"}"#));
        // Neither figure: quantity × price less the discount.
        let bare = page(
            r#"{"billing_events":[{"request_id":"r","endpoint_id":"e","timestamp":"2025-01-15T10:30:45Z",
              "output_units":4,"unit_price":0.1,"percent_discount":20}],"next_cursor":null,"has_more":false}"#,
        )
        .unwrap();
        assert_eq!(bare.events[0].cost_nano, 320_000_000);
    }

    #[test]
    fn an_event_without_any_cost_or_time_is_malformed() {
        let no_cost = page(
            r#"{"billing_events":[{"request_id":"r","endpoint_id":"e","timestamp":"2025-01-15T10:30:45Z"}],"next_cursor":null,"has_more":false}"#,
        );
        assert!(matches!(no_cost, Err(FalError::Malformed(_))));
        let bad_time = page(
            r#"{"billing_events":[{"request_id":"r","endpoint_id":"e","timestamp":"yesterday","cost_total":1}],"next_cursor":null,"has_more":false}"#,
        );
        assert!(matches!(bad_time, Err(FalError::Malformed(_))));
        assert!(matches!(
            page(r#"{"next_cursor":null}"#),
            Err(FalError::Malformed(_))
        ));
    }

    #[test]
    fn a_cursor_after_the_last_page_is_ignored() {
        let p = page(r#"{"billing_events":[],"next_cursor":"Mg==","has_more":false}"#).unwrap();
        assert_eq!(p.next_cursor, None);
    }

    #[test]
    fn windows_are_cut_at_ninety_days() {
        let from: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let to = from + chrono::Duration::days(200);
        let w = billing_windows(from, to);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0], (from, from + chrono::Duration::days(90)));
        assert_eq!(w[1].0, w[0].1);
        assert_eq!(w[2], (from + chrono::Duration::days(180), to));
        assert!(billing_windows(to, from).is_empty());
    }
}
