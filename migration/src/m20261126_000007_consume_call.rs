//! A consume in one round trip on PostgreSQL: `gw_consume(...)`.
//!
//! A consume through the general path costs four round trips (BEGIN, the
//! lock with its probes, the spend statement, COMMIT); with durable commits
//! and the gateway's CPU on the same cores that left the gateway at about
//! 60% of what one server-side call achieves. This function does the
//! common case in the one call, as one transaction of its own:
//!
//! - locks the user row, then (each statement of a PL/pgSQL function reads
//!   a fresh snapshot) looks the job's key up exactly as the gateway does:
//!   a row under it → `exists` (the gateway replays it or reports the
//!   conflict);
//! - returns `other` without writing anything for every case the gateway's
//!   domain decides itself: unknown user, a hold under the key, available
//!   points (balance − held) short, a batch due to expire (its `expire` row
//!   comes first), figures beyond `ts_points_detail`'s 32 bits, batches
//!   that do not cover the cached balance. The gateway then runs the
//!   general path, so the rules and error codes of those cases exist once;
//! - otherwise writes what the general path writes for a consume: the
//!   ledger row (stamped at the given time, never before the user's last
//!   row), its `ts_points_detail` mirror in the platform's local time, the
//!   `gw_entries` record with the request hash, one allocation per batch
//!   drawn in the published draw order (never-expiring last, then expiry,
//!   then id; each batch emptied before the next), the batch decrements and
//!   the cached balance; `done` with the row's id, user, balance before,
//!   time and first batch.
//!
//! The draw order and the row shapes are therefore written twice, here
//! and in the gateway's domain; the gateway's tests run the same consumes
//! through both and compare every table (`tests/api/consume_call.rs`).
//!
//! Names are qualified with the gateway's schema, read when the migration
//! runs. Nothing on SQLite: one process, no round trips to save.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000007_consume_call"
    }
}

pub(crate) const FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION {s}.gw_consume(
  p_user integer, p_source_type text, p_source_id text, p_amount bigint,
  p_duration double precision, p_description text, p_hash text,
  p_at timestamptz, p_zone text,
  OUT o_outcome text, OUT o_id bigint, OUT o_user uuid, OUT o_balance bigint,
  OUT o_at timestamptz, OUT o_batch bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_held bigint;
  v_need bigint := p_amount;
  v_ids bigint[] := '{}';
  v_takes bigint[] := '{}';
  v_detail integer;
  v_take bigint;
  b record;
BEGIN
  o_outcome := 'other';
  SELECT u.uuid, u.balance, u.held INTO o_user, o_balance, v_held
    FROM {s}.gw_users u WHERE u.id = p_user FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM 1 FROM {s}.mjk_point_transactions t
    LEFT JOIN {s}.gw_entries g ON g.ledger_id = t.id
   WHERE t.source_id = p_source_id AND t.type = 'consume' AND t.source_type = p_source_type
     AND (g.ledger_id IS NOT NULL
          OR t.id <= (SELECT MAX(a.ledger_cutover_id) FROM {s}.gw_adoption a));
  IF FOUND THEN
    o_outcome := 'exists';
    RETURN;
  END IF;
  PERFORM 1 FROM {s}.gw_holds h WHERE h.source_type = p_source_type AND h.source_id = p_source_id;
  IF FOUND OR p_amount NOT BETWEEN 1 AND 2147483647 OR o_balance - v_held < p_amount OR o_balance > 2147483647 THEN
    RETURN;
  END IF;
  o_at := greatest(p_at,
    (SELECT MAX(t.created_at) FROM {s}.mjk_point_transactions t WHERE t.user_id = o_user));
  -- Due batches sort before every live one that expires, and before the
  -- never-expiring ones: the first rows decide whether any is due.
  FOR b IN SELECT pb.id, pb.remaining, pb.expires_at FROM {s}.gw_point_batches pb
            WHERE pb.user_id = p_user AND pb.remaining > 0
            ORDER BY pb.expires_at IS NULL, pb.expires_at, pb.id LOOP
    IF b.expires_at <= o_at THEN
      RETURN;
    END IF;
    EXIT WHEN v_need = 0;
    v_take := least(b.remaining, v_need);
    v_ids := v_ids || b.id;
    v_takes := v_takes || v_take;
    v_need := v_need - v_take;
  END LOOP;
  IF v_need > 0 THEN
    RETURN;
  END IF;
  o_batch := v_ids[1];
  INSERT INTO {s}.mjk_point_transactions (user_id, type, amount, balance_before, balance_after,
      source_type, source_id, batch_id, duration, description, created_at, updated_at)
    VALUES (o_user, 'consume', p_amount, o_balance, o_balance - p_amount,
      p_source_type, p_source_id, o_batch, p_duration, p_description, o_at, o_at)
    RETURNING id INTO o_id;
  INSERT INTO {s}.ts_points_detail (user_id, points, order_id, title, source_type,
      balance_before, balance_after, created_at)
    VALUES (p_user, -p_amount, p_source_id, p_description, 'consume',
      o_balance, o_balance - p_amount, o_at AT TIME ZONE p_zone)
    RETURNING id INTO v_detail;
  INSERT INTO {s}.gw_entries (ledger_id, user_id, type, source_type, source_id, request_hash, detail_id)
    VALUES (o_id, p_user, 'consume', p_source_type, p_source_id, p_hash, v_detail);
  FOR i IN 1 .. array_length(v_ids, 1) LOOP
    INSERT INTO {s}.gw_point_allocations (entry_id, batch_id, amount)
      VALUES (o_id, v_ids[i], v_takes[i]);
    UPDATE {s}.gw_point_batches SET remaining = remaining - v_takes[i] WHERE id = v_ids[i];
  END LOOP;
  UPDATE {s}.gw_users SET balance = o_balance - p_amount, updated_at = o_at WHERE id = p_user;
  o_outcome := 'done';
END;
$$
"#;

const DROP: &str = "DROP FUNCTION IF EXISTS gw_consume(integer, text, text, bigint, \
     double precision, text, text, timestamptz, text)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            crate::pg::in_schema(manager, FUNCTION).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager.get_connection().execute_unprepared(DROP).await?;
        }
        Ok(())
    }
}
