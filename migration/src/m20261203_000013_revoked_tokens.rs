//! `gw_revoked_tokens`: token ids (`jti`) refused before their expiry.
//!
//! A table rather than a setting so that a revocation made through any
//! instance (or `points-gateway revoke`) reaches every instance on the
//! database; each re-reads the live rows every few seconds. Times are
//! seconds since the epoch, as in the tokens themselves: no zone to get
//! wrong on either engine. A row outlives its token by nothing: once
//! `expires_at` has passed the token is refused anyway, and the row is
//! pruned.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000013_revoked_tokens"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("gw_revoked_tokens")
                    .col(ColumnDef::new("id").string_len(64).not_null().primary_key())
                    .col(ColumnDef::new("expires_at").big_integer().not_null())
                    .col(ColumnDef::new("revoked_at").big_integer().not_null())
                    .col(ColumnDef::new("revoked_by").string_len(80).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_revoked_tokens_expiry")
                    .table("gw_revoked_tokens")
                    .col("expires_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("gw_revoked_tokens").to_owned())
            .await
    }
}
