//! Absorbing the legacy systems' writes after the cutover (PostgreSQL).
//!
//! Services move to the gateway one at a time; until the last has moved,
//! the old code keeps writing balances. Triggers on the legacy tables take
//! each such write into the gateway's books in the legacy transaction
//! itself, exactly once, under the gateway's own user lock:
//!
//! - a row the mjk code inserts into `mjk_point_transactions` (consume,
//!   recharge, refund, expire) is chained from the gateway's balance
//!   (`balance_before/after` and `created_at` rewritten before it lands),
//!   drawn from batches in the published order (a consume, an expiry) or
//!   credited (a recharge: a paid batch; a refund: back to the batches its
//!   consume drew from, capped at what it took), mirrored on the ts
//!   statement, recorded in `gw_entries` with `origin = 'mjk'`, announced;
//! - a change of a user's `ts_users` balance columns, checked when the
//!   legacy transaction commits (a deferred trigger): each statement row
//!   the transaction wrote for that user becomes one movement (its row is
//!   the movement's statement record, numbered under the user's lock); a
//!   transaction that wrote none for the user (an admin tool's direct
//!   edit) moved what the columns moved, one movement with a statement row
//!   of the gateway's; then the columns are set to what the user's batches
//!   hold of each funds (`origin = 'ts'`). Where statement rows exist they
//!   say what moved, not the columns: `add_user_money()` writes the columns
//!   from a read it did not lock, so two concurrent calls lose one's change
//!   in the columns, never in the rows.
//!
//! A write that would spend points the user does not have free (held,
//! past their expiry, or missing), refund more than a job took, or charge
//! a job key already charged fails in the legacy transaction with a
//! constraint error (`check_violation`, `unique_violation`: what its ORM
//! raises as `IntegrityError`); nothing is overdrawn silently.
//!
//! Locks: the ts platform's code holds the user's `ts_users` row before its
//! trigger takes the gateway's user row, so while absorbing every gateway
//! write takes the `ts_users` row first too (`gw_lock_ts`, migration 10).
//! The mjk code locks its newest ledger row, which nothing of the
//! gateway's ever locks.
//!
//! The gateway's own sessions (`application_name` `points-gateway`) and
//! writes made by these triggers (nested) are never absorbed.

use sea_orm::{ConnectionTrait, Statement};

use super::{quoted, TsBalanceColumns};
use crate::store::sql::HISTORY_END;
use crate::store::{Engine, StoreError, WriteTx};

/// The ledger side: functions shared by both systems' triggers, and the
/// mjk ledger's triggers.
const LEDGER: &str = r#"
-- Whether the user (an mjk uuid or a ts id, either side of a joined user)
-- has legacy writes recorded in the adoption window and not absorbed yet.
-- Index probes only (the queue's partial indexes, gw_users' keys): every
-- legacy write asks, and the queue can hold tens of thousands of rows.
CREATE OR REPLACE FUNCTION {s}.gw_absorb_pending(p_uuid uuid, p_ts integer) RETURNS boolean AS $$
DECLARE v_uuid uuid := p_uuid; v_ts integer := p_ts;
BEGIN
  IF v_uuid IS NULL THEN
    SELECT u.uuid INTO v_uuid FROM gw_users u WHERE u.id = p_ts;
  END IF;
  IF v_ts IS NULL THEN
    SELECT u.id INTO v_ts FROM gw_users u WHERE u.uuid = p_uuid;
  END IF;
  RETURN EXISTS (SELECT 1 FROM gw_absorb_queue q WHERE q.refused IS NULL AND q.uuid = v_uuid)
      OR EXISTS (SELECT 1 FROM gw_absorb_queue q WHERE q.refused IS NULL AND q.user_id = v_ts);
END $$ LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = {s}, pg_temp;

-- Whether this legacy write is absorbed now (else it is recorded, see
-- `window.rs`): always in the drain; never before absorbing is on; after,
-- unless the user still has recorded writes waiting (theirs are absorbed
-- in order). Decided once per transaction: one that recorded a write
-- records the rest (`points_gateway.recording`), so no transaction is
-- absorbed in part live and in part from the record.
CREATE OR REPLACE FUNCTION {s}.gw_absorb_live(p_uuid uuid, p_ts integer) RETURNS boolean AS $$
BEGIN
  IF COALESCE(current_setting('points_gateway.drain', true) = 'on', false) THEN
    RETURN true;
  END IF;
  IF COALESCE(current_setting('points_gateway.recording', true) = 'on', false)
     OR NOT EXISTS (SELECT 1 FROM gw_adoption a WHERE a.absorbing) THEN
    RETURN false;
  END IF;
  IF gw_absorb_pending(p_uuid, p_ts) THEN
    PERFORM set_config('points_gateway.recording', 'on', true);
    RETURN false;
  END IF;
  RETURN true;
END $$ LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE FUNCTION {s}.gw_absorb_user(p_uuid uuid, p_ts integer) RETURNS integer AS $$
DECLARE v integer;
BEGIN
  IF p_ts IS NOT NULL THEN
    v := p_ts;
    INSERT INTO gw_users (id, uuid, name, balance, created_at, updated_at)
      VALUES (v, gen_random_uuid(), 'ts ' || v, 0, now(), now()) ON CONFLICT DO NOTHING;
  ELSE
    SELECT u.id INTO v FROM gw_users u WHERE u.uuid = p_uuid;
    IF v IS NULL THEN
      INSERT INTO gw_users (uuid, name, balance, created_at, updated_at)
        VALUES (p_uuid, 'mjk ' || left(p_uuid::text, 8), 0, now(), now())
        ON CONFLICT DO NOTHING RETURNING id INTO v;
      IF v IS NULL THEN
        SELECT u.id INTO v FROM gw_users u WHERE u.uuid = p_uuid;
      END IF;
    END IF;
  END IF;
  PERFORM gw_lock_ts(v);
  PERFORM 1 FROM gw_users u WHERE u.id = v FOR UPDATE;
  RETURN v;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE FUNCTION {s}.gw_absorb_check(p_user integer, p_amount bigint, p_at timestamptz)
RETURNS void AS $$
DECLARE v_free bigint;
BEGIN
  SELECT COALESCE(SUM(b.remaining), 0) INTO v_free FROM gw_point_batches b
   WHERE b.user_id = p_user AND b.remaining > 0 AND (b.expires_at IS NULL OR b.expires_at > p_at);
  IF v_free < p_amount THEN
    RAISE EXCEPTION 'points-gateway: user % has % points free to spend, % asked', p_user, v_free, p_amount
      USING ERRCODE = 'check_violation',
            HINT = 'balances are kept by the points gateway since the cutover; held and expired points cannot be spent';
  END IF;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

-- The job key (source_type, source_id) is charged already: by the gateway,
-- by an absorbed write, or in the history before the cutover.
CREATE OR REPLACE FUNCTION {s}.gw_absorb_charged(p_type text, p_id text) RETURNS boolean AS $$
  SELECT p_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM mjk_point_transactions t LEFT JOIN gw_entries g ON g.ledger_id = t.id
     WHERE t.source_id = p_id AND t.type = 'consume' AND t.source_type = p_type
       AND (g.ledger_id IS NOT NULL OR t.id <= {history_end}))
$$ LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {s}, pg_temp;

-- The books of one absorbed ledger row `p_ledger` (already inserted, its
-- figures chained from `p_before`): the gateway's record, the batches, the
-- cached balance, the statement mirror unless `p_detail` is the legacy's
-- own row. Returns the batch the row names (first drawn, or credited).
CREATE OR REPLACE FUNCTION {s}.gw_absorb_apply(
  p_ledger bigint, p_user integer, p_type text, p_amount bigint, p_funds text,
  p_source_type text, p_source_id text, p_origin text, p_at timestamptz, p_title text,
  p_before bigint, p_detail integer) RETURNS bigint AS $$
DECLARE
  v_sign integer := CASE WHEN p_type IN ('consume', 'expire') THEN -1 ELSE 1 END;
  v_need bigint := p_amount;
  v_take bigint;
  v_first bigint;
  v_consume bigint;
  v_left bigint;
  v_key text;
  v_detail integer := p_detail;
  b record;
BEGIN
  IF p_type = 'refund' THEN
    SELECT t.id INTO v_consume FROM mjk_point_transactions t LEFT JOIN gw_entries g ON g.ledger_id = t.id
     WHERE t.source_id = p_source_id AND t.type = 'consume' AND t.source_type = p_source_type
       AND (g.ledger_id IS NOT NULL OR t.id <= {history_end})
     ORDER BY g.ledger_id IS NULL, t.id LIMIT 1;
    IF v_consume IS NULL THEN
      RAISE EXCEPTION 'points-gateway: a refund of job % % that was never charged', p_source_type, p_source_id
        USING ERRCODE = 'check_violation';
    END IF;
    -- What every charge under the key took, less every refund of it.
    SELECT COALESCE(SUM(CASE WHEN t.type = 'consume' THEN t.amount ELSE -t.amount END), 0) INTO v_left
      FROM mjk_point_transactions t LEFT JOIN gw_entries g ON g.ledger_id = t.id
     WHERE t.source_id = p_source_id AND t.type IN ('consume', 'refund') AND t.source_type = p_source_type
       AND t.id <> p_ledger
       AND (g.ledger_id IS NOT NULL OR t.id <= {history_end});
    IF p_amount > v_left THEN
      RAISE EXCEPTION 'points-gateway: a refund of % points for job % %, which has % left to refund',
        p_amount, p_source_type, p_source_id, greatest(v_left, 0) USING ERRCODE = 'check_violation';
    END IF;
    v_key := 'absorbed:' || p_ledger;
  END IF;
  IF v_detail IS NULL THEN
    INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type,
        balance_before, balance_after, created_at)
      VALUES (p_user, v_sign * p_amount, COALESCE(p_source_id, ''), left(COALESCE(p_title, ''), 255),
        CASE WHEN p_type = 'recharge' AND p_funds = 'gift' THEN 'gift' ELSE p_type END,
        p_before, p_before + v_sign * p_amount, p_at AT TIME ZONE {zone})
      RETURNING id INTO v_detail;
  END IF;
  INSERT INTO gw_entries (ledger_id, user_id, type, source_type, source_id, refund_key, refund_of,
      request_hash, detail_id, origin)
    VALUES (p_ledger, p_user, p_type, p_source_type, p_source_id, v_key, v_consume, NULL, v_detail, p_origin);
  IF v_sign < 0 THEN
    FOR b IN SELECT pb.id, pb.remaining FROM gw_point_batches pb
              WHERE pb.user_id = p_user AND pb.remaining > 0
                AND (pb.expires_at IS NULL OR pb.expires_at > p_at)
              ORDER BY pb.expires_at IS NULL, pb.expires_at, pb.funds <> 'gift', pb.id LOOP
      EXIT WHEN v_need = 0;
      v_take := least(b.remaining, v_need);
      INSERT INTO gw_point_allocations (entry_id, batch_id, amount) VALUES (p_ledger, b.id, v_take);
      UPDATE gw_point_batches SET remaining = remaining - v_take WHERE id = b.id;
      v_first := coalesce(v_first, b.id);
      v_need := v_need - v_take;
    END LOOP;
    IF v_need > 0 THEN
      PERFORM gw_absorb_check(p_user, p_amount, p_at);
    END IF;
  ELSIF p_type = 'refund' THEN
    -- Back to the batches the consume drew from, the last drawn first.
    FOR b IN SELECT a.batch_id, a.amount - COALESCE((
               SELECT SUM(r.amount) FROM gw_point_allocations r JOIN gw_entries rg ON rg.ledger_id = r.entry_id
                WHERE rg.refund_of = v_consume AND r.batch_id = a.batch_id), 0) AS left_over
              FROM gw_point_allocations a WHERE a.entry_id = v_consume ORDER BY a.id DESC LOOP
      EXIT WHEN v_need = 0;
      CONTINUE WHEN b.left_over <= 0;
      v_take := least(b.left_over, v_need);
      INSERT INTO gw_point_allocations (entry_id, batch_id, amount) VALUES (p_ledger, b.batch_id, v_take);
      UPDATE gw_point_batches SET remaining = remaining + v_take WHERE id = b.batch_id;
      v_first := coalesce(v_first, b.batch_id);
      v_need := v_need - v_take;
    END LOOP;
    IF v_need > 0 THEN
      -- A consume of the history (it drew from no batch of the gateway's):
      -- a never-expiring batch of its own, as the gateway's refund makes.
      INSERT INTO gw_point_batches (user_id, kind, funds, amount, remaining, reserved, expires_at, order_id, created_at)
        VALUES (p_user, 'restored', 'paid', v_need, v_need, 0, NULL, 'restored:' || v_key, p_at)
        RETURNING id INTO v_take;
      INSERT INTO gw_point_allocations (entry_id, batch_id, amount) VALUES (p_ledger, v_take, v_need);
      v_first := coalesce(v_first, v_take);
    END IF;
  ELSE
    INSERT INTO gw_point_batches (user_id, kind, funds, amount, remaining, reserved, expires_at, order_id, created_at)
      VALUES (p_user, p_funds, p_funds, p_amount, p_amount, 0, NULL, 'absorbed:' || p_ledger, p_at)
      RETURNING id INTO v_first;
  END IF;
  UPDATE gw_users SET balance = balance + v_sign * p_amount, updated_at = p_at WHERE id = p_user;
  RETURN v_first;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

-- The time of a user's next ledger row: now, never before their last row.
CREATE OR REPLACE FUNCTION {s}.gw_absorb_at(p_uuid uuid) RETURNS timestamptz AS $$
  SELECT greatest(clock_timestamp(),
    (SELECT MAX(t.created_at) FROM mjk_point_transactions t WHERE t.user_id = p_uuid))
$$ LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE FUNCTION {s}.gw_absorb_ledger_before() RETURNS trigger AS $$
DECLARE
  v_user integer;
  v_balance bigint;
  v_at timestamptz;
BEGIN
  IF current_setting('application_name') = 'points-gateway' OR pg_trigger_depth() > 1
     OR NOT gw_absorb_live(NEW.user_id, NULL) THEN
    RETURN NEW;
  END IF;
  IF NEW.type IS NULL OR NEW.type NOT IN ('consume', 'recharge', 'refund', 'expire')
     OR NEW.amount IS NULL OR NEW.amount <= 0 THEN
    RAISE EXCEPTION 'points-gateway: a ledger row of type % and amount % is no movement of points', NEW.type, NEW.amount
      USING ERRCODE = 'check_violation';
  END IF;
  v_user := gw_absorb_user(NEW.user_id, NULL);
  SELECT u.balance INTO v_balance FROM gw_users u WHERE u.id = v_user;
  v_at := gw_absorb_at(NEW.user_id);
  IF NEW.type IN ('consume', 'expire') THEN
    IF NEW.type = 'consume' AND gw_absorb_charged(NEW.source_type, NEW.source_id) THEN
      RAISE EXCEPTION 'points-gateway: job % % is charged already', NEW.source_type, NEW.source_id
        USING ERRCODE = 'unique_violation';
    END IF;
    PERFORM gw_absorb_check(v_user, NEW.amount, v_at);
    NEW.balance_after := v_balance - NEW.amount;
  ELSE
    NEW.balance_after := v_balance + NEW.amount;
  END IF;
  NEW.balance_before := v_balance;
  -- Numbered under the lock: the id the row took when its insert began
  -- could precede rows committed while it waited, and a user's rows in id
  -- order are their chain.
  NEW.id := nextval(pg_get_serial_sequence('mjk_point_transactions', 'id'));
  NEW.created_at := v_at;
  NEW.updated_at := v_at;
  RETURN NEW;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE FUNCTION {s}.gw_absorb_ledger_after() RETURNS trigger AS $$
DECLARE
  v_user integer;
  v_batch bigint;
BEGIN
  IF current_setting('application_name') = 'points-gateway' OR pg_trigger_depth() > 1
     OR NOT gw_absorb_live(NEW.user_id, NULL) THEN
    RETURN NULL;
  END IF;
  SELECT u.id INTO v_user FROM gw_users u WHERE u.uuid = NEW.user_id;
  v_batch := gw_absorb_apply(NEW.id, v_user, NEW.type, NEW.amount, 'paid', NEW.source_type,
    NEW.source_id, 'mjk', NEW.created_at, NEW.description, NEW.balance_before, NULL);
  IF v_batch IS DISTINCT FROM NEW.batch_id THEN
    UPDATE mjk_point_transactions SET batch_id = v_batch WHERE id = NEW.id;
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE TRIGGER gw_absorb_before BEFORE INSERT ON {s}.mjk_point_transactions
  FOR EACH ROW WHEN (current_setting('application_name') <> 'points-gateway') EXECUTE FUNCTION {s}.gw_absorb_ledger_before();
-- Named to fire before points_ledger_event (same event, name order), so
-- the event sees the row as absorbed.
CREATE OR REPLACE TRIGGER gw_absorb_after AFTER INSERT ON {s}.mjk_point_transactions
  FOR EACH ROW WHEN (current_setting('application_name') <> 'points-gateway') EXECUTE FUNCTION {s}.gw_absorb_ledger_after();
"#;

/// The ts side: statement rows noted as they are written, balance columns
/// reconciled at commit.
const TS: &str = r#"
CREATE OR REPLACE FUNCTION {s}.gw_absorb_statement() RETURNS trigger AS $$
BEGIN
  IF current_setting('application_name') = 'points-gateway' OR pg_trigger_depth() > 1
     OR NOT gw_absorb_live(NULL, NEW.user_id) THEN
    RETURN NEW;
  END IF;
  -- The user's lock from here to the commit, where the row is absorbed;
  -- numbered under it, so the user's rows in id order are their chain.
  PERFORM gw_absorb_user(NULL, NEW.user_id);
  NEW.id := nextval(pg_get_serial_sequence('ts_points_detail', 'id'));
  PERFORM set_config('points_gateway.statements',
    COALESCE(current_setting('points_gateway.statements', true), '') || ',' || NEW.id, true);
  RETURN NEW;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

-- The gateway's figures of a user: what their batches hold of each funds.
CREATE OR REPLACE FUNCTION {s}.gw_absorb_split(p_user integer, OUT o_paid bigint, OUT o_gift bigint) AS $$
  SELECT COALESCE(SUM(CASE WHEN b.funds = 'gift' THEN 0 ELSE b.remaining + b.reserved END), 0),
         COALESCE(SUM(CASE WHEN b.funds = 'gift' THEN b.remaining + b.reserved ELSE 0 END), 0)
    FROM gw_point_batches b WHERE b.user_id = p_user
$$ LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE FUNCTION {s}.gw_absorb_ts_users() RETURNS trigger AS $$
DECLARE
  v_user integer;
  v_uuid uuid;
  v_balance bigint;
  v_paid bigint;
  v_gift bigint;
  v_ts_paid bigint;
  v_ts_gift bigint;
  v_delta bigint;
  v_pending integer[];
  v_done integer[] := '{}';
  v_type text;
  v_funds text;
  v_source text;
  v_order text;
  v_amount bigint;
  v_points bigint;
  v_at timestamptz;
  v_ledger bigint;
  v_batch bigint;
  v_title text;
  v_detail integer;
  d record;
BEGIN
  -- Nested (the columns set below, or by the batches' follow trigger, while
  -- the drain fires constraint triggers at once): the outer call reconciles.
  IF pg_trigger_depth() > 1 THEN
    RETURN NULL;
  END IF;
  -- Fired by a change of the user's columns, or by a statement row of
  -- theirs (which may leave the columns as they were: a stale write).
  v_pending := COALESCE(string_to_array(trim(both ',' FROM
    COALESCE(current_setting('points_gateway.statements', true), '')), ',')::integer[], '{}');
  IF TG_TABLE_NAME = 'ts_points_detail' THEN
    -- Only the legacy code's own rows (not a mirror an absorption wrote).
    IF NOT (NEW.id = ANY(v_pending)) THEN
      RETURN NULL;
    END IF;
    v_user := NEW.user_id;
  ELSE
    v_user := NEW.id;
  END IF;
  IF NOT gw_absorb_live(NULL, v_user) THEN
    RETURN NULL;
  END IF;
  PERFORM gw_absorb_user(NULL, v_user);
  SELECT o_paid, o_gift INTO v_paid, v_gift FROM gw_absorb_split(v_user);
  SELECT t.{paid}, {gift_read} INTO v_ts_paid, v_ts_gift FROM ts_users t WHERE t.id = v_user;
  IF NOT FOUND THEN
    -- No ts_users row (a user of the mjk side): only its statement rows move.
    v_ts_paid := v_paid;
    v_ts_gift := v_gift;
  END IF;
  v_delta := (COALESCE(v_ts_paid, 0) + COALESCE(v_ts_gift, 0)) - (v_paid + v_gift);
  IF v_delta = 0 AND ({same})
     AND NOT EXISTS (SELECT 1 FROM ts_points_detail x WHERE x.id = ANY(v_pending) AND x.user_id = v_user) THEN
    RETURN NULL;
  END IF;
  SELECT u.uuid, u.balance INTO v_uuid, v_balance FROM gw_users u WHERE u.id = v_user;
  -- Each statement row the transaction wrote for the user is one movement.
  -- Without any, what the columns moved is one (an edit that writes no
  -- row). With some, the columns' own figures are not a movement: the old
  -- code writes them from a read it did not lock (add_user_money), so a
  -- concurrent call's change can be lost in them; the rows say what moved.
  FOR d IN SELECT x.id, x.points, x.order_id, x.title, x.source_type FROM ts_points_detail x
            WHERE x.id = ANY(v_pending) AND x.user_id = v_user AND x.points <> 0
           UNION ALL
           SELECT NULL, v_delta, NULL, '【后台调整】', 'adjust'
            WHERE NOT EXISTS (SELECT 1 FROM ts_points_detail x
                               WHERE x.id = ANY(v_pending) AND x.user_id = v_user)
           ORDER BY 1 NULLS LAST LOOP
    v_points := d.points;
    CONTINUE WHEN v_points = 0;
    v_amount := abs(v_points);
    v_order := left(NULLIF(d.order_id, ''), 64);
    v_title := d.title;
    v_detail := d.id;
    v_at := gw_absorb_at(v_uuid);
    IF v_points < 0 THEN
      v_type := 'consume';
      v_funds := 'paid';
      v_source := CASE
        WHEN d.id IS NULL THEN NULL
        WHEN EXISTS (SELECT 1 FROM ts_fal_tasks f WHERE f.task_id = d.order_id) THEN 'fal'
        ELSE left(d.source_type, 32) END;
      IF d.id IS NULL THEN
        v_order := NULL;
      ELSIF gw_absorb_charged(v_source, v_order) THEN
        RAISE EXCEPTION 'points-gateway: job % % is charged already', v_source, v_order
          USING ERRCODE = 'unique_violation';
      END IF;
      PERFORM gw_absorb_check(v_user, v_amount, v_at);
    ELSIF d.source_type = 'refund' THEN
      v_type := 'refund';
      v_funds := 'paid';
      SELECT t.source_type INTO v_source FROM mjk_point_transactions t
        LEFT JOIN gw_entries g ON g.ledger_id = t.id
       WHERE t.source_id = v_order AND t.type = 'consume' AND t.user_id = v_uuid
         AND (g.ledger_id IS NOT NULL OR t.id <= {history_end})
       ORDER BY g.ledger_id IS NULL, t.id LIMIT 1;
    ELSE
      v_type := 'recharge';
      v_funds := CASE WHEN d.source_type = 'gift'
                        OR (d.id IS NULL AND COALESCE(v_ts_gift, 0) > v_gift AND COALESCE(v_ts_paid, 0) <= v_paid)
                      THEN 'gift' ELSE 'paid' END;
      v_source := v_funds;
      IF d.id IS NULL THEN
        v_order := NULL;
      END IF;
    END IF;
    PERFORM set_config('points_gateway.absorbing', 'on', true);
    INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after,
        source_type, source_id, batch_id, duration, description, created_at, updated_at)
      VALUES (v_uuid, v_type, v_amount, v_balance, v_balance + v_points, v_source, v_order,
        NULL, NULL, v_title, v_at, v_at)
      RETURNING id INTO v_ledger;
    PERFORM set_config('points_gateway.absorbing', 'off', true);
    v_batch := gw_absorb_apply(v_ledger, v_user, v_type, v_amount, v_funds, v_source, v_order, 'ts',
      v_at, v_title, v_balance, v_detail);
    UPDATE mjk_point_transactions SET batch_id = v_batch WHERE id = v_ledger;
    IF d.id IS NOT NULL THEN
      UPDATE ts_points_detail SET balance_before = v_balance, balance_after = v_balance + v_points
       WHERE id = d.id AND (balance_before <> v_balance OR balance_after <> v_balance + v_points);
      v_done := v_done || d.id;
    END IF;
    v_balance := v_balance + v_points;
  END LOOP;
  IF cardinality(v_done) > 0 THEN
    PERFORM set_config('points_gateway.statements',
      COALESCE(array_to_string(ARRAY(SELECT p FROM unnest(v_pending) p WHERE p <> ALL(v_done)), ','), ''), true);
  END IF;
  SELECT o_paid, o_gift INTO v_paid, v_gift FROM gw_absorb_split(v_user);
  UPDATE ts_users SET {paid_set}{gift_set} WHERE id = v_user;
  RETURN NULL;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE TRIGGER gw_absorb_statement BEFORE INSERT ON {s}.ts_points_detail
  FOR EACH ROW WHEN (current_setting('application_name') <> 'points-gateway') EXECUTE FUNCTION {s}.gw_absorb_statement();
CREATE CONSTRAINT TRIGGER gw_absorb_statement_commit AFTER INSERT ON {s}.ts_points_detail
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN (current_setting('application_name') <> 'points-gateway')
  EXECUTE FUNCTION {s}.gw_absorb_ts_users();
CREATE CONSTRAINT TRIGGER gw_absorb_ts_users_update AFTER UPDATE ON {s}.ts_users
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN (current_setting('application_name') <> 'points-gateway' AND ({changed}))
  EXECUTE FUNCTION {s}.gw_absorb_ts_users();
CREATE CONSTRAINT TRIGGER gw_absorb_ts_users_insert AFTER INSERT ON {s}.ts_users
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN (current_setting('application_name') <> 'points-gateway')
  EXECUTE FUNCTION {s}.gw_absorb_ts_users();
"#;

/// What [`install`] creates, for [`remove`].
const TRIGGERS: [(&str, &str); 6] = [
    ("gw_absorb_before", "mjk_point_transactions"),
    ("gw_absorb_after", "mjk_point_transactions"),
    ("gw_absorb_statement", "ts_points_detail"),
    ("gw_absorb_statement_commit", "ts_points_detail"),
    ("gw_absorb_ts_users_update", "ts_users"),
    ("gw_absorb_ts_users_insert", "ts_users"),
];
const FUNCTIONS: [&str; 12] = [
    "gw_absorb_ts_users()",
    "gw_absorb_split(integer)",
    "gw_absorb_statement()",
    "gw_absorb_ledger_after()",
    "gw_absorb_ledger_before()",
    "gw_absorb_at(uuid)",
    "gw_absorb_apply(bigint, integer, text, bigint, text, text, text, text, timestamptz, text, bigint, integer)",
    "gw_absorb_charged(text, text)",
    "gw_absorb_check(integer, bigint, timestamptz)",
    "gw_absorb_user(uuid, integer)",
    "gw_absorb_live(uuid, integer)",
    "gw_absorb_pending(uuid, integer)",
];

/// The SQL of [`install`]: `schema` quoted, the ts part only where
/// `ts_users` is kept in step.
fn install_sql(schema: &str, columns: Option<&TsBalanceColumns>, zone: &str) -> String {
    let zone = format!("'{}'", zone.replace('\'', "''"));
    let mut sql = LEDGER
        .replace("{zone}", &zone)
        .replace("{history_end}", HISTORY_END);
    if let Some(c) = columns {
        let paid = c.paid_sql();
        let (gift_read, gift_set, changed, same) = match c.gift_sql() {
            Some(g) => (
                format!("t.{g}"),
                format!(", {g} = v_gift"),
                format!(
                    "OLD.{paid} IS DISTINCT FROM NEW.{paid} OR OLD.{g} IS DISTINCT FROM NEW.{g}"
                ),
                "v_ts_paid = v_paid AND v_ts_gift = v_gift",
            ),
            // Without a gift column every point is paid.
            None => (
                "0".to_owned(),
                String::new(),
                format!("OLD.{paid} IS DISTINCT FROM NEW.{paid}"),
                "true",
            ),
        };
        let paid_set = if c.gift.is_some() {
            format!("{paid} = v_paid")
        } else {
            format!("{paid} = v_paid + v_gift")
        };
        sql.push_str(
            &TS.replace("{history_end}", HISTORY_END)
                .replace("{gift_read}", &gift_read)
                .replace("{paid_set}", &paid_set)
                .replace("{gift_set}", &gift_set)
                .replace("{changed}", &changed)
                .replace("{same}", same)
                .replace("{paid}", &paid),
        );
    }
    sql.replace("{s}", schema)
}

/// The transaction's current schema, quoted.
pub(super) async fn schema(tx: &WriteTx) -> Result<String, StoreError> {
    let name: String = tx
        .txn()
        .query_one_raw(Statement::from_string(
            tx.txn().get_database_backend(),
            "SELECT current_schema() AS s",
        ))
        .await?
        .ok_or_else(|| StoreError::custom("no current schema"))?
        .try_get("", "s")?;
    Ok(quoted(&name))
}

/// Installs the absorbing triggers (PostgreSQL), idle until [`start`] (or
/// a drain session) turns them on; `columns`: the `ts_users` columns kept
/// in step, if any.
pub async fn install(
    tx: &WriteTx,
    columns: Option<&TsBalanceColumns>,
    zone: &str,
) -> Result<(), StoreError> {
    match tx.engine() {
        Engine::Postgres => {
            let s = schema(tx).await?;
            tx.txn()
                .execute_unprepared(&install_sql(&s, columns, zone))
                .await?;
            Ok(())
        }
        Engine::Sqlite => Err(StoreError::custom(
            "absorbing legacy writes needs PostgreSQL",
        )),
    }
}

/// From this commit on every legacy write is absorbed in its own
/// transaction (the end of `adopt --apply`).
pub async fn start(tx: &WriteTx) -> Result<(), StoreError> {
    tx.txn()
        .execute_unprepared("UPDATE gw_adoption SET absorbing = TRUE")
        .await?;
    Ok(())
}

/// Removes every absorbing trigger and function (the way back).
pub async fn remove(tx: &WriteTx) -> Result<(), StoreError> {
    if tx.engine() != Engine::Postgres {
        return Ok(());
    }
    let s = schema(tx).await?;
    let mut sql = String::new();
    for (name, table) in TRIGGERS {
        // The table may be gone with its triggers.
        sql.push_str(&format!(
            "DO $$ BEGIN IF to_regclass('{table}') IS NOT NULL THEN \
               DROP TRIGGER IF EXISTS {name} ON {s}.{table}; END IF; END $$;\n"
        ));
    }
    for f in FUNCTIONS {
        sql.push_str(&format!("DROP FUNCTION IF EXISTS {s}.{f};\n"));
    }
    sql.push_str("UPDATE gw_adoption SET absorbing = FALSE;\n");
    tx.txn().execute_unprepared(&sql).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        for cols in [
            None,
            Some(TsBalanceColumns::platform()),
            Some(TsBalanceColumns::parse("points").expect("a name")),
        ] {
            let sql = install_sql("\"public\"", cols.as_ref(), "Asia/Shanghai");
            for p in [
                "{s}",
                "{zone}",
                "{paid}",
                "{gift_read}",
                "{gift_set}",
                "{changed}",
                "{same}",
                "{history_end}",
            ] {
                assert!(!sql.contains(p), "{p} left in {cols:?}");
            }
            assert_eq!(sql.contains("gw_absorb_ts_users"), cols.is_some());
        }
    }

    #[test]
    fn every_function_installed_is_removed() {
        let sql = install_sql("s", Some(&TsBalanceColumns::platform()), "UTC");
        let made = sql.matches("CREATE OR REPLACE FUNCTION").count();
        assert_eq!(made, FUNCTIONS.len());
        for f in FUNCTIONS {
            let name = f.split('(').next().unwrap_or_default();
            assert!(sql.contains(&format!("FUNCTION s.{name}(")), "{name}");
        }
        assert_eq!(
            sql.matches("CREATE OR REPLACE TRIGGER").count()
                + sql.matches("CREATE CONSTRAINT TRIGGER").count(),
            TRIGGERS.len()
        );
    }
}
