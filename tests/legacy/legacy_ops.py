"""The legacy systems' own balance functions, run one after another, each in
its own transaction, as their services keep calling them after the cutover.
usage: legacy_ops.py PG_URL OPS_FILE  -> prints one JSON result per op, in order

An op is a JSON object:
  {"op": "mjk_consume",  "user": UUID, "amount": N, "source_type": T, "source_id": S, "duration": F}
  {"op": "mjk_refund",   "user": UUID, "amount": N, "source_type": T, "source_id": S}
  {"op": "mjk_recharge", "user": UUID, "amount": N, "order_id": O}
  {"op": "mjk_balance",  "user": UUID}
  {"op": "ts_deduct",    "user": ID, "money": N, "title": T, "order_id": O}
  {"op": "ts_add",       "user": ID, "points": N, "title": T, "order_id": O, "source_type": S, "cents": C}
  {"op": "ts_edit",      "user": ID, "money": N, "gift": N}   (an admin tool: no statement row)
  {"op": "ts_money",     "user": ID}
A result: {"ok": true, "value": ...} or {"ok": false, "error": "<exception class>: <message>"}.
`mjk_consume` gives the row's id, or null when the old code found the balance short;
`ts_deduct` gives the old function's True/False."""
import json, os, sys, uuid

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "mjk"))
sys.path.insert(0, os.path.join(here, "ts"))

from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from app.services import points as P
import ts_models as T

url = sys.argv[1]
ops = json.load(open(sys.argv[2]))
engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
T.connect(url)


def run(op):
    kind = op["op"]
    if kind.startswith("mjk_"):
        user = uuid.UUID(op["user"])
        with Session(engine) as s:
            if kind == "mjk_balance":
                return P.get_balance(s, user)
            if kind == "mjk_consume":
                row = P.consume(s, user, op["amount"], op["source_type"], op["source_id"],
                                op.get("duration"))
            elif kind == "mjk_refund":
                row = P.refund(s, user, op["amount"], op["source_type"], op["source_id"])
            elif kind == "mjk_recharge":
                row = P.recharge(s, user, op["amount"], op["order_id"])
            else:
                raise ValueError(kind)
            s.commit()
            return None if row is None else row.id
    if kind == "ts_deduct":
        return T.deduct_user_money_by_id(op["user"], op["money"], op["title"], op["order_id"])
    if kind == "ts_add":
        T.add_user_money(op["user"], op["points"], op["title"], op["order_id"], op["source_type"],
                         cents=op.get("cents"))
        return True
    if kind == "ts_edit":
        with T.db.atomic():
            T.User.update(money=T.User.money + op.get("money", 0),
                          gift_money=T.User.gift_money + op.get("gift", 0)) \
                .where(T.User.id == op["user"]).execute()
        return True
    if kind == "ts_money":
        u = T.User.get_by_id(op["user"])
        return {"money": u.money, "gift_money": u.gift_money, "total": T.get_user_total_money(u.id)}
    raise ValueError(kind)


out = []
for op in ops:
    try:
        out.append({"ok": True, "value": run(op)})
    except Exception as e:  # the result says which; the run goes on
        try:
            T.db.rollback()
        except Exception:
            pass
        out.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
print(json.dumps(out))
