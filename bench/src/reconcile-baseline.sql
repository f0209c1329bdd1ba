-- The baseline of `bench reconcile`: the minimal work of reconciling the
-- generated month, done by PostgreSQL alone (psql). After a `bench
-- reconcile` run on DATABASE:
--   psql DATABASE -c "\copy (SELECT 0, account_id, request_id, endpoint_id, billed_us, cost_nano, quantity, unit, unit_price, percent_discount, tags FROM gw_fal_billing_events) TO '/tmp/rec-events.csv' WITH (FORMAT csv)"
--   psql DATABASE -f bench/src/reconcile-baseline.sql
-- Same table shapes and indexes as the gateway's, the same lookups per
-- task; the margin assumes POINTS_PER_USD = 100.
\timing on
DROP TABLE IF EXISTS bl_events, bl_lines;
CREATE TABLE bl_events (LIKE gw_fal_billing_events INCLUDING ALL);
CREATE TABLE bl_lines (LIKE gw_fal_billing_lines INCLUDING ALL);
\copy bl_events (run_id, account_id, request_id, endpoint_id, billed_us, cost_nano, quantity, unit, unit_price, percent_discount, tags) FROM '/tmp/rec-events.csv' WITH (FORMAT csv)
INSERT INTO bl_lines (run_id, account_id, at_us, task_row_id, task_id, request_id, user_id, endpoint_id, task_status, charged_points, refunded_points, task_refunded, ledger_charged, ledger_refunded, cost_money_nano, fal_cost_nano, fal_events, fal_quantity, fal_unit, margin_nano, flags)
SELECT 0, a.id, CAST(EXTRACT(EPOCH FROM t.created_at AT TIME ZONE 'Asia/Shanghai') * 1000000 AS BIGINT), t.id, t.task_id, t.online_task_id, t.user_id, t.app_name, t.status,
  t.money, CASE WHEN l.ledger_refunds > 0 THEN l.ledger_refunded WHEN t.is_refund = 1 THEN t.money ELSE 0 END, t.is_refund = 1,
  l.ledger_charged, l.ledger_refunded, CAST(ROUND(CAST(t.cost_money AS NUMERIC) * 1000000000) AS BIGINT), b.fal_cost, b.n, b.quantity, b.unit,
  t.money * 10000000 - COALESCE(b.fal_cost, 0),
  (CASE WHEN b.n > 0 AND b.fal_cost > 0 AND (t.is_refund = 1 OR t.money = 0) THEN 1 ELSE 0 END)
  + (CASE WHEN b.n = 0 AND t.money > 0 AND t.is_refund = 0 THEN 2 ELSE 0 END)
  + (CASE WHEN b.n > 0 AND ABS(CAST(ROUND(CAST(t.cost_money AS NUMERIC) * 1000000000) AS BIGINT) - b.fal_cost) > 1000000 THEN 8 ELSE 0 END)
  + (CASE WHEN t.money * 10000000 - COALESCE(b.fal_cost, 0) < 0 THEN 16 ELSE 0 END)
FROM ts_fal_tasks t JOIN ts_fal_account a ON a.api_key = t.api_key
CROSS JOIN LATERAL (SELECT CAST(COALESCE(SUM(CASE WHEN p.type = 'consume' THEN p.amount ELSE 0 END), 0) AS BIGINT) AS ledger_charged, CAST(COALESCE(SUM(CASE WHEN p.type = 'refund' THEN p.amount ELSE 0 END), 0) AS BIGINT) AS ledger_refunded, COUNT(CASE WHEN p.type = 'refund' THEN 1 END) AS ledger_refunds FROM mjk_point_transactions p WHERE p.source_id = t.task_id AND p.source_type = 'fal' AND p.type IN ('consume', 'refund')) l
CROSS JOIN LATERAL (SELECT COUNT(*) AS n, CAST(SUM(e.cost_nano) AS BIGINT) AS fal_cost, SUM(e.quantity) AS quantity, MIN(e.unit) AS unit FROM bl_events e WHERE e.run_id = 0 AND e.request_id = t.online_task_id) b
WHERE t.task_id LIKE 'bt-%';
INSERT INTO bl_lines (run_id, account_id, at_us, request_id, endpoint_id, charged_points, refunded_points, task_refunded, ledger_charged, ledger_refunded, fal_cost_nano, fal_events, margin_nano, flags)
SELECT 0, MIN(e.account_id), MIN(e.billed_us), e.request_id, MIN(e.endpoint_id), 0, 0, false, 0, 0, SUM(e.cost_nano), COUNT(*), -SUM(e.cost_nano), 4 + 16
FROM bl_events e WHERE NOT EXISTS (SELECT 1 FROM ts_fal_tasks t WHERE t.online_task_id = e.request_id) GROUP BY e.request_id;
SELECT COUNT(*) FROM bl_lines;
DROP TABLE bl_events, bl_lines;
