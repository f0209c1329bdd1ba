//! The per-job reconciliation against fal's billing events (issue 27):
//! - `gw_fal_billing_runs`: one row per pull of one account's window, with
//!   its progress and outcome;
//! - `gw_fal_billing_events`: the events a run pulled (its staging, kept
//!   until a later run of the same range replaces them);
//! - `gw_fal_billing_lines`: the result, one line per job or unmatched
//!   event, read by the API and the CSV export;
//! - an index on `ts_fal_tasks (online_task_id)`, so an event finds its task.
//!
//! Times are microseconds since the epoch (UTC): one integer, ordered and
//! compared the same on both engines, and the keyset cursor's own unit.
//! Money is integer: points, and fal's charges in nano-USD.

use sea_orm_migration::prelude::*;

/// Matching an event to its task by fal's request id.
pub(crate) const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS ix_fal_tasks_request ON ts_fal_tasks (online_task_id)";

pub struct Migration;

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: &'static str,
    cols: &[&'static str],
) -> Result<(), DbErr> {
    let mut ix = Index::create();
    ix.name(name).table(table);
    for c in cols {
        ix.col(*c);
    }
    manager.create_index(ix.to_owned()).await
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000014_fal_billing"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("gw_fal_billing_runs")
                    .col(
                        ColumnDef::new("id")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("account_id").integer().not_null())
                    .col(ColumnDef::new("from_us").big_integer().not_null())
                    .col(ColumnDef::new("to_us").big_integer().not_null())
                    .col(ColumnDef::new("trigger").string_len(20).not_null())
                    .col(ColumnDef::new("status").string_len(20).not_null())
                    .col(ColumnDef::new("started_us").big_integer().not_null())
                    .col(ColumnDef::new("finished_us").big_integer().null())
                    .col(ColumnDef::new("pages").integer().not_null().default(0))
                    .col(ColumnDef::new("events").big_integer().not_null().default(0))
                    .col(ColumnDef::new("lines").big_integer().not_null().default(0))
                    .col(ColumnDef::new("error_code").string_len(40).null())
                    .col(ColumnDef::new("error").string_len(500).null())
                    .check(Expr::cust(
                        "status IN ('running', 'done', 'failed', 'abandoned')",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_fal_billing_runs_account",
            "gw_fal_billing_runs",
            &["account_id", "started_us"],
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table("gw_fal_billing_events")
                    .col(
                        ColumnDef::new("id")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("run_id").big_integer().not_null())
                    .col(ColumnDef::new("account_id").integer().not_null())
                    .col(ColumnDef::new("request_id").string_len(100).not_null())
                    .col(ColumnDef::new("endpoint_id").string_len(200).not_null())
                    .col(ColumnDef::new("billed_us").big_integer().not_null())
                    .col(ColumnDef::new("cost_nano").big_integer().not_null())
                    .col(ColumnDef::new("quantity").double().null())
                    .col(ColumnDef::new("unit").string_len(100).null())
                    .col(ColumnDef::new("unit_price").double().null())
                    .col(ColumnDef::new("percent_discount").double().null())
                    .col(ColumnDef::new("tags").text().null())
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("ix_fal_billing_events_run", &["run_id", "request_id"][..]),
            (
                "ix_fal_billing_events_range",
                &["account_id", "billed_us"][..],
            ),
        ] {
            index(manager, name, "gw_fal_billing_events", cols).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("gw_fal_billing_lines")
                    .col(
                        ColumnDef::new("id")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("run_id").big_integer().not_null())
                    .col(ColumnDef::new("account_id").integer().not_null())
                    .col(ColumnDef::new("at_us").big_integer().not_null())
                    .col(ColumnDef::new("task_row_id").integer().null())
                    .col(ColumnDef::new("task_id").string_len(100).null())
                    .col(ColumnDef::new("request_id").string_len(100).null())
                    .col(ColumnDef::new("user_id").integer().null())
                    .col(ColumnDef::new("endpoint_id").string_len(200).not_null())
                    .col(ColumnDef::new("task_status").string_len(100).null())
                    .col(ColumnDef::new("charged_points").big_integer().not_null())
                    .col(ColumnDef::new("refunded_points").big_integer().not_null())
                    .col(ColumnDef::new("task_refunded").boolean().not_null())
                    .col(ColumnDef::new("ledger_charged").big_integer().not_null())
                    .col(ColumnDef::new("ledger_refunded").big_integer().not_null())
                    .col(ColumnDef::new("cost_money_nano").big_integer().null())
                    .col(ColumnDef::new("fal_cost_nano").big_integer().null())
                    .col(ColumnDef::new("fal_events").integer().not_null())
                    .col(ColumnDef::new("fal_quantity").double().null())
                    .col(ColumnDef::new("fal_unit").string_len(100).null())
                    .col(ColumnDef::new("margin_nano").big_integer().not_null())
                    .col(ColumnDef::new("flags").integer().not_null())
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("ix_fal_billing_lines_at", &["at_us", "id"][..]),
            ("ix_fal_billing_lines_account", &["account_id", "at_us"][..]),
            ("ix_fal_billing_lines_user", &["user_id", "at_us"][..]),
            ("ix_fal_billing_lines_run", &["run_id"][..]),
        ] {
            index(manager, name, "gw_fal_billing_lines", cols).await?;
        }
        manager.get_connection().execute_unprepared(INDEX).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS ix_fal_tasks_request")
            .await?;
        for t in [
            "gw_fal_billing_lines",
            "gw_fal_billing_events",
            "gw_fal_billing_runs",
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        Ok(())
    }
}
