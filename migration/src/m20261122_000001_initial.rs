//! The tables of DESIGN.md section 2.
//!
//! The five seed tables are created only where they do not exist yet (a
//! fresh database), with the types their own ORMs give them (SQLAlchemy
//! `Mapped[int]` → `integer`, peewee `FloatField` → `real`, `DateTimeField` →
//! naive `timestamp`), no CHECKs and no server defaults the ORMs do not make:
//! a fresh database looks like an adopted one, so there is one code path. On
//! an existing database `points-gateway adopt --apply` runs this inside its
//! own transaction; the seed tables are left as they are.
//!
//! Everything the gateway keeps for itself is in `gw_*` tables, where its
//! CHECKs let the database refuse a broken batch or balance.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_initial"
    }
}

fn id_i32() -> ColumnDef {
    ColumnDef::new("id")
        .integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

pub(crate) fn id_i64() -> ColumnDef {
    ColumnDef::new("id")
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

pub(crate) fn col(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
}

pub(crate) fn check(sql: &str) -> SimpleExpr {
    Expr::cust(sql.to_owned())
}

/// Indexes on the seed tables. None is unique: legacy history holds what a
/// unique index would refuse (a job charged twice under one key); the
/// gateway's idempotency keys are unique in `gw_entries`.
pub(crate) const SEED_INDEXES: &[&str] = &[
    // The UsageDetail page and the chain checks read by user, newest first.
    "CREATE INDEX IF NOT EXISTS ix_ledger_user_created ON mjk_point_transactions (user_id, created_at, id)",
    // Keys of legacy rows (a consume or recharge retried against history,
    // the refunds of a legacy consume).
    "CREATE INDEX IF NOT EXISTS ix_ledger_source ON mjk_point_transactions (source_id, type)",
    "CREATE INDEX IF NOT EXISTS ix_points_detail_user ON ts_points_detail (user_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS ix_fin_user_time ON ts_financial_transactions (user_id, time, id)",
    "CREATE INDEX IF NOT EXISTS ix_fal_tasks_key_created ON ts_fal_tasks (api_key, created_at)",
    "CREATE INDEX IF NOT EXISTS ix_fal_tasks_user_created ON ts_fal_tasks (user_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS ix_fal_tasks_created ON ts_fal_tasks (created_at, id)",
];

/// Indexes on the gateway's own tables; partial unique indexes are the
/// idempotency keys (supported by both engines).
const OWN_INDEXES: &[&str] = &[
    // One consume per (source_type, source_id), forever.
    "CREATE UNIQUE INDEX ux_entries_consume ON gw_entries (source_type, source_id) WHERE type = 'consume'",
    // One recharge per order id.
    "CREATE UNIQUE INDEX ux_entries_recharge ON gw_entries (source_id) WHERE type = 'recharge'",
    // One refund per refund key.
    "CREATE UNIQUE INDEX ux_entries_refund_key ON gw_entries (refund_key) WHERE refund_key IS NOT NULL",
    // Refund caps are summed per consume.
    "CREATE INDEX ix_entries_refund_of ON gw_entries (refund_of) WHERE refund_of IS NOT NULL",
    "CREATE INDEX ix_entries_user ON gw_entries (user_id, ledger_id)",
    // Consume draws live batches of one user; the sweep finds due batches.
    "CREATE INDEX ix_batches_user ON gw_point_batches (user_id, expires_at, id)",
    "CREATE INDEX ix_batches_due ON gw_point_batches (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL",
    "CREATE INDEX ix_alloc_entry ON gw_point_allocations (entry_id)",
    "CREATE INDEX ix_alloc_batch ON gw_point_allocations (batch_id)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in seed_tables() {
            manager.create_table(table).await?;
        }
        for table in own_tables() {
            manager.create_table(table).await?;
        }
        let db = manager.get_connection();
        for sql in SEED_INDEXES.iter().chain(OWN_INDEXES) {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Only the gateway's own tables: the seed tables hold the
        // platforms' data.
        for table in [
            "gw_adoption",
            "gw_point_allocations",
            "gw_entries",
            "gw_point_batches",
            "gw_users",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The five seed tables as their ORMs create them (`../shared/legacy/`).
fn seed_tables() -> Vec<TableCreateStatement> {
    vec![
        // SQLAlchemy model + Alembic (seed 000; `duration` by revision 95eb1a1c0af9).
        Table::create()
            .table("mjk_point_transactions")
            .if_not_exists()
            .col(col("user_id").uuid().not_null())
            .col(col("type").string_len(20).not_null())
            .col(col("amount").integer().not_null())
            .col(col("balance_before").integer().not_null())
            .col(col("balance_after").integer().not_null())
            .col(col("source_type").string_len(32).null())
            .col(col("source_id").string_len(64).null())
            .col(col("batch_id").big_integer().null())
            .col(col("description").text().null())
            .col(id_i64())
            .col(
                col("created_at")
                    .timestamp_with_time_zone()
                    .not_null()
                    .default(Expr::current_timestamp()),
            )
            .col(
                col("updated_at")
                    .timestamp_with_time_zone()
                    .not_null()
                    .default(Expr::current_timestamp()),
            )
            .col(col("duration").double().null())
            .to_owned(),
        // peewee models (seed 004): NOT NULL unless optional, no server defaults.
        Table::create()
            .table("ts_points_detail")
            .if_not_exists()
            .col(id_i32())
            .col(col("user_id").integer().not_null())
            .col(col("points").integer().not_null())
            .col(col("order_id").string_len(255).not_null())
            .col(col("title").string_len(255).not_null())
            .col(col("source_type").string_len(50).not_null())
            .col(col("balance_before").integer().not_null())
            .col(col("balance_after").integer().not_null())
            .col(col("created_at").timestamp().not_null())
            .to_owned(),
        Table::create()
            .table("ts_financial_transactions")
            .if_not_exists()
            .col(id_i32())
            .col(col("user_id").integer().not_null())
            .col(col("money").integer().not_null())
            .col(col("order_id").string_len(255).not_null())
            .col(col("title").string_len(255).not_null())
            .col(col("deployment_uuid").string_len(255).null())
            .col(col("time").timestamp().not_null())
            .col(col("transaction_type").integer().not_null())
            .col(col("pay_type").integer().not_null())
            .col(col("is_cash").integer().not_null())
            .to_owned(),
        Table::create()
            .table("ts_fal_account")
            .if_not_exists()
            .col(id_i32())
            .col(col("name").string_len(100).not_null())
            .col(col("api_key").string_len(150).not_null().unique_key())
            .col(col("balance").float().not_null())
            .col(col("use_cnt").integer().not_null())
            .col(col("error_cnt").integer().not_null())
            .col(col("status").integer().not_null())
            .col(col("remark").text().null())
            .to_owned(),
        Table::create()
            .table("ts_fal_tasks")
            .if_not_exists()
            .col(id_i32())
            .col(col("user_id").integer().not_null())
            .col(col("task_id").string_len(100).not_null().unique_key())
            .col(col("online_task_id").string_len(100).null())
            .col(col("app_name").string_len(150).not_null())
            .col(col("api_key").string_len(150).not_null())
            .col(col("task_type").string_len(100).not_null())
            .col(col("status").string_len(100).not_null())
            .col(col("money").integer().not_null())
            .col(col("cost_money").float().not_null())
            .col(col("is_refund").integer().not_null())
            .col(col("input_params").text().null())
            .col(col("output_params").text().null())
            .col(col("created_at").timestamp().not_null())
            .col(col("completed_at").timestamp().null())
            .to_owned(),
    ]
}

/// The gateway's own tables (DESIGN.md section 2). Times in UTC.
fn own_tables() -> Vec<TableCreateStatement> {
    vec![
        Table::create()
            .table("gw_users")
            .col(id_i32())
            .col(col("uuid").uuid().not_null().unique_key())
            .col(col("name").string_len(100).not_null())
            .col(col("balance").big_integer().not_null().default(0))
            .col(col("created_at").timestamp_with_time_zone().not_null())
            .col(col("updated_at").timestamp_with_time_zone().not_null())
            .check(check("balance >= 0"))
            .to_owned(),
        Table::create()
            .table("gw_point_batches")
            .col(id_i64())
            .col(col("user_id").integer().not_null())
            .col(col("kind").string_len(16).not_null())
            .col(col("amount").big_integer().not_null())
            .col(col("remaining").big_integer().not_null())
            .col(col("expires_at").timestamp_with_time_zone().null())
            .col(col("order_id").string_len(80).not_null().unique_key())
            .col(col("created_at").timestamp_with_time_zone().not_null())
            .check(check("amount > 0"))
            .check(check("remaining >= 0 AND remaining <= amount"))
            .check(check("kind IN ('paid', 'gift', 'opening', 'restored')"))
            .foreign_key(
                ForeignKey::create()
                    .from("gw_point_batches", "user_id")
                    .to("gw_users", "id"),
            )
            .to_owned(),
        Table::create()
            .table("gw_entries")
            .col(col("ledger_id").big_integer().not_null().primary_key())
            .col(col("user_id").integer().not_null())
            .col(col("type").string_len(20).not_null())
            .col(col("source_type").string_len(32).null())
            .col(col("source_id").string_len(64).null())
            .col(col("refund_key").string_len(64).null())
            .col(col("refund_of").big_integer().null())
            .col(col("request_hash").string_len(64).null())
            .col(col("detail_id").integer().null())
            .foreign_key(
                ForeignKey::create()
                    .from("gw_entries", "ledger_id")
                    .to("mjk_point_transactions", "id"),
            )
            .foreign_key(
                ForeignKey::create()
                    .from("gw_entries", "user_id")
                    .to("gw_users", "id"),
            )
            .to_owned(),
        Table::create()
            .table("gw_point_allocations")
            .col(id_i64())
            .col(col("entry_id").big_integer().not_null())
            .col(col("batch_id").big_integer().not_null())
            .col(col("amount").big_integer().not_null())
            .check(check("amount > 0"))
            .foreign_key(
                ForeignKey::create()
                    .from("gw_point_allocations", "entry_id")
                    .to("gw_entries", "ledger_id"),
            )
            .foreign_key(
                ForeignKey::create()
                    .from("gw_point_allocations", "batch_id")
                    .to("gw_point_batches", "id"),
            )
            .to_owned(),
        // When the gateway took over, and from what. One row.
        Table::create()
            .table("gw_adoption")
            .col(id_i32())
            .col(col("kind").string_len(16).not_null())
            .col(col("cutover_at").timestamp_with_time_zone().not_null())
            .col(col("ledger_cutover_id").big_integer().not_null())
            .col(col("detail_cutover_id").integer().not_null())
            .col(col("opening_balance").string_len(16).null())
            .col(col("users").integer().not_null())
            .col(col("report").text().null())
            .check(check("kind IN ('fresh', 'adopted')"))
            .to_owned(),
    ]
}
