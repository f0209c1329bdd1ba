use async_graphql::Enum;

use crate::domain::source::{RechargeKind, SourceType, TxType};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "SourceType")]
pub enum SourceTypeGql {
    Script,
    Polish,
    VoiceClone,
    Tts,
    Video,
    Fal,
}

impl From<SourceTypeGql> for SourceType {
    fn from(v: SourceTypeGql) -> SourceType {
        match v {
            SourceTypeGql::Script => SourceType::Script,
            SourceTypeGql::Polish => SourceType::Polish,
            SourceTypeGql::VoiceClone => SourceType::VoiceClone,
            SourceTypeGql::Tts => SourceType::Tts,
            SourceTypeGql::Video => SourceType::Video,
            SourceTypeGql::Fal => SourceType::Fal,
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
