"""Prints one digest of a database's schema and every row of every table.
usage: checksum.py URL   (postgresql://... or sqlite:///path)
Used by the adoption tests: a dry run must leave it unchanged."""
import hashlib, sys

url = sys.argv[1]
h = hashlib.sha256()
if url.startswith("sqlite:///"):
    import sqlite3
    con = sqlite3.connect(url[len("sqlite:///"):])
    cur = con.cursor()
    # The journal mode is part of the file: a dry run must not switch it.
    cur.execute("PRAGMA journal_mode")
    h.update(repr(cur.fetchall()).encode())
    cur.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
    schema = cur.fetchall()
    h.update(repr(schema).encode())
    tables = [r[1] for r in schema if r[0] == "table"]
    q = lambda t: f'SELECT * FROM "{t}"'
else:
    import psycopg2
    con = psycopg2.connect(url)
    cur = con.cursor()
    cur.execute("""SELECT table_name, column_name, data_type, is_nullable, column_default
                   FROM information_schema.columns WHERE table_schema = 'public'
                   ORDER BY table_name, ordinal_position""")
    h.update(repr(cur.fetchall()).encode())
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
    h.update(repr(cur.fetchall()).encode())
    cur.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")
    h.update(repr(cur.fetchall()).encode())
    cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
    tables = [r[0] for r in cur.fetchall()]
    q = lambda t: f'SELECT * FROM "{t}"'
for t in tables:
    cur.execute(q(t))
    rows = sorted(repr(r) for r in cur.fetchall())
    h.update(t.encode())
    for r in rows:
        h.update(r.encode())
print(h.hexdigest())
