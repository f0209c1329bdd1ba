//! `balanceChanged`: live balance changes from the broker.

use std::collections::VecDeque;
use std::sync::Arc;

use async_graphql::{Context, Subscription};
use futures_util::Stream;

use super::context::{caller, state};
use super::types::BalanceChange;
use crate::errors::{to_gql, GqlResult, ReadError, Refusal};
use crate::events::{BalanceEvent, Filter, Mark, Next, Subscription as Feed};
use crate::state::AppState;
use crate::store::read as queries;

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every committed change of a balance or of a hold, in commit order
    /// per user.
    /// `userId` omitted: users get their own; partners and admins get all.
    async fn balance_changed(
        &self,
        ctx: &Context<'_>,
        user_id: Option<i32>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<BalanceChange>>> {
        let who = caller(ctx)?;
        let scope = who.balance_feed_scope(user_id).gql()?;
        let subject = who.subject_key();
        let st = state(ctx)?.clone();
        // One user: where their history stands now, read before the
        // subscription starts, so an event of a change committed earlier
        // but announced after (the feed polls) is not sent as news.
        let (filter, start) = match scope {
            Some(id) => {
                let marks = queries::users::balance_marks(&st.store, &[id])
                    .await
                    .gql()?;
                let Some(m) = marks.first() else {
                    return Err(to_gql(ReadError::UserNotFound(id)));
                };
                let mark = Mark {
                    entry_id: m.last_entry_id,
                    hold_seq: m.hold_seq,
                };
                (Filter::User(id), Some((id, mark)))
            }
            None => (Filter::All, None),
        };
        let mut feed = st
            .broker
            .subscribe(filter, &subject)
            .map_err(|e| to_gql(Refusal::OverLimit(e.to_string())))?;
        if let Some((id, mark)) = start {
            feed.resynced(id, mark);
        }
        Ok(futures_util::stream::unfold(
            (feed, st, VecDeque::new(), false),
            |(mut feed, st, mut pending, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    if let Some(change) = pending.pop_front() {
                        return Some((Ok(change), (feed, st, pending, false)));
                    }
                    match feed.next().await {
                        Next::Event(e) => {
                            return Some((Ok(BalanceChange(e)), (feed, st, pending, false)))
                        }
                        Next::Resync(users) => match resync(&st, &mut feed, &users).await {
                            Ok(changes) => pending.extend(changes),
                            // The stream ends after this error; the client
                            // resubscribes rather than trusting a gap.
                            Err(e) => return Some((Err(e), (feed, st, pending, true))),
                        },
                    }
                }
            },
        ))
    }
}

/// Current balances for users whose events may have been missed.
async fn resync(
    st: &AppState,
    feed: &mut Feed,
    users: &[i32],
) -> async_graphql::Result<Vec<BalanceChange>> {
    let marks = queries::users::balance_marks(&st.store, users)
        .await
        .gql()?;
    Ok(marks
        .into_iter()
        .map(|m| {
            feed.resynced(
                m.user_id,
                Mark {
                    entry_id: m.last_entry_id,
                    hold_seq: m.hold_seq,
                },
            );
            BalanceChange(Arc::new(BalanceEvent {
                user_id: m.user_id,
                balance: m.balance,
                held: m.held,
                entry: None,
                hold: None,
            }))
        })
        .collect())
}
