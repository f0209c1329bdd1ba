//! Who wrote a row, and the source types the platforms book under.
//!
//! - `gw_entries.written_by`: the token subject that wrote a ledger row
//!   (`service:fal-runner`, `admin`, `user:7`) or `gateway` for the sweeps;
//!   NULL for rows older than this migration, openings and absorbed legacy
//!   writes (their `origin` says whose they are). Admins read it as
//!   `UsageDetail.writtenBy`.
//! - `gw_source_types`: the job types a consume or hold may name, their
//!   `【…】` label and whether a duration is required, optional or refused.
//!   Seeded with the six the gateway knew as a fixed list, so every row
//!   written before reads as it did; operators add the ts platform's own
//!   (`points-gateway source-types set …`). A table rather than a setting
//!   so that every instance on one database books under one list.
//! - PostgreSQL: `gw_consume` takes the writer and the statement title
//!   (`ts_points_detail.title`, the legacy title a ts call site passes;
//!   the label when NULL), and draws given points before bought ones
//!   expiring alike (the draw order's new tiebreak, DESIGN.md invariant 4).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000012_callers"
    }
}

/// The source types the gateway shipped with: name, label, duration rule.
pub const DEFAULT_SOURCE_TYPES: [(&str, &str, &str); 6] = [
    ("script", "【脚本生成】", "refused"),
    ("polish", "【脚本润色】", "refused"),
    ("voice_clone", "【声音克隆】", "refused"),
    ("tts", "【配音合成】", "required"),
    ("video", "【视频生成】", "required"),
    ("fal", "【AI生成】", "refused"),
];

const OLD_SIGNATURE: &str = "p_at timestamptz, p_zone text,\n";
const OLD_ENTRY: &str = "INSERT INTO {s}.gw_entries (ledger_id, user_id, type, source_type, source_id, request_hash, detail_id)\n    VALUES (o_id, p_user, 'consume', p_source_type, p_source_id, p_hash, v_detail);";
const OLD_TITLE: &str = "VALUES (p_user, -p_amount, p_source_id, p_description, 'consume',";
const OLD_ORDER: &str = "ORDER BY pb.expires_at IS NULL, pb.expires_at, pb.id LOOP";

/// `gw_consume` of migration 10 taking `p_written_by` and `p_title`.
pub(crate) fn consume_function() -> Result<String, DbErr> {
    let f = crate::m20261202_000010_absorb::consume_function()?;
    for place in [OLD_SIGNATURE, OLD_ENTRY, OLD_TITLE, OLD_ORDER] {
        if !f.contains(place) {
            return Err(DbErr::Migration(format!(
                "gw_consume changed shape: {place:?} not found"
            )));
        }
    }
    Ok(f
        .replacen(
            OLD_SIGNATURE,
            "p_at timestamptz, p_zone text, p_written_by text, p_title text,\n",
            1,
        )
        .replacen(
            OLD_ENTRY,
            "INSERT INTO {s}.gw_entries (ledger_id, user_id, type, source_type, source_id, request_hash, detail_id, written_by)\n    VALUES (o_id, p_user, 'consume', p_source_type, p_source_id, p_hash, v_detail, p_written_by);",
            1,
        )
        .replacen(
            OLD_TITLE,
            "VALUES (p_user, -p_amount, p_source_id, coalesce(p_title, p_description), 'consume',",
            1,
        )
        .replacen(
            OLD_ORDER,
            "ORDER BY pb.expires_at IS NULL, pb.expires_at, pb.funds <> 'gift', pb.id LOOP",
            1,
        ))
}

const OLD_FUNCTION: &str =
    "gw_consume(integer, text, text, bigint, double precision, text, text, timestamptz, text)";
const NEW_FUNCTION: &str = "gw_consume(integer, text, text, bigint, double precision, text, text, timestamptz, text, text, text)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE gw_entries ADD COLUMN written_by VARCHAR(80) NULL")
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("gw_source_types")
                    .col(
                        ColumnDef::new("name")
                            .string_len(32)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("label").string_len(64).not_null())
                    .col(
                        ColumnDef::new("duration").string_len(8).not_null().check(
                            Expr::col("duration").is_in(["required", "optional", "refused"]),
                        ),
                    )
                    .to_owned(),
            )
            .await?;
        let mut insert = Query::insert()
            .into_table("gw_source_types")
            .columns(["name", "label", "duration"])
            .to_owned();
        for (name, label, duration) in DEFAULT_SOURCE_TYPES {
            insert.values_panic([name.into(), label.into(), duration.into()]);
        }
        manager.exec_stmt(insert).await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared(&format!("DROP FUNCTION IF EXISTS {OLD_FUNCTION}"))
                .await?;
            crate::pg::in_schema(manager, &consume_function()?).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared(&format!("DROP FUNCTION IF EXISTS {NEW_FUNCTION}"))
                .await?;
            crate::pg::in_schema(
                manager,
                &crate::m20261202_000010_absorb::consume_function()?,
            )
            .await?;
        }
        manager
            .drop_table(Table::drop().table("gw_source_types").to_owned())
            .await?;
        db.execute_unprepared("ALTER TABLE gw_entries DROP COLUMN written_by")
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_function_takes_the_writer_and_the_title() {
        let f = super::consume_function().expect("the function has its places");
        assert!(f.contains("p_written_by text, p_title text"));
        assert!(f.contains("coalesce(p_title, p_description)"));
        assert!(f.contains("v_detail, p_written_by)"));
        assert!(f.contains("pb.funds <> 'gift', pb.id LOOP"));
    }
}
