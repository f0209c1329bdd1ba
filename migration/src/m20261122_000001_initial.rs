//! All tables of DESIGN.md section 2, their indexes, and the CHECKs that let
//! the database itself refuse a broken ledger row.

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

fn id_i64() -> ColumnDef {
    ColumnDef::new("id")
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn col(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
}

fn check(sql: &str) -> SimpleExpr {
    Expr::cust(sql.to_owned())
}

/// Indexes that SQL builders cannot express portably (partial unique
/// indexes back idempotency keys that share a column with other row types).
const RAW_INDEXES: &[&str] = &[
    // Ledger: the UsageDetail page and the chain checks read by user, newest first.
    "CREATE INDEX ix_ledger_user_created ON mjk_point_transactions (user_id, created_at, id)",
    // Idempotency: one consume per (source_type, source_id), forever.
    "CREATE UNIQUE INDEX ux_ledger_consume_source ON mjk_point_transactions (source_type, source_id) WHERE type = 'consume'",
    // Idempotency: one recharge per order id.
    "CREATE UNIQUE INDEX ux_ledger_recharge_order ON mjk_point_transactions (source_id) WHERE type = 'recharge'",
    // Idempotency: one refund per refund key.
    "CREATE UNIQUE INDEX ux_ledger_refund_key ON mjk_point_transactions (refund_key) WHERE refund_key IS NOT NULL",
    // Refund caps are summed per consume.
    "CREATE INDEX ix_ledger_refund_of ON mjk_point_transactions (refund_of) WHERE refund_of IS NOT NULL",
    // Consume draws live batches of one user; the sweep finds due batches.
    "CREATE INDEX ix_batches_user ON mjk_point_batches (user_id, expires_at, id)",
    "CREATE INDEX ix_batches_due ON mjk_point_batches (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL",
    "CREATE INDEX ix_alloc_entry ON mjk_point_allocations (entry_id)",
    "CREATE INDEX ix_alloc_batch ON mjk_point_allocations (batch_id)",
    "CREATE INDEX ix_points_detail_user ON ts_points_detail (user_id, created_at, id)",
    "CREATE UNIQUE INDEX ux_points_detail_ledger ON ts_points_detail (ledger_id) WHERE ledger_id IS NOT NULL",
    "CREATE INDEX ix_fin_user_time ON ts_financial_transactions (user_id, time, id)",
    "CREATE INDEX ix_fal_tasks_key_created ON ts_fal_tasks (api_key, created_at)",
    "CREATE INDEX ix_fal_tasks_user_created ON ts_fal_tasks (user_id, created_at, id)",
    "CREATE INDEX ix_fal_tasks_created ON ts_fal_tasks (created_at, id)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("ts_users")
                    .col(id_i32())
                    .col(col("uuid").uuid().not_null().unique_key())
                    .col(col("name").string_len(100).not_null())
                    .col(col("balance").big_integer().not_null().default(0))
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .col(col("updated_at").timestamp_with_time_zone().not_null())
                    .check(check("balance >= 0"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("mjk_point_batches")
                    .col(id_i64())
                    .col(col("user_id").integer().not_null())
                    .col(col("kind").string_len(16).not_null())
                    .col(col("amount").big_integer().not_null())
                    .col(col("remaining").big_integer().not_null())
                    .col(col("expires_at").timestamp_with_time_zone().null())
                    .col(col("order_id").string_len(64).not_null().unique_key())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .check(check("amount > 0"))
                    .check(check("remaining >= 0 AND remaining <= amount"))
                    .check(check("kind IN ('paid', 'gift')"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("mjk_point_batches", "user_id")
                            .to("ts_users", "id"),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("mjk_point_transactions")
                    .col(id_i64())
                    .col(col("user_id").uuid().not_null())
                    .col(col("type").string_len(20).not_null())
                    .col(col("amount").big_integer().not_null().default(0))
                    .col(col("balance_before").big_integer().not_null().default(0))
                    .col(col("balance_after").big_integer().not_null().default(0))
                    .col(col("source_type").string_len(32).null())
                    .col(col("source_id").string_len(64).null())
                    .col(col("batch_id").big_integer().null())
                    .col(col("duration").double().null())
                    .col(col("description").text().null())
                    .col(col("refund_key").string_len(64).null())
                    .col(col("refund_of").big_integer().null())
                    .col(col("request_hash").string_len(64).null())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .col(col("updated_at").timestamp_with_time_zone().not_null())
                    .check(check("amount > 0"))
                    .check(check("balance_after >= 0 AND balance_before >= 0"))
                    .check(check(
                        "(type IN ('recharge', 'refund') AND balance_after = balance_before + amount) \
                         OR (type IN ('consume', 'expire') AND balance_after = balance_before - amount)",
                    ))
                    .check(check("duration IS NULL OR duration >= 0"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("mjk_point_allocations")
                    .col(id_i64())
                    .col(col("entry_id").big_integer().not_null())
                    .col(col("batch_id").big_integer().not_null())
                    .col(col("amount").big_integer().not_null())
                    .check(check("amount > 0"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("mjk_point_allocations", "entry_id")
                            .to("mjk_point_transactions", "id"),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from("mjk_point_allocations", "batch_id")
                            .to("mjk_point_batches", "id"),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("ts_points_detail")
                    .col(id_i32())
                    .col(col("user_id").integer().not_null())
                    .col(col("points").integer().not_null())
                    .col(col("order_id").string_len(255).null())
                    .col(col("title").string_len(255).null())
                    .col(col("source_type").string_len(50).null())
                    .col(col("balance_before").integer().not_null())
                    .col(col("balance_after").integer().not_null())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .col(col("ledger_id").big_integer().null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("ts_financial_transactions")
                    .col(id_i32())
                    .col(col("user_id").integer().not_null())
                    .col(col("money").integer().not_null())
                    .col(col("order_id").string_len(255).null())
                    .col(col("title").string_len(255).null())
                    .col(col("deployment_uuid").string_len(255).null())
                    .col(col("time").timestamp_with_time_zone().not_null())
                    .col(col("transaction_type").integer().not_null())
                    .col(col("pay_type").integer().null())
                    .col(col("is_cash").integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("ts_fal_account")
                    .col(id_i32())
                    .col(col("name").string_len(100).not_null())
                    .col(col("api_key").string_len(150).not_null().unique_key())
                    .col(col("balance").double().not_null().default(0.0))
                    .col(col("use_cnt").integer().not_null().default(0))
                    .col(col("error_cnt").integer().not_null().default(0))
                    .col(col("status").integer().not_null().default(1))
                    .col(col("remark").text().null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("ts_fal_tasks")
                    .col(id_i32())
                    .col(col("user_id").integer().not_null())
                    .col(col("task_id").string_len(100).not_null().unique_key())
                    .col(col("online_task_id").string_len(100).null())
                    .col(col("app_name").string_len(150).not_null())
                    .col(col("api_key").string_len(150).not_null())
                    .col(col("task_type").string_len(100).null())
                    .col(col("status").string_len(100).not_null())
                    .col(col("money").integer().not_null().default(0))
                    .col(col("cost_money").double().not_null().default(0.0))
                    .col(col("is_refund").integer().not_null().default(0))
                    .col(col("input_params").text().null())
                    .col(col("output_params").text().null())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .col(col("completed_at").timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;

        let db = manager.get_connection();
        for sql in RAW_INDEXES {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "ts_fal_tasks",
            "ts_fal_account",
            "ts_financial_transactions",
            "ts_points_detail",
            "mjk_point_allocations",
            "mjk_point_transactions",
            "mjk_point_batches",
            "ts_users",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
