use async_graphql::{
    Enum, InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject, Value,
};

use crate::domain::source::{DurationRule, RechargeKind, SourceType, TxType};

/// A job's source type, as a consume, hold or filter names it: one of
/// `sourceTypes` (configured per database). Written as its stored name
/// (`"tts"`, `"agent_market"`) or in capitals (`TTS`, `"VOICE_CLONE"`), as
/// when the list was a fixed enum; both mean the stored name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTypeName(pub String);

#[Scalar(name = "SourceType")]
impl ScalarType for SourceTypeName {
    fn parse(value: Value) -> InputValueResult<Self> {
        let text = match &value {
            Value::String(s) => s.as_str(),
            Value::Enum(n) => n.as_str(),
            _ => return Err(InputValueError::expected_type(value)),
        };
        let name = text.to_ascii_lowercase();
        SourceType::check_name(&name).map_err(InputValueError::custom)?;
        Ok(SourceTypeName(name))
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_) | Value::Enum(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "DurationRule")]
pub enum DurationRuleGql {
    /// Billed by the second: consumes and holds must give `duration`.
    Required,
    /// `duration` accepted when the caller has it.
    Optional,
    /// `duration` refused.
    Refused,
}

impl From<DurationRule> for DurationRuleGql {
    fn from(v: DurationRule) -> DurationRuleGql {
        match v {
            DurationRule::Required => DurationRuleGql::Required,
            DurationRule::Optional => DurationRuleGql::Optional,
            DurationRule::Refused => DurationRuleGql::Refused,
        }
    }
}

/// A configured source type (`points-gateway source-types`).
#[derive(SimpleObject)]
#[graphql(name = "SourceTypeInfo")]
pub struct SourceTypeInfo {
    /// As stored in rows, and as `sourceType` arguments take it.
    pub name: String,
    /// The `【…】` label a consume's description starts with.
    pub label: String,
    pub duration: DurationRuleGql,
}

impl From<SourceType> for SourceTypeInfo {
    fn from(t: SourceType) -> SourceTypeInfo {
        SourceTypeInfo {
            name: t.as_str().to_owned(),
            label: t.label().to_owned(),
            duration: t.duration().into(),
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "TransactionType")]
pub enum TransactionTypeGql {
    Recharge,
    Consume,
    Refund,
    Expire,
    /// The balance carried over when the gateway adopted an existing
    /// database (`【期初余额】`).
    Opening,
}

impl From<TransactionTypeGql> for TxType {
    fn from(v: TransactionTypeGql) -> TxType {
        match v {
            TransactionTypeGql::Recharge => TxType::Recharge,
            TransactionTypeGql::Consume => TxType::Consume,
            TransactionTypeGql::Refund => TxType::Refund,
            TransactionTypeGql::Expire => TxType::Expire,
            TransactionTypeGql::Opening => TxType::Opening,
        }
    }
}

impl From<TxType> for TransactionTypeGql {
    fn from(v: TxType) -> TransactionTypeGql {
        match v {
            TxType::Recharge => TransactionTypeGql::Recharge,
            TxType::Consume => TransactionTypeGql::Consume,
            TxType::Refund => TransactionTypeGql::Refund,
            TxType::Expire => TransactionTypeGql::Expire,
            TxType::Opening => TransactionTypeGql::Opening,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
#[graphql(name = "RechargeKind")]
pub enum RechargeKindGql {
    #[default]
    Paid,
    Gift,
}

impl From<RechargeKindGql> for RechargeKind {
    fn from(v: RechargeKindGql) -> RechargeKind {
        match v {
            RechargeKindGql::Paid => RechargeKind::Paid,
            RechargeKindGql::Gift => RechargeKind::Gift,
        }
    }
}

impl From<RechargeKind> for RechargeKindGql {
    fn from(v: RechargeKind) -> RechargeKindGql {
        match v {
            RechargeKind::Paid => RechargeKindGql::Paid,
            RechargeKind::Gift => RechargeKindGql::Gift,
        }
    }
}
