//! Source types, transaction types and the labels the UsageDetail page shows.

use std::fmt;

/// What an AI job was: decides the description label and whether a
/// `duration` is required (billed by the second) or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    Script,
    Polish,
    VoiceClone,
    Tts,
    Video,
    Fal,
}

impl SourceType {
    pub const ALL: [SourceType; 6] = [
        SourceType::Script,
        SourceType::Polish,
        SourceType::VoiceClone,
        SourceType::Tts,
        SourceType::Video,
        SourceType::Fal,
    ];

    /// The value stored in `mjk_point_transactions.source_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Script => "script",
            SourceType::Polish => "polish",
            SourceType::VoiceClone => "voice_clone",
            SourceType::Tts => "tts",
            SourceType::Video => "video",
            SourceType::Fal => "fal",
        }
    }

    pub fn parse(s: &str) -> Option<SourceType> {
        SourceType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            SourceType::Script => "【脚本生成】",
            SourceType::Polish => "【脚本润色】",
            SourceType::VoiceClone => "【声音克隆】",
            SourceType::Tts => "【配音合成】",
            SourceType::Video => "【视频生成】",
            SourceType::Fal => "【AI生成】",
        }
    }

    /// TTS and video are billed by the second, so their rows carry a duration.
    pub fn billed_by_duration(self) -> bool {
        matches!(self, SourceType::Tts | SourceType::Video)
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn every_source_type_round_trips_through_its_column_value() {
        for t in SourceType::ALL {
            assert_eq!(SourceType::parse(t.as_str()), Some(t));
        }
        assert_eq!(SourceType::parse("TTS"), None);
    }

    #[test]
    fn only_tts_and_video_are_billed_by_duration() {
        let by_duration: Vec<_> = SourceType::ALL
            .into_iter()
            .filter(|t| t.billed_by_duration())
            .collect();
        assert_eq!(by_duration, vec![SourceType::Tts, SourceType::Video]);
    }

    #[test]
    fn description_is_the_label_then_the_note() {
        assert_eq!(describe(SourceType::Tts.label(), None), "【配音合成】");
        assert_eq!(describe(SourceType::Tts.label(), Some("")), "【配音合成】");
        assert_eq!(
            describe(SourceType::Fal.label(), Some("flux")),
            "【AI生成】flux"
        );
    }
}
