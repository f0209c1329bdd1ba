//! GraphQL object types; each wraps a row and resolves only what is asked.

mod balance;
mod billing;
mod costs;
mod enums;
mod fal;
mod hold;
mod ledger;
mod page;
mod usage_node;
mod user;

pub use balance::BalanceChange;
pub use billing::{FalBillingFlagGql, FalBillingLine, FalBillingRun, FalBillingTotal};
pub use costs::AccountCost;
pub use enums::{RechargeKindGql, SourceTypeInfo, SourceTypeName, TransactionTypeGql};
pub use fal::{FalAccount, FalTask};
pub use hold::{HoldChange, HoldGql, HoldStatusGql};
pub use ledger::{ExpireReportGql, FinancialTransaction, PointsDetail, UsageDetail};
pub use page::{
    connection, FalBillingLineConnection, FalTaskConnection, FinancialTransactionConnection,
    HoldConnection, PointsDetailConnection, TotalCount, UsageDetailConnection, UserConnection,
};
pub use usage_node::PageNode;
pub use user::User;
