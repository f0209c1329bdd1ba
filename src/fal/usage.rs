//! The usage response, tolerant of fal's schema drift: older responses have
//! no `cost_total` (then `cost`), the oldest neither (then
//! `quantity × unit_price`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct UsagePage {
    #[serde(default)]
    pub summary: Option<Vec<UsageLine>>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    #[serde(default)]
    pub has_more: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(super) struct UsageLine {
    pub endpoint_id: String,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub quantity: Option<f64>,
    #[serde(default)]
    pub unit_price: Option<f64>,
    #[serde(default)]
    pub cost_total: Option<f64>,
    #[serde(default)]
    pub cost: Option<f64>,
}

impl UsageLine {
    /// What fal charged for this line, from the newest field present.
    pub fn charged(&self) -> f64 {
        self.cost_total
            .or(self.cost)
            .unwrap_or_else(|| self.quantity.unwrap_or(0.0) * self.unit_price.unwrap_or(0.0))
    }
}

/// fal's usage of one endpoint over the window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointUsage {
    /// The billing unit; several units for one endpoint are joined with `+`.
    pub unit: Option<String>,
    pub quantity: f64,
    pub cost_usd: f64,
}

/// fal's usage of one key over a window, per endpoint id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageSummary {
    pub endpoints: BTreeMap<String, EndpointUsage>,
}

impl UsageSummary {
    /// Adds a page's summary lines. Lines at different prices or discounts
    /// for one endpoint come as separate rows; they are summed here.
    pub(super) fn add(&mut self, lines: Vec<UsageLine>) {
        for line in lines {
            let charged = line.charged();
            let e = self.endpoints.entry(line.endpoint_id).or_default();
            e.quantity += line.quantity.unwrap_or(0.0);
            e.cost_usd += charged;
            if let Some(u) = line.unit {
                match &mut e.unit {
                    None => e.unit = Some(u),
                    Some(existing) if !existing.split('+').any(|x| x == u) => {
                        existing.push('+');
                        existing.push_str(&u);
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn total_cost_usd(&self) -> f64 {
        self.endpoints.values().map(|e| e.cost_usd).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(json: &str) -> UsageLine {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn cost_falls_back_through_the_schema_generations() {
        let current = line(
            r#"{"endpoint_id":"a","unit":"image","quantity":4,"unit_price":0.1,"cost_total":0.32,"cost":0.32}"#,
        );
        let later =
            line(r#"{"endpoint_id":"a","unit":"image","quantity":4,"unit_price":0.1,"cost":0.4}"#);
        let oldest = line(r#"{"endpoint_id":"a","unit":"image","quantity":4,"unit_price":0.1}"#);
        assert_eq!(current.charged(), 0.32);
        assert_eq!(later.charged(), 0.4);
        assert!((oldest.charged() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn lines_of_one_endpoint_are_summed_across_prices_and_pages() {
        let mut s = UsageSummary::default();
        s.add(vec![
            line(r#"{"endpoint_id":"a","unit":"image","quantity":2,"cost_total":0.2}"#),
            line(r#"{"endpoint_id":"a","unit":"image","quantity":3,"cost_total":0.24}"#),
        ]);
        s.add(vec![line(
            r#"{"endpoint_id":"b","unit":"seconds","quantity":8,"cost_total":0.8}"#,
        )]);
        assert_eq!(s.endpoints["a"].quantity, 5.0);
        assert!((s.endpoints["a"].cost_usd - 0.44).abs() < 1e-12);
        assert_eq!(s.endpoints["a"].unit.as_deref(), Some("image"));
        assert!((s.total_cost_usd() - 1.24).abs() < 1e-12);
    }
}
