use loyalty::grpc::pb::loyalty::v1;
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{accrual, assert_status, line, spawn_app};

#[tokio::test]
async fn a_replayed_accrual_returns_the_identical_response_and_changes_nothing() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    let request = accrual(
        "a-1",
        "CARD-0001",
        "order-1",
        vec![line("1", "SKU", 3, 333, 0)],
    );
    let first = points
        .accrue(request.clone())
        .await
        .expect("first")
        .into_inner();
    let again = points
        .accrue(request.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(app.balance("CARD-0001").await.available, 9);
    assert_eq!(app.statement("CARD-0001").await.len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_reused_key_with_a_different_request_is_already_exists() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    points
        .accrue(accrual(
            "a-1",
            "CARD-0001",
            "order-1",
            vec![line("1", "SKU", 1, 1000, 0)],
        ))
        .await
        .expect("first");
    let err = points
        .accrue(accrual(
            "a-1",
            "CARD-0001",
            "order-2",
            vec![line("1", "SKU", 1, 5000, 0)],
        ))
        .await
        .expect_err("different request, same key");
    assert_status(&err, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.balance("CARD-0001").await.available, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_copies_of_one_accrual_have_exactly_one_effect() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let request = accrual(
        "a-1",
        "CARD-0001",
        "order-1",
        vec![line("1", "SKU", 2, 1250, 0)],
    );
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let mut points = app.points.clone();
        let request = request.clone();
        tasks.spawn(async move {
            points
                .accrue(request)
                .await
                .map(tonic::Response::into_inner)
        });
    }
    let mut responses = Vec::new();
    while let Some(result) = tasks.join_next().await {
        responses.push(result.expect("task").expect("every copy succeeds"));
    }
    assert_eq!(responses.len(), 20);
    assert!(
        responses.iter().all(|r| r == &responses[0]),
        "all copies get the identical response"
    );
    assert_eq!(app.balance("CARD-0001").await.available, 25);
    assert_eq!(app.statement("CARD-0001").await.len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_copies_of_one_enrolment_create_one_member() {
    let app = spawn_app().await;
    let request = v1::EnrollMemberRequest {
        request_id: "e-1".into(),
        card_number: "CARD-0001".into(),
        name: "Ada".into(),
        ..Default::default()
    };
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let mut members = app.members.clone();
        let request = request.clone();
        tasks.spawn(async move {
            members
                .enroll_member(request)
                .await
                .map(tonic::Response::into_inner)
        });
    }
    let mut ids = Vec::new();
    while let Some(result) = tasks.join_next().await {
        ids.push(
            result
                .expect("task")
                .expect("every copy succeeds")
                .member
                .expect("member")
                .member_id,
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    let listed = app
        .members
        .clone()
        .list_members(v1::ListMembersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.members.len(), 1);
}

#[tokio::test]
async fn replayed_updates_return_the_stored_response() {
    let app = spawn_app().await;
    let member = app.enroll("CARD-0001").await;
    let mut members = app.members.clone();
    let update = |name: &str| v1::UpdateMemberRequest {
        request_id: "u-1".into(),
        member: Some(v1::Member {
            member_id: member.member_id.clone(),
            name: name.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
    };
    let first = members
        .update_member(update("First"))
        .await
        .expect("update")
        .into_inner();
    let second = members
        .update_member(update("First"))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, second);
    let err = members
        .update_member(update("Other"))
        .await
        .expect_err("reuse");
    assert_status(&err, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test]
async fn keys_are_scoped_per_method() {
    let app = spawn_app().await;
    let mut members = app.members.clone();
    members
        .enroll_member(v1::EnrollMemberRequest {
            request_id: "shared-key".into(),
            card_number: "CARD-0001".into(),
            name: "Ada".into(),
            ..Default::default()
        })
        .await
        .expect("enrol");
    app.points
        .clone()
        .accrue(accrual(
            "shared-key",
            "CARD-0001",
            "order-1",
            vec![line("1", "SKU", 1, 100, 0)],
        ))
        .await
        .expect("same key on another method is a new request");
    assert_eq!(app.balance("CARD-0001").await.available, 1);
}

/// The accrual looks its key up in the statement that finds the member: a retry still
/// gets its stored response when the card it named has since moved to another number.
#[tokio::test]
async fn an_accrual_retry_replays_even_after_the_card_number_changed() {
    let app = spawn_app().await;
    let member = app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    let request = accrual(
        "a-1",
        "CARD-0001",
        "o-1",
        vec![line("1", "SKU", 1, 5_000, 0)],
    );
    let first = points
        .accrue(request.clone())
        .await
        .expect("first")
        .into_inner();
    app.members
        .clone()
        .update_member(v1::UpdateMemberRequest {
            request_id: "u-1".into(),
            member: Some(v1::Member {
                member_id: member.member_id.clone(),
                card_number: "CARD-0002".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["card_number".into()],
            }),
        })
        .await
        .expect("new card");
    let retry = points.accrue(request).await.expect("retry").into_inner();
    assert_eq!(retry, first);
    // A new request for the old card is refused as usual.
    let err = points
        .accrue(accrual(
            "a-2",
            "CARD-0001",
            "o-2",
            vec![line("1", "SKU", 1, 5_000, 0)],
        ))
        .await
        .expect_err("old card");
    assert_status(&err, Code::NotFound, "MEMBER_NOT_FOUND");
    assert_eq!(app.balance("CARD-0002").await.available, 50);
}
