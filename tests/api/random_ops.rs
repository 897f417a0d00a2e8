//! A seeded random walk through every money-path operation, with retries, checking the
//! books after every step. Replay a failure with `LOYALTY_TEST_SEED=<seed>`.
use loyalty::grpc::pb::loyalty::v1;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

use crate::helpers::{accrual, backdate, by_card, line, spawn_configured};

#[derive(Clone)]
enum Call {
    Accrue(v1::AccrueRequest),
    Redeem(v1::RedeemRequest),
    Hold(v1::CreateHoldRequest),
    Capture(v1::CaptureHoldRequest),
    Void(v1::VoidHoldRequest),
    Return(v1::ReturnItemsRequest),
    Adjust(v1::AdjustPointsRequest),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_keep_the_books_exact() {
    let seed: u64 = std::env::var("LOYALTY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("random_ops seed {seed} (replay with LOYALTY_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn_configured(|s| {
        s.program.pending_days = 14;
        s.program.expiry_policy = loyalty::config::ExpiryPolicyKind::MonthsAfterEarning;
        s.program.return_policy = if seed.is_multiple_of(2) {
            loyalty::domain::ReturnPolicy::Clamp
        } else {
            loyalty::domain::ReturnPolicy::AllowNegative
        };
    })
    .await;
    let cards: Vec<String> = (0..3).map(|i| format!("CARD-{i:04}")).collect();
    for card in &cards {
        app.enroll(card).await;
    }
    let mut orders: Vec<(String, Vec<(String, i64)>)> = Vec::new();
    let mut holds: Vec<String> = Vec::new();
    let mut done: Vec<(Call, Result<Vec<u8>, tonic::Code>)> = Vec::new();
    let mut points = app.points.clone();
    for step in 0..150 {
        let card = cards.choose(&mut rng).expect("card").clone();
        let id = format!("s{step}");
        let call = match rng.random_range(0..10) {
            0..=2 => {
                let lines: Vec<v1::BasketLine> = (0..rng.random_range(1..4))
                    .map(|i| {
                        line(
                            &format!("l{i}"),
                            "SKU",
                            rng.random_range(1..4),
                            rng.random_range(50..5_000),
                            0,
                        )
                    })
                    .collect();
                orders.push((
                    id.clone(),
                    lines
                        .iter()
                        .map(|l| (l.line_id.clone(), l.quantity))
                        .collect(),
                ));
                Call::Accrue(accrual(&id, &card, &id, lines))
            }
            3 => Call::Redeem(v1::RedeemRequest {
                request_id: id.clone(),
                member: Some(by_card(&card)),
                points: rng.random_range(1..200),
                order_id: orders
                    .choose(&mut rng)
                    .map(|o| o.0.clone())
                    .unwrap_or_default(),
                store_id: String::new(),
            }),
            4 => Call::Hold(v1::CreateHoldRequest {
                request_id: id.clone(),
                member: Some(by_card(&card)),
                points: rng.random_range(1..150),
                order_id: String::new(),
                store_id: String::new(),
                ttl: None,
            }),
            5 if !holds.is_empty() => {
                let hold_id = holds.choose(&mut rng).expect("hold").clone();
                if rng.random_bool(0.5) {
                    Call::Capture(v1::CaptureHoldRequest {
                        request_id: id.clone(),
                        hold_id,
                        points: rng.random_range(0..50),
                    })
                } else {
                    Call::Void(v1::VoidHoldRequest {
                        request_id: id.clone(),
                        hold_id,
                    })
                }
            }
            6 if !orders.is_empty() => {
                let (order_id, lines) = orders.choose(&mut rng).expect("order").clone();
                let (line_id, quantity) = lines.choose(&mut rng).expect("line").clone();
                Call::Return(v1::ReturnItemsRequest {
                    request_id: id.clone(),
                    order_id,
                    return_id: id.clone(),
                    lines: vec![v1::ReturnLine {
                        line_id,
                        quantity: rng.random_range(1..=quantity),
                    }],
                })
            }
            7 => Call::Adjust(v1::AdjustPointsRequest {
                request_id: id.clone(),
                member: Some(by_card(&card)),
                points: rng.random_range(-100..300),
                reason_code: v1::AdjustReason::Correction.into(),
                note: String::new(),
            }),
            8 => {
                // Time passes: some windows close and some points expire.
                backdate(
                    &app,
                    &format!(
                        "UPDATE point_lots SET available_at = earned_at WHERE id % 3 = {}",
                        step % 3
                    ),
                )
                .await;
                backdate(
                    &app,
                    &format!(
                        "UPDATE point_lots SET expires_at = earned_at WHERE id % 7 = {}",
                        step % 7
                    ),
                )
                .await;
                app.jobs
                    .run_jobs(1_000)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}, step {step}: jobs: {e}"));
                app.assert_ledger_balanced().await;
                continue;
            }
            _ => {
                // Retry an earlier call: same request, same outcome, no second effect.
                let Some((call, first)) = done.choose(&mut rng).cloned() else {
                    continue;
                };
                let again = run(&mut points, &call).await;
                if let (Ok(a), Ok(b)) = (&first, &again) {
                    assert_eq!(
                        a, b,
                        "seed {seed}, step {step}: a retry changed the response"
                    );
                }
                app.assert_ledger_balanced().await;
                continue;
            }
        };
        let outcome = run(&mut points, &call).await;
        if let (Call::Hold(_), Ok(bytes)) = (&call, &outcome) {
            let response: v1::CreateHoldResponse =
                prost::Message::decode(bytes.as_slice()).expect("decode");
            holds.push(response.hold.expect("hold").hold_id);
        }
        if let Err(code) = &outcome {
            assert!(
                matches!(
                    code,
                    tonic::Code::FailedPrecondition
                        | tonic::Code::InvalidArgument
                        | tonic::Code::AlreadyExists
                ),
                "seed {seed}, step {step}: unexpected {code:?}"
            );
        }
        done.push((call, outcome));
        let mismatches = loyalty::store::ledger::balance_mismatches(app.store.conn())
            .await
            .expect("check");
        assert!(
            mismatches.is_empty(),
            "seed {seed}, step {step}: {mismatches:?}"
        );
        for card in &cards {
            let b = app.balance(card).await;
            assert!(
                b.pending >= 0 && b.held >= 0,
                "seed {seed}, step {step}: {b:?}"
            );
            if seed.is_multiple_of(2) {
                assert!(
                    b.available >= 0,
                    "seed {seed}, step {step}: clamp policy went negative: {b:?}"
                );
            }
        }
    }
    // The walk must have done real work, not just collected refusals.
    let succeeded = done.iter().filter(|(_, outcome)| outcome.is_ok()).count();
    assert!(
        succeeded >= 40,
        "seed {seed}: only {succeeded} calls succeeded"
    );
}

/// Runs a call; the encoded response, or the status code.
async fn run(
    points: &mut v1::points_service_client::PointsServiceClient<tonic::transport::Channel>,
    call: &Call,
) -> Result<Vec<u8>, tonic::Code> {
    use prost::Message;
    let bytes = match call.clone() {
        Call::Accrue(r) => points
            .accrue(r)
            .await
            .map(|r| r.into_inner().encode_to_vec()),
        Call::Redeem(r) => points
            .redeem(r)
            .await
            .map(|r| r.into_inner().encode_to_vec()),
        Call::Hold(r) => points
            .create_hold(r)
            .await
            .map(|r| r.into_inner().encode_to_vec()),
        Call::Capture(r) => points
            .capture_hold(r)
            .await
            .map(|r| r.into_inner().encode_to_vec()),
        Call::Void(r) => points
            .void_hold(r)
            .await
            .map(|r| r.into_inner().encode_to_vec()),
        Call::Return(r) => points
            .return_items(r)
            .await
            .map(|r| r.into_inner().encode_to_vec()),
        Call::Adjust(r) => points
            .adjust_points(r)
            .await
            .map(|r| r.into_inner().encode_to_vec()),
    };
    bytes.map_err(|s| s.code())
}
