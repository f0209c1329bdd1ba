-- The minimal write: what one consume needs and nothing else, as one
-- server-side function run by pgbench -M prepared beside gw_consume
-- (`bench run --scenarios consume`). Under the user's row lock, after the
-- key probe: the ledger row with its request fingerprint, one allocation,
-- the batch decrement, the ts_points_detail mirror, the cached balance.
--
-- Not in it, and in gw_consume: the job key's advisory lock (two users'
-- consumes of one key), the adoption row (the ts lock while absorbing,
-- the cutover), the hold probe, the last-row time lookup, draws over
-- several batches, the gateway's entry row (the unique job key, who wrote
-- it, the mirror's id) and the event every instance tails.
--
-- It writes copies of the five tables (`bench_min_*`: the same columns,
-- indexes and rows when first made, no triggers, no foreign keys; the
-- ledger's copy with a `request_hash` column), so the gateway's own tables
-- stay as only the gateway wrote them and `verify` holds after a run.
DO $$
BEGIN
  IF to_regclass('bench_min_ledger') IS NULL THEN
    CREATE TABLE bench_min_users (LIKE gw_users INCLUDING ALL);
    INSERT INTO bench_min_users SELECT * FROM gw_users;
    CREATE TABLE bench_min_batches (LIKE gw_point_batches INCLUDING ALL);
    INSERT INTO bench_min_batches SELECT * FROM gw_point_batches;
    CREATE TABLE bench_min_ledger (LIKE mjk_point_transactions INCLUDING ALL);
    INSERT INTO bench_min_ledger SELECT * FROM mjk_point_transactions;
    ALTER TABLE bench_min_ledger ADD COLUMN request_hash varchar(64);
    PERFORM setval(pg_get_serial_sequence('bench_min_ledger', 'id'),
                   (SELECT coalesce(max(id), 0) + 1 FROM bench_min_ledger));
    CREATE TABLE bench_min_detail (LIKE ts_points_detail INCLUDING ALL);
    INSERT INTO bench_min_detail SELECT * FROM ts_points_detail;
    PERFORM setval(pg_get_serial_sequence('bench_min_detail', 'id'),
                   (SELECT coalesce(max(id), 0) + 1 FROM bench_min_detail));
    CREATE TABLE bench_min_allocations (LIKE gw_point_allocations INCLUDING ALL);
    INSERT INTO bench_min_allocations SELECT * FROM gw_point_allocations;
    PERFORM setval(pg_get_serial_sequence('bench_min_allocations', 'id'),
                   (SELECT coalesce(max(id), 0) + 1 FROM bench_min_allocations));
    ANALYZE bench_min_users, bench_min_batches, bench_min_ledger, bench_min_detail, bench_min_allocations;
  END IF;
END $$;
-- Its batch is the one gw_consume draws first whenever that one covers
-- the amount (the benchmark's consumes are of 1 point).
CREATE OR REPLACE FUNCTION bench_minimal_consume(p_user integer, p_source_type text,
    p_source_id text, p_amount bigint, p_description text, p_hash text, p_zone text,
    OUT o_outcome text, OUT o_id bigint, OUT o_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_uuid uuid;
  v_batch bigint;
  v_at timestamptz;
BEGIN
  o_outcome := 'other';
  SELECT u.uuid, u.balance INTO v_uuid, o_balance FROM bench_min_users u WHERE u.id = p_user FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM 1 FROM bench_min_ledger t
   WHERE t.source_id = p_source_id AND t.type = 'consume' AND t.source_type = p_source_type;
  IF FOUND THEN
    o_outcome := 'exists';
    RETURN;
  END IF;
  SELECT pb.id INTO v_batch FROM bench_min_batches pb
   WHERE pb.user_id = p_user AND pb.remaining >= p_amount
   ORDER BY pb.expires_at IS NULL, pb.expires_at, pb.id LIMIT 1;
  IF NOT FOUND OR o_balance < p_amount THEN
    RETURN;
  END IF;
  v_at := clock_timestamp();
  INSERT INTO bench_min_ledger (user_id, type, amount, balance_before, balance_after,
      source_type, source_id, batch_id, description, request_hash, created_at, updated_at)
    VALUES (v_uuid, 'consume', p_amount, o_balance, o_balance - p_amount,
      p_source_type, p_source_id, v_batch, p_description, p_hash, v_at, v_at)
    RETURNING id INTO o_id;
  INSERT INTO bench_min_allocations (entry_id, batch_id, amount) VALUES (o_id, v_batch, p_amount);
  UPDATE bench_min_batches SET remaining = remaining - p_amount WHERE id = v_batch;
  INSERT INTO bench_min_detail (user_id, points, order_id, title, source_type,
      balance_before, balance_after, created_at)
    VALUES (p_user, -p_amount, p_source_id, p_description, 'consume',
      o_balance, o_balance - p_amount, v_at AT TIME ZONE p_zone);
  UPDATE bench_min_users SET balance = o_balance - p_amount, updated_at = v_at WHERE id = p_user;
  o_outcome := 'done';
END $$;
