"""What the ts platform keeps doing beside the gateway, through its own
peewee models. usage:
  ts_platform.py URL task TASK_ID API_KEY USER_ID   -> a fal task created now (naive local time)
  ts_platform.py URL edit USER_ID POINTS [GIFT]      -> an admin tool adds POINTS to ts_users.money
                                                     (and GIFT to gift_money), writing no statement row
  ts_platform.py URL money USER_ID                   -> the user's balance as the old code reads it:
                                                     {"money", "gift_money", "total"}
  ts_platform.py URL read                            -> loads the statement and money rows the
                                                     way the old pages do, with their naive
                                                     date comparisons
URL is a peewee URL (postgresql://... or sqlite:///path)."""
import datetime, json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ts"))
import ts_models as T

T.connect(sys.argv[1])
cmd = sys.argv[2]
if cmd == "task":
    task_id, api_key, user_id = sys.argv[3], sys.argv[4], int(sys.argv[5])
    T.FalTasks.create(user_id=user_id, task_id=task_id, online_task_id="req-" + task_id,
                      app_name="fal-ai/flux/schnell", api_key=api_key, task_type="image",
                      status="COMPLETED", money=20, cost_money=0.003, is_refund=0,
                      input_params=json.dumps({"prompt": "after cutover"}), created_at=T.now_cst())
    print("task", task_id, T.now_cst().isoformat())
elif cmd == "edit":
    user_id, points = int(sys.argv[3]), int(sys.argv[4])
    gift = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    T.User.update(money=T.User.money + points, gift_money=T.User.gift_money + gift) \
        .where(T.User.id == user_id).execute()
    u = T.User.get_by_id(user_id)
    print("edited", user_id, u.money, u.gift_money)
elif cmd == "money":
    u = T.User.get_by_id(int(sys.argv[3]))
    print(json.dumps({"money": u.money, "gift_money": u.gift_money,
                      "total": T.get_user_total_money(u.id)}))
elif cmd == "read":
    week_ago = T.now_cst() - datetime.timedelta(days=7)
    details = list(T.PointsDetail.select().order_by(T.PointsDetail.id))
    recent = [p for p in details if p.created_at > week_ago]
    money = list(T.FinancialTransactions.select().order_by(T.FinancialTransactions.id))
    recent_money = [f for f in money if f.time > week_ago]
    tasks = list(T.FalTasks.select())
    recent_tasks = [t for t in tasks if t.created_at > week_ago]
    print(json.dumps({
        "points_detail": len(details), "recent_points_detail": len(recent),
        "financial": len(money), "recent_financial": len(recent_money),
        "fal_tasks": len(tasks), "recent_fal_tasks": len(recent_tasks),
        "source_types": sorted({p.source_type for p in details}),
        "last": [{"user": p.user_id, "points": p.points, "order_id": p.order_id, "title": p.title,
                  "source_type": p.source_type, "before": p.balance_before, "after": p.balance_after,
                  "created_at": p.created_at.isoformat()} for p in details[-6:]],
    }, ensure_ascii=False))
else:
    sys.exit("unknown command " + cmd)
