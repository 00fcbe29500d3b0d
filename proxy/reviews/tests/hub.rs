//! The hub on the in-memory store: every scenario of `common::scenarios`.

mod common;

use common::scenarios::{self, Memory};

macro_rules! memory_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            scenarios::$name(&Memory).await;
        }
    )*};
}

memory_tests!(
    approve_wakes_the_ticket,
    deny_reaches_the_ticket,
    modify_runs_the_replacement,
    blocked_modification_keeps_the_review_pending,
    expiry_ends_the_wait,
    dropping_the_ticket_withdraws,
    cancelled_wait_keeps_the_review,
    explicit_withdraw,
    requester_and_outsiders_cannot_decide,
    min_approvals_need_distinct_reviewers,
    grants_cover_the_same_statement_until_they_expire,
    grants_can_be_disabled,
    audit_failure_fails_closed,
    list_filters_by_status,
);
