//! The in-process broker behind `balanceChanged`.
//!
//! A single-user subscriber has its own bounded queue. Publishing never
//! waits: when a queue is full, the subscriber is marked as having missed
//! that user's events, later events of that user are not queued for it, and
//! when it catches up it is told to resync that user (current balance, read
//! from the database). Events already read past by a resync are skipped by
//! their ledger id, so a resync is never followed by an older event.
//!
//! All-users subscribers share one bounded log instead of a queue each:
//! publishing appends once, whatever their number, and each reads the log
//! at its own cursor. One that falls more than the log's length behind is
//! told to resync exactly the users whose events it lost (the log keeps,
//! per user, the position of the last event that fell off its front). So a
//! partner whose thousands of subscriptions never read costs the writers
//! nothing per event.
//!
//! Subscriptions are counted per token subject, with a cap
//! (`SUBSCRIPTIONS_PER_SUBJECT`): one partner cannot hold unbounded
//! memory across sockets.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::places::{Place, Places};
use crate::store::feed::{Change, Entry, HoldNote, LedgerSink};

/// One change of one user's balance, as delivered to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceEvent {
    pub user_id: i32,
    /// The settled balance (the ledger's last `balance_after`).
    pub balance: i64,
    /// Points reserved by open holds: `balance - held` is available.
    pub held: i64,
    /// The ledger row, for a ledger change.
    pub entry: Option<Entry>,
    /// The hold, for a hold change. Both `None`: a resync (the figures are
    /// then read fresh).
    pub hold: Option<HoldNote>,
}

/// Whose changes a subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    User(i32),
    All,
}

impl Filter {
    fn matches(self, user_id: i32) -> bool {
        match self {
            Filter::User(u) => u == user_id,
            Filter::All => true,
        }
    }
}

/// What a subscriber should deliver next.
#[derive(Debug)]
pub enum Next {
    Event(Arc<BalanceEvent>),
    /// These users' events may have been missed: read and send their
    /// current balances, then call [`Subscription::resynced`] for each.
    Resync(Vec<i32>),
}

/// Users resynced per [`Next::Resync`], so one read covers them.
const RESYNC_CHUNK: usize = 100;

pub struct Broker {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    capacity: usize,
    /// What all-users subscribers read.
    all: Mutex<AllLog>,
    /// Wakes all-users subscribers waiting at the log's end.
    all_wake: Notify,
    /// Open subscriptions per token subject, with the cap (all of them:
    /// [`Broker::subscribers`]).
    subjects: Places<String>,
}

#[derive(Default)]
struct Registry {
    by_user: HashMap<i32, Vec<Arc<Slot>>>,
}

/// One entry of the all-users log.
#[derive(Clone)]
enum Item {
    Event(Arc<BalanceEvent>),
    /// These users' events may have been lost (the feed reconnected).
    Missed(Arc<[i32]>),
}

/// The all-users log: the last `capacity` items, `base` the position of
/// the first.
struct AllLog {
    base: u64,
    items: VecDeque<Item>,
    capacity: usize,
    /// Per user, the position of the last item naming them that fell off
    /// the front: a reader whose cursor is at or before it lost that
    /// user's news. Grows with the users ever evicted (an entry each).
    evicted: HashMap<i32, u64>,
}

impl AllLog {
    fn end(&self) -> u64 {
        self.base + self.items.len() as u64
    }

    fn push(&mut self, item: Item) {
        if self.items.len() >= self.capacity {
            if let Some(old) = self.items.pop_front() {
                let at = self.base;
                match old {
                    Item::Event(e) => {
                        self.evicted.insert(e.user_id, at);
                    }
                    Item::Missed(users) => {
                        for u in users.iter() {
                            self.evicted.insert(*u, at);
                        }
                    }
                }
                self.base += 1;
            }
        }
        self.items.push_back(item);
    }
}

/// A subject holds as many subscriptions as the cap allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at most {0} open subscriptions per token subject")]
pub struct TooManySubscriptions(pub usize);

struct Slot {
    id: u64,
    state: Mutex<SlotState>,
    wake: Notify,
}

#[derive(Default)]
struct SlotState {
    queue: VecDeque<Arc<BalanceEvent>>,
    /// Users whose events this subscriber lost; sorted so resyncs come in a
    /// stable order.
    missed: BTreeSet<i32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    fn offer(&self, event: &Arc<BalanceEvent>, capacity: usize) {
        let mut st = lock(&self.state);
        let user = event.user_id;
        if st.missed.contains(&user) {
            // Already behind for this user: the resync will cover this.
        } else if st.queue.len() < capacity {
            st.queue.push_back(event.clone());
        } else {
            st.missed.insert(user);
        }
        drop(st);
        self.wake.notify_one();
    }

    fn mark_missed(&self, users: impl IntoIterator<Item = i32>) {
        let mut st = lock(&self.state);
        st.missed.extend(users);
        drop(st);
        self.wake.notify_one();
    }
}

impl Broker {
    /// `capacity`: events queued per subscriber (and kept in the all-users
    /// log) before it is considered behind (events are shared, so a full
    /// queue costs pointers, not rows). `per_subject`: open subscriptions
    /// per token subject (0: no cap).
    pub fn new(capacity: usize, per_subject: usize) -> Arc<Broker> {
        let capacity = capacity.max(1);
        Arc::new(Broker {
            registry: Mutex::default(),
            next_id: AtomicU64::new(1),
            capacity,
            all: Mutex::new(AllLog {
                base: 0,
                items: VecDeque::new(),
                capacity,
                evicted: HashMap::new(),
            }),
            all_wake: Notify::new(),
            subjects: Places::new(per_subject, 0),
        })
    }

    /// A subscription of `subject` (the token subject), unless it holds the
    /// most it may.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: Filter,
        subject: &str,
    ) -> Result<Subscription, TooManySubscriptions> {
        let place = self
            .subjects
            .take(subject.to_owned())
            .map_err(|_| TooManySubscriptions(self.subjects.per_key()))?;
        let reader = match filter {
            Filter::User(u) => {
                let slot = Arc::new(Slot {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    state: Mutex::default(),
                    wake: Notify::new(),
                });
                lock(&self.registry)
                    .by_user
                    .entry(u)
                    .or_default()
                    .push(slot.clone());
                Reader::User(slot)
            }
            Filter::All => {
                // Positioned at the log's end: every later event is read.
                Reader::All {
                    cursor: lock(&self.all).end(),
                    missed: BTreeSet::new(),
                }
            }
        };
        Ok(Subscription {
            broker: self.clone(),
            filter,
            _place: place,
            reader,
            watermarks: HashMap::new(),
        })
    }

    /// Open subscriptions, for `/metrics`.
    pub fn subscribers(&self) -> usize {
        self.subjects.taken()
    }

    /// Hands one committed change to every matching subscriber; never
    /// waits, and costs the same whatever the number of all-users
    /// subscribers.
    pub fn publish(&self, event: BalanceEvent) {
        let event = Arc::new(event);
        {
            let reg = lock(&self.registry);
            if let Some(slots) = reg.by_user.get(&event.user_id) {
                for s in slots {
                    s.offer(&event, self.capacity);
                }
            }
        }
        lock(&self.all).push(Item::Event(event));
        self.all_wake.notify_waiters();
    }

    /// After events may have been lost (the database listener reconnected):
    /// every single-user subscriber resyncs its user, and every all-users
    /// subscriber resyncs `changed`, the users whose ledger moved meanwhile.
    pub fn resync(&self, changed: &[i32]) {
        {
            let reg = lock(&self.registry);
            for (user, slots) in &reg.by_user {
                for s in slots {
                    s.mark_missed([*user]);
                }
            }
        }
        lock(&self.all).push(Item::Missed(changed.into()));
        self.all_wake.notify_waiters();
    }

    /// Unregisters a single-user subscriber's queue.
    fn remove(&self, user: i32, slot_id: u64) {
        let mut reg = lock(&self.registry);
        if let Some(v) = reg.by_user.get_mut(&user) {
            v.retain(|s| s.id != slot_id);
            if v.is_empty() {
                reg.by_user.remove(&user);
            }
        }
    }
}

/// Committed ledger rows, from whichever feed the engine has, become events.
impl LedgerSink for Broker {
    fn committed(&self, user_id: i32, changes: &[Change]) {
        for change in changes {
            self.publish(match change {
                Change::Row { entry, held } => BalanceEvent {
                    user_id,
                    balance: entry.balance_after,
                    held: *held,
                    entry: Some(entry.clone()),
                    hold: None,
                },
                Change::Hold {
                    hold,
                    balance,
                    held,
                } => BalanceEvent {
                    user_id,
                    balance: *balance,
                    held: *held,
                    entry: None,
                    hold: Some(hold.clone()),
                },
            });
        }
    }

    fn missed(&self, user_ids: &[i32]) {
        self.resync(user_ids);
    }
}

/// One subscriber's handle; unregisters when dropped.
pub struct Subscription {
    broker: Arc<Broker>,
    filter: Filter,
    /// The subscription's place among its subject's; given back on drop.
    _place: Place<String>,
    reader: Reader,
    /// Per resynced user, what the resync covered.
    watermarks: HashMap<i32, Mark>,
}

/// Where a subscription reads.
enum Reader {
    /// Its own queue.
    User(Arc<Slot>),
    /// The shared all-users log, from `cursor`; `missed`: users to resync
    /// before anything else, whose events meanwhile are skipped.
    All { cursor: u64, missed: BTreeSet<i32> },
}

/// What a resync of one user read: events up to it are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The user's last ledger id.
    pub entry_id: i64,
    /// The user's hold change count.
    pub hold_seq: i64,
}

/// Up to [`RESYNC_CHUNK`] users out of `missed`.
fn resync_chunk(missed: &mut BTreeSet<i32>) -> Vec<i32> {
    let mut users = Vec::new();
    while users.len() < RESYNC_CHUNK {
        match missed.pop_first() {
            Some(u) => users.push(u),
            None => break,
        }
    }
    users
}

impl Subscription {
    pub fn filter(&self) -> Filter {
        self.filter
    }

    /// Waits for the next event or resync request.
    pub async fn next(&mut self) -> Next {
        match &mut self.reader {
            Reader::User(slot) => loop {
                {
                    let mut st = lock(&slot.state);
                    if !st.missed.is_empty() {
                        return Next::Resync(resync_chunk(&mut st.missed));
                    }
                    while let Some(event) = st.queue.pop_front() {
                        if is_stale(&mut self.watermarks, &event) {
                            continue;
                        }
                        return Next::Event(event);
                    }
                }
                // A notification sent between the check above and this
                // await is kept as a permit, so no wake-up is lost.
                slot.wake.notified().await;
            },
            Reader::All { cursor, missed } => loop {
                if !missed.is_empty() {
                    return Next::Resync(resync_chunk(missed));
                }
                // Registered before the look, so an append after it wakes
                // this reader.
                let notified = self.broker.all_wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let item = {
                    let log = lock(&self.broker.all);
                    if *cursor < log.base {
                        // Fell behind the log: resync whoever it lost.
                        missed.extend(
                            log.evicted
                                .iter()
                                .filter(|(_, at)| **at >= *cursor)
                                .map(|(u, _)| *u),
                        );
                        *cursor = log.base;
                        None
                    } else {
                        let item = log
                            .items
                            .get(usize::try_from(*cursor - log.base).unwrap_or(usize::MAX))
                            .cloned();
                        if item.is_some() {
                            *cursor += 1;
                        }
                        item
                    }
                };
                match item {
                    Some(Item::Event(e)) => {
                        // A user awaiting a resync: that resync covers it.
                        if missed.contains(&e.user_id) || is_stale(&mut self.watermarks, &e) {
                            continue;
                        }
                        return Next::Event(e);
                    }
                    Some(Item::Missed(users)) => missed.extend(users.iter().copied()),
                    None if !missed.is_empty() => {}
                    None => notified.await,
                }
            },
        }
    }

    /// Records what a resync of `user` covered.
    pub fn resynced(&mut self, user: i32, mark: Mark) {
        if self.filter.matches(user) {
            self.watermarks.insert(user, mark);
        }
    }
}

/// An event older than the resync already sent for its user. Ledger ids
/// and hold change counts each grow along one user's changes (both are
/// made under the user's lock), so the first newer event ends the check.
fn is_stale(watermarks: &mut HashMap<i32, Mark>, event: &BalanceEvent) -> bool {
    let Some(mark) = watermarks.get(&event.user_id) else {
        return false;
    };
    let stale = match (&event.entry, &event.hold) {
        (Some(entry), _) => entry.id <= mark.entry_id,
        (None, Some(hold)) => hold.seq <= mark.hold_seq,
        (None, None) => false,
    };
    if !stale {
        watermarks.remove(&event.user_id);
    }
    stale
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let (Filter::User(user), Reader::User(slot)) = (self.filter, &self.reader) {
            self.broker.remove(user, slot.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn row(id: i64, before: i64, after: i64) -> Entry {
        Entry {
            id,
            user_id: uuid::Uuid::nil(),
            r#type: "consume".into(),
            amount: (before - after).abs(),
            balance_before: before,
            balance_after: after,
            source_type: None,
            source_id: None,
            batch_id: None,
            duration: None,
            description: None,
            refund_key: None,
            refund_of: None,
            request_hash: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn event(user: i32, id: i64, after: i64) -> BalanceEvent {
        BalanceEvent {
            user_id: user,
            balance: after,
            held: 0,
            entry: Some(row(id, after + 1, after)),
            hold: None,
        }
    }

    fn mark(entry_id: i64, hold_seq: i64) -> Mark {
        Mark { entry_id, hold_seq }
    }

    fn hold_event(user: i32, seq: i64) -> BalanceEvent {
        BalanceEvent {
            user_id: user,
            balance: 100,
            held: 10,
            entry: None,
            hold: Some(HoldNote {
                id: seq,
                source_type: "video".into(),
                source_id: format!("job-{seq}"),
                amount: 10,
                status: "held".into(),
                captured: None,
                seq,
            }),
        }
    }

    #[tokio::test]
    async fn hold_events_older_than_a_resync_are_skipped_newer_ones_flow() {
        let b = Broker::new(8, 0);
        let mut s = b.subscribe(Filter::User(1), "t").unwrap();
        b.publish(hold_event(1, 1));
        // The feed was lost: user 1 must be resynced.
        b.resync(&[1]);
        assert!(matches!(next_now(&mut s).await, Some(Next::Resync(u)) if u == vec![1]));
        // Published after the resync was handed out but committed before
        // its read: covered by the mark.
        b.publish(hold_event(1, 2));
        s.resynced(1, mark(0, 2));
        // The queued seq 1 and the late seq 2 are both covered.
        assert!(next_now(&mut s).await.is_none());
        b.publish(hold_event(1, 4));
        match next_now(&mut s).await {
            Some(Next::Event(e)) => assert_eq!(e.hold.as_ref().map(|h| h.seq), Some(4)),
            other => panic!("expected hold seq 4, got {other:?}"),
        }
    }

    async fn next_now(s: &mut Subscription) -> Option<Next> {
        tokio::time::timeout(std::time::Duration::from_millis(50), s.next())
            .await
            .ok()
    }

    fn event_id(n: &Next) -> i64 {
        match n {
            Next::Event(e) => e.entry.as_ref().map(|e| e.id).unwrap_or(-1),
            Next::Resync(_) => -1,
        }
    }

    #[tokio::test]
    async fn routes_by_user_and_all() {
        let b = Broker::new(16, 0);
        let mut one = b.subscribe(Filter::User(1), "t").unwrap();
        let mut all = b.subscribe(Filter::All, "t").unwrap();
        b.publish(event(2, 10, 5));
        b.publish(event(1, 11, 7));
        assert_eq!(event_id(&next_now(&mut one).await.unwrap()), 11);
        assert!(next_now(&mut one).await.is_none());
        assert_eq!(event_id(&next_now(&mut all).await.unwrap()), 10);
        assert_eq!(event_id(&next_now(&mut all).await.unwrap()), 11);
        assert_eq!(b.subscribers(), 2);
        drop(one);
        assert_eq!(b.subscribers(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_turns_into_one_resync_and_older_events_are_skipped() {
        let b = Broker::new(3, 0);
        let mut slow = b.subscribe(Filter::User(1), "t").unwrap();
        let mut fast = b.subscribe(Filter::User(1), "t").unwrap();
        for i in 0..10 {
            b.publish(event(1, 100 + i, 1000 - i));
            // The fast one keeps up and sees everything in order.
            assert_eq!(event_id(&next_now(&mut fast).await.unwrap()), 100 + i);
        }
        // The slow one: a resync first (its user is marked), then its
        // three queued events are older than the resync and are skipped.
        match next_now(&mut slow).await.unwrap() {
            Next::Resync(users) => assert_eq!(users, vec![1]),
            other => panic!("expected a resync, got {other:?}"),
        }
        slow.resynced(1, mark(109, 0));
        assert!(next_now(&mut slow).await.is_none());
        // Newer events flow again after the resync.
        b.publish(event(1, 110, 990));
        assert_eq!(event_id(&next_now(&mut slow).await.unwrap()), 110);
    }

    #[tokio::test]
    async fn events_of_a_missed_user_are_not_queued_until_resynced() {
        let b = Broker::new(1, 0);
        let mut s = b.subscribe(Filter::All, "t").unwrap();
        b.publish(event(1, 1, 9));
        b.publish(event(2, 2, 9)); // queue full: user 2 missed
        b.publish(event(2, 3, 8)); // dropped, covered by the resync
        b.publish(event(1, 4, 8)); // queue still full: user 1 missed too
        match next_now(&mut s).await.unwrap() {
            Next::Resync(users) => assert_eq!(users, vec![1, 2]),
            other => panic!("expected a resync, got {other:?}"),
        }
        s.resynced(1, mark(4, 0));
        s.resynced(2, mark(3, 0));
        // The queued event of user 1 predates the resync.
        assert!(next_now(&mut s).await.is_none());
    }

    #[tokio::test]
    async fn resync_after_reconnect_reaches_every_subscriber() {
        let b = Broker::new(8, 0);
        let mut one = b.subscribe(Filter::User(7), "t").unwrap();
        let mut all = b.subscribe(Filter::All, "t").unwrap();
        b.resync(&[3, 7]);
        assert!(matches!(next_now(&mut one).await, Some(Next::Resync(u)) if u == vec![7]));
        assert!(matches!(next_now(&mut all).await, Some(Next::Resync(u)) if u == vec![3, 7]));
    }

    #[tokio::test]
    async fn an_all_users_reader_behind_the_log_resyncs_exactly_the_users_it_lost() {
        let b = Broker::new(4, 0);
        let mut lagging = b.subscribe(Filter::All, "partner").unwrap();
        let mut current = b.subscribe(Filter::All, "partner").unwrap();
        // Users 1..=6 each change once; the log keeps the last four.
        for u in 1..=6 {
            b.publish(event(u, 100 + i64::from(u), 10));
            assert_eq!(
                event_id(&next_now(&mut current).await.unwrap()),
                100 + i64::from(u)
            );
        }
        match next_now(&mut lagging).await.unwrap() {
            Next::Resync(users) => assert_eq!(users, vec![1, 2]),
            other => panic!("expected a resync of the lost users, got {other:?}"),
        }
        // Then the four it did not lose, in order.
        for u in 3..=6 {
            assert_eq!(
                event_id(&next_now(&mut lagging).await.unwrap()),
                100 + i64::from(u)
            );
        }
        assert!(next_now(&mut lagging).await.is_none());
        assert_eq!(b.subscribers(), 2);
        drop(lagging);
        assert_eq!(b.subscribers(), 1);
    }

    #[tokio::test]
    async fn a_subject_holds_at_most_its_cap_of_subscriptions() {
        let b = Broker::new(4, 3);
        let held: Vec<_> = (0..3)
            .map(|i| {
                let f = if i == 0 { Filter::User(1) } else { Filter::All };
                b.subscribe(f, "partner:p").unwrap()
            })
            .collect();
        assert_eq!(
            b.subscribe(Filter::All, "partner:p").err(),
            Some(TooManySubscriptions(3))
        );
        // Another subject is not affected; a closed one frees a place.
        let _other = b.subscribe(Filter::All, "partner:q").unwrap();
        drop(held);
        assert!(b.subscribe(Filter::All, "partner:p").is_ok());
    }
}
