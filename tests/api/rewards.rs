//! The rewards catalogue: points and stock taken together, never oversold.
use loyalty::grpc::pb::loyalty::v1::{self, reward_service_client::RewardServiceClient};
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{accrual, assert_status, by_card, line, spawn_app, violated_fields};

fn reward(name: &str, cost: i64, stock: Option<i64>) -> v1::Reward {
    v1::Reward {
        name: name.into(),
        points_cost: cost,
        stock,
        active: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stocked_rewards_are_never_oversold_and_cost_points_and_stock_together() {
    let app = spawn_app().await;
    let mut rewards = RewardServiceClient::new(app.channel().await);
    let created = rewards
        .create_reward(v1::CreateRewardRequest {
            request_id: "cr-1".into(),
            reward: Some(reward("Tote bag", 100, Some(3))),
        })
        .await
        .expect("create")
        .into_inner()
        .reward
        .expect("reward");
    for i in 0..10 {
        let card = format!("CARD-{i:04}");
        app.enroll(&card).await;
        app.points
            .clone()
            .accrue(accrual(
                &format!("a-{i}"),
                &card,
                &format!("o-{i}"),
                vec![line("1", "SKU", 1, 15_000, 0)],
            ))
            .await
            .expect("fund");
    }
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let mut client = rewards.clone();
        let request = v1::RedeemRewardRequest {
            request_id: format!("rr-{i}"),
            member: Some(by_card(&format!("CARD-{i:04}"))),
            reward_id: created.reward_id.clone(),
            store_id: "store-1".into(),
        };
        // A till retries MEMBER_BUSY (ABORTED, "retry shortly") with the same request id.
        tasks.spawn(async move {
            let mut tries = 0;
            loop {
                match client.redeem_reward(request.clone()).await {
                    Err(s) if s.code() == Code::Aborted && tries < 20 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    other => return other,
                }
            }
        });
    }
    let mut codes = Vec::new();
    let mut out_of_stock = 0;
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(r) => codes.push(r.into_inner().redemption.expect("redemption").code),
            Err(status) => {
                assert_status(&status, Code::FailedPrecondition, "REWARD_OUT_OF_STOCK");
                out_of_stock += 1;
            }
        }
    }
    assert_eq!((codes.len(), out_of_stock), (3, 7));
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 3, "codes are unique");
    let left = rewards
        .get_reward(v1::GetRewardRequest {
            reward_id: created.reward_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .reward
        .expect("reward");
    assert_eq!(left.stock, Some(0));
    let mut spent = 0;
    for i in 0..10 {
        spent += 150 - app.balance(&format!("CARD-{i:04}")).await.available;
    }
    assert_eq!(spent, 300, "only the three redemptions cost points");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn short_balances_inactive_rewards_and_bad_input_change_nothing() {
    let app = spawn_app().await;
    let mut rewards = RewardServiceClient::new(app.channel().await);
    app.enroll("CARD-0001").await;
    let r = rewards
        .create_reward(v1::CreateRewardRequest {
            request_id: "cr-1".into(),
            reward: Some(reward("Espresso machine", 5_000, Some(1))),
        })
        .await
        .expect("create")
        .into_inner()
        .reward
        .expect("reward");
    let redeem = |id: &str| v1::RedeemRewardRequest {
        request_id: id.into(),
        member: Some(by_card("CARD-0001")),
        reward_id: r.reward_id.clone(),
        store_id: String::new(),
    };
    let err = rewards
        .redeem_reward(redeem("rr-1"))
        .await
        .expect_err("no points");
    assert_status(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS");
    let stock = rewards
        .get_reward(v1::GetRewardRequest {
            reward_id: r.reward_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .reward
        .expect("r")
        .stock;
    assert_eq!(stock, Some(1), "a failed redemption takes no stock");

    let updated = rewards
        .update_reward(v1::UpdateRewardRequest {
            request_id: "ur-1".into(),
            reward: Some(v1::Reward {
                reward_id: r.reward_id.clone(),
                active: false,
                points_cost: -5,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["active".into()],
            }),
        })
        .await
        .expect("deactivate")
        .into_inner()
        .reward
        .expect("reward");
    assert!(!updated.active);
    assert_eq!(
        updated.points_cost, 5_000,
        "fields outside the mask are kept"
    );
    let err = rewards
        .redeem_reward(redeem("rr-2"))
        .await
        .expect_err("inactive");
    assert_status(&err, Code::FailedPrecondition, "REWARD_NOT_AVAILABLE");

    let err = rewards
        .create_reward(v1::CreateRewardRequest {
            request_id: "cr-2".into(),
            reward: Some(reward("", 0, Some(-1))),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&err),
        vec!["reward.name", "reward.points_cost", "reward.stock"]
    );
    let err = rewards
        .get_reward(v1::GetRewardRequest {
            reward_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_status(&err, Code::NotFound, "REWARD_NOT_FOUND");
    let listed = rewards
        .list_rewards(v1::ListRewardsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.rewards.len(), 1);
}
