-- A legacy database at scale, as the two systems' ORMs lay it out (the
-- DDL is what Alembic's migrations and peewee's create_tables make, as
-- pg_dump prints them, constraints written inline): {users} ts users and
-- {users} mjk users, {per_user} statement rows and {per_user} ledger rows
-- each, chained (+100 / -37 alternating), ts_users.money = the statement's
-- last balance. Placeholders in braces are filled by `bench cutover`.
-- {users} per side, {rows} ledger rows and statement rows
CREATE TABLE ts_users (id serial PRIMARY KEY, username varchar(100) NOT NULL UNIQUE, nickname varchar(100), phone varchar(20), password varchar(255) NOT NULL, money integer NOT NULL, gift_money integer NOT NULL, status integer NOT NULL, created_at timestamp NOT NULL);
CREATE TABLE ts_fal_account (id serial PRIMARY KEY, name varchar(100) NOT NULL, api_key varchar(150) NOT NULL UNIQUE, balance real NOT NULL, use_cnt integer NOT NULL, error_cnt integer NOT NULL, status integer NOT NULL, remark text);
CREATE TABLE ts_fal_tasks (id serial PRIMARY KEY, user_id integer NOT NULL, task_id varchar(100) NOT NULL UNIQUE, online_task_id varchar(100), app_name varchar(150) NOT NULL, api_key varchar(150) NOT NULL, task_type varchar(100) NOT NULL, status varchar(100) NOT NULL, money integer NOT NULL, cost_money real NOT NULL, is_refund integer NOT NULL, input_params text, output_params text, created_at timestamp NOT NULL, completed_at timestamp);
CREATE INDEX ts_fal_tasks_user_id ON ts_fal_tasks (user_id);
CREATE TABLE ts_points_detail (id serial PRIMARY KEY, user_id integer NOT NULL, points integer NOT NULL, order_id varchar(255) NOT NULL, title varchar(255) NOT NULL, source_type varchar(50) NOT NULL, balance_before integer NOT NULL, balance_after integer NOT NULL, created_at timestamp NOT NULL);
CREATE TABLE ts_financial_transactions (id serial PRIMARY KEY, user_id integer NOT NULL, money integer NOT NULL, order_id varchar(255) NOT NULL, title varchar(255) NOT NULL, deployment_uuid varchar(255), "time" timestamp NOT NULL, transaction_type integer NOT NULL, pay_type integer NOT NULL, is_cash integer NOT NULL);
CREATE TABLE mjk_users (id uuid PRIMARY KEY, nickname varchar(64) NOT NULL, phone varchar(20), created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE mjk_point_transactions (id bigserial PRIMARY KEY, user_id uuid NOT NULL, type varchar(20) NOT NULL, amount integer NOT NULL, balance_before integer NOT NULL, balance_after integer NOT NULL, source_type varchar(32), source_id varchar(64), batch_id bigint, description text, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), duration double precision);

INSERT INTO ts_users (username, password, money, gift_money, status, created_at)
  SELECT 'user' || g, 'x', 0, 0, 1, timestamp '2025-01-01' FROM generate_series(1, {users}) g;
INSERT INTO mjk_users (id, nickname) SELECT md5('mjk' || g)::uuid, 'm' || g FROM generate_series(1, {users}) g;
-- the statement: per ts user, rows alternating +100 / -37
INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, balance_before, balance_after, created_at)
  SELECT u, CASE WHEN k % 2 = 1 THEN 100 ELSE -37 END, 'o' || u || '-' || k, 't', CASE WHEN k % 2 = 1 THEN 'recharge' ELSE 'consume' END,
         ((k - 1) / 2) * 63 + CASE WHEN k % 2 = 0 THEN 100 ELSE 0 END,
         0, timestamp '2025-02-01' + k * interval '1 minute'
  FROM generate_series(1, {users}) u, generate_series(1, {per_user}) k ORDER BY k, u;
-- fix up figures: before = 63*floor((k-1)/2) + (k even ? 100 : 0); after = before + points
UPDATE ts_points_detail SET balance_after = balance_before + points;
UPDATE ts_users t SET money = s.a FROM (SELECT DISTINCT ON (user_id) user_id, balance_after a FROM ts_points_detail ORDER BY user_id, id DESC) s WHERE s.user_id = t.id;
INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, source_type, source_id, description, created_at, updated_at)
  SELECT md5('mjk' || u)::uuid, CASE WHEN k % 2 = 1 THEN 'recharge' ELSE 'consume' END, CASE WHEN k % 2 = 1 THEN 100 ELSE 37 END,
         ((k - 1) / 2) * 63 + CASE WHEN k % 2 = 0 THEN 100 ELSE 0 END, 0,
         CASE WHEN k % 2 = 0 THEN 'script' END, 'j' || u || '-' || k, 'd', timestamptz '2025-02-01' + k * interval '1 minute', timestamptz '2025-02-01' + k * interval '1 minute'
  FROM generate_series(1, {users}) u, generate_series(1, {per_user}) k ORDER BY k, u;
UPDATE mjk_point_transactions SET balance_after = balance_before + CASE WHEN type = 'consume' THEN -amount ELSE amount END;
ANALYZE;
