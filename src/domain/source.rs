//! Source types, transaction types and the labels the UsageDetail page shows.

use std::fmt;

/// Whether a source type's rows carry the billed seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationRule {
    /// Billed by the second (TTS, video): a consume or hold must give it.
    Required,
    /// Given when the caller knows it (a ts charge that may or may not be
    /// timed).
    Optional,
    /// Not billed by time: a duration is a caller's mistake.
    Refused,
}

impl DurationRule {
    pub const ALL: [DurationRule; 3] = [
        DurationRule::Required,
        DurationRule::Optional,
        DurationRule::Refused,
    ];

    /// The value stored in `gw_source_types.duration`.
    pub fn as_str(self) -> &'static str {
        match self {
            DurationRule::Required => "required",
            DurationRule::Optional => "optional",
            DurationRule::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<DurationRule> {
        DurationRule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The source types the gateway shipped with, as a fixed list, before the
/// list became configuration (`gw_source_types`, seeded with these by its
/// migration): name, label, duration rule.
pub const DEFAULT_SOURCE_TYPES: [(&str, &str, DurationRule); 6] = [
    ("script", "【脚本生成】", DurationRule::Refused),
    ("polish", "【脚本润色】", DurationRule::Refused),
    ("voice_clone", "【声音克隆】", DurationRule::Refused),
    ("tts", "【配音合成】", DurationRule::Required),
    ("video", "【视频生成】", DurationRule::Required),
    ("fal", "【AI生成】", DurationRule::Refused),
];

/// What an AI job was: decides the description label and whether a
/// `duration` is required, accepted or refused. The platforms configure
/// their own (`gw_source_types`); a value of this type is one of them,
/// checked at construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceType {
    name: String,
    label: String,
    duration: DurationRule,
}

impl SourceType {
    /// Longest name: `mjk_point_transactions.source_type` is 32 characters.
    pub const MAX_NAME: usize = 32;
    /// Longest label.
    pub const MAX_LABEL: usize = 64;

    /// A source type as configured. The name is what rows store: lower-case
    /// ASCII letters, digits and `_`, starting with a letter, so that its
    /// GraphQL spelling (upper case) maps back to it one to one.
    pub fn new(name: &str, label: &str, duration: DurationRule) -> Result<SourceType, String> {
        Self::check_name(name)?;
        let label = label.trim();
        if label.is_empty() || label.chars().count() > Self::MAX_LABEL {
            return Err(format!(
                "a source type's label must be 1 to {} characters",
                Self::MAX_LABEL
            ));
        }
        if label.chars().any(|c| c.is_control()) {
            return Err("a source type's label must not contain control characters".into());
        }
        Ok(SourceType {
            name: name.to_owned(),
            label: label.to_owned(),
            duration,
        })
    }

    /// Whether `name` is a well-formed source type name.
    pub fn check_name(name: &str) -> Result<(), String> {
        let mut chars = name.chars();
        let well_formed = name.len() <= Self::MAX_NAME
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if well_formed {
            Ok(())
        } else {
            Err(format!(
                "a source type is 1 to {} lower-case letters, digits and _, starting with a letter",
                Self::MAX_NAME
            ))
        }
    }

    /// The gateway's default types, in their published order.
    pub fn defaults() -> Vec<SourceType> {
        DEFAULT_SOURCE_TYPES
            .into_iter()
            .map(|(name, label, duration)| SourceType {
                name: name.to_owned(),
                label: label.to_owned(),
                duration,
            })
            .collect()
    }

    /// One of the defaults by name.
    pub fn default_named(name: &str) -> Option<SourceType> {
        SourceType::defaults().into_iter().find(|t| t.name == name)
    }

    /// The value stored in `mjk_point_transactions.source_type`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn duration(&self) -> DurationRule {
        self.duration
    }

    /// Jobs run on fal: their refunds flag the `ts_fal_tasks` row.
    pub fn is_fal(&self) -> bool {
        self.name == "fal"
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The `type` column of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxType {
    Recharge,
    Consume,
    Refund,
    Expire,
    /// The balance a user had when the gateway adopted the database: the
    /// first row of their chain from the cutover on (`balance_before` 0).
    /// A new value in the ledger's `type` column, which the mjk system's
    /// readers do not know: they skip it rather than count it as a
    /// recharge.
    Opening,
}

impl TxType {
    pub const ALL: [TxType; 5] = [
        TxType::Recharge,
        TxType::Consume,
        TxType::Refund,
        TxType::Expire,
        TxType::Opening,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TxType::Recharge => "recharge",
            TxType::Consume => "consume",
            TxType::Refund => "refund",
            TxType::Expire => "expire",
            TxType::Opening => "opening",
        }
    }

    pub fn parse(s: &str) -> Option<TxType> {
        TxType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// +1 when the movement adds points, -1 when it removes them.
    pub fn sign(self) -> i64 {
        match self {
            TxType::Recharge | TxType::Refund | TxType::Opening => 1,
            TxType::Consume | TxType::Expire => -1,
        }
    }
}

/// Paid recharges come with money (and a `ts_financial_transactions` row);
/// gifts are granted by admins or promotions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RechargeKind {
    Paid,
    Gift,
}

impl RechargeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RechargeKind::Paid => "paid",
            RechargeKind::Gift => "gift",
        }
    }

    pub fn parse(s: &str) -> Option<RechargeKind> {
        match s {
            "paid" => Some(RechargeKind::Paid),
            "gift" => Some(RechargeKind::Gift),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RechargeKind::Paid => "【积分充值】",
            RechargeKind::Gift => "【积分赠送】",
        }
    }
}

pub const REFUND_LABEL: &str = "【退款】";
pub const EXPIRE_LABEL: &str = "【积分过期】";
pub const OPENING_LABEL: &str = "【期初余额】";

/// `label` followed by an optional caller note, as the UsageDetail page shows it.
pub fn describe(label: &str, note: Option<&str>) -> String {
    match note {
        Some(n) if !n.is_empty() => format!("{label}{n}"),
        _ => label.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_well_formed_and_only_tts_and_video_need_a_duration() {
        let by_duration: Vec<_> = SourceType::defaults()
            .into_iter()
            .filter(|t| {
                SourceType::new(t.as_str(), t.label(), t.duration()).expect("well formed");
                t.duration() == DurationRule::Required
            })
            .map(|t| t.as_str().to_owned())
            .collect();
        assert_eq!(by_duration, vec!["tts", "video"]);
    }

    #[test]
    fn names_are_lower_case_identifiers_and_labels_are_bounded() {
        for bad in ["", "TTS", "1st", "a-b", "a b", &"a".repeat(33)] {
            assert!(
                SourceType::new(bad, "【x】", DurationRule::Optional).is_err(),
                "{bad:?}"
            );
        }
        assert!(SourceType::new("agent_market", "【智能体市场】", DurationRule::Refused).is_ok());
        assert!(SourceType::new("a", "", DurationRule::Refused).is_err());
        assert!(SourceType::new("a", "x\u{0}", DurationRule::Refused).is_err());
        assert!(SourceType::new("a", &"x".repeat(65), DurationRule::Refused).is_err());
        for r in DurationRule::ALL {
            assert_eq!(DurationRule::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn description_is_the_label_then_the_note() {
        let tts = SourceType::default_named("tts").unwrap();
        assert_eq!(describe(tts.label(), None), "【配音合成】");
        assert_eq!(describe(tts.label(), Some("")), "【配音合成】");
        assert_eq!(
            describe(
                SourceType::default_named("fal").unwrap().label(),
                Some("flux")
            ),
            "【AI生成】flux"
        );
    }
}
