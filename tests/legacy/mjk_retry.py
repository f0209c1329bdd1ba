"""The mjk system's old behaviour on a retried job, through its own models:
no idempotency, so one job is charged twice under one source_id.
usage: mjk_retry.py SQLALCHEMY_URL  -> prints "<user uuid> <source_id>" """
import datetime, os, sys, uuid
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mjk"))
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from app.models import PointTransaction

eng = create_engine(sys.argv[1])
with Session(eng) as s:
    last = s.scalars(select(PointTransaction).where(PointTransaction.balance_after >= 24)
                     .order_by(PointTransaction.id.desc()).limit(1)).one()
    user = last.user_id
    tail = s.scalars(select(PointTransaction).where(PointTransaction.user_id == user)
                     .order_by(PointTransaction.id.desc()).limit(1)).one()
    bal, t = tail.balance_after, tail.created_at
    sid = str(uuid.uuid4())
    for k in range(2):
        t += datetime.timedelta(seconds=5)
        s.add(PointTransaction(user_id=user, type="consume", amount=12, balance_before=bal,
                               balance_after=bal - 12, source_type="script", source_id=sid,
                               batch_id=tail.batch_id, description="【脚本生成】", created_at=t, updated_at=t))
        bal -= 12
    s.commit()
    print(user, sid)
