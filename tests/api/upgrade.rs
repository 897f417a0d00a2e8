//! The upgrade path: a database made by the previous release, with its data
//! (`tests/fixtures/upgrade/`, made by `tests/fixtures/make-upgrade-fixture.sh`), is
//! migrated by this release's migrations at start-up and served as the release served it:
//! the same balances and statements, stored answers replayed for retried request ids, and
//! new accruals and returns (of orders stored in the old format) on top, with the books
//! agreeing throughout.
use std::collections::BTreeMap;

use loyalty::grpc::pb::loyalty::v1;
use sea_orm::{ConnectionTrait, Database};

use crate::helpers::{TestDb, accrual, by_card, line, spawn_with, test_settings};

#[derive(serde::Deserialize)]
struct Expected {
    members: BTreeMap<String, Member>,
}

#[derive(serde::Deserialize)]
struct Member {
    available: i64,
    pending: i64,
    held: i64,
    lifetime_earned: i64,
    entries: usize,
}

/// A key the previous release issued.
const OLD_KEY: &str = "lk_issued-by-the-previous-release";

#[tokio::test]
async fn a_database_of_the_previous_release_migrates_and_serves_its_data() {
    let (db, url) = TestDb::create().await;
    let dump = if url.starts_with("postgres") {
        include_str!("../fixtures/upgrade/postgres.sql")
    } else {
        include_str!("../fixtures/upgrade/sqlite.sql")
    };
    {
        let conn = Database::connect(&url).await.expect("connect");
        conn.execute_unprepared(dump)
            .await
            .expect("load the release's dump");
        // An API key the release issued (its columns: no programme yet).
        conn.execute_unprepared(&format!(
            "INSERT INTO api_clients (id, name, role, stores, key_prefix, key_hash, created_at) \
             VALUES ('old-till', 'till', 'pos', 'S1', 'lk_old', '{}', '2026-11-30 10:00:00+00:00')",
            loyalty::auth::key_hash(OLD_KEY)
        ))
        .await
        .expect("an old key");
        conn.close().await.expect("close");
    }
    let app = spawn_with(db, test_settings(&url)).await;
    // The release's key is a key of the default programme.
    let client = loyalty::store::clients::find_by_key_hash(
        app.store.conn(),
        &loyalty::auth::key_hash(OLD_KEY),
    )
    .await
    .expect("read the key")
    .expect("the key");
    assert_eq!(client.program_id, "default");
    let programs = loyalty::store::programs::list(app.store.conn())
        .await
        .expect("programmes");
    assert_eq!(programs.len(), 1);
    assert_eq!(
        (programs[0].id.as_str(), programs[0].settings.as_deref()),
        ("default", None)
    );
    let expected: Expected =
        serde_json::from_str(include_str!("../fixtures/upgrade/expected.json")).expect("json");

    for (card, want) in &expected.members {
        let balance = app.balance(card).await;
        assert_eq!(
            (
                balance.available,
                balance.pending,
                balance.held,
                balance.lifetime_earned
            ),
            (
                want.available,
                want.pending,
                want.held,
                want.lifetime_earned
            ),
            "{card}"
        );
        let statement = app
            .points
            .clone()
            .list_ledger_entries(v1::ListLedgerEntriesRequest {
                member: Some(by_card(card)),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("statement")
            .into_inner();
        assert_eq!(statement.entries.len(), want.entries, "{card}");
    }
    app.assert_ledger_balanced().await;

    // A till retrying a request the release answered gets the stored answer.
    let first = app
        .points
        .clone()
        .list_ledger_entries(v1::ListLedgerEntriesRequest {
            member: Some(by_card("UPG-0003")),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("statement")
        .into_inner()
        .entries
        .remove(0);
    let replay = app
        .points
        .clone()
        .adjust_points(v1::AdjustPointsRequest {
            request_id: "fx-goodwill-1".into(),
            member: Some(by_card("UPG-0003")),
            points: 40,
            reason_code: v1::AdjustReason::Goodwill.into(),
            note: "late delivery".into(),
        })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.transaction_id, first.transaction_id);
    assert_eq!(app.balance("UPG-0003").await.available, 40, "applied once");

    // New money on the old data: an accrual, and a return of the rest of an old order.
    app.points
        .clone()
        .accrue(accrual(
            "new-1",
            "UPG-0003",
            "N-1",
            vec![line("1", "TEA", 2, 1500, 0)],
        ))
        .await
        .expect("accrue on the migrated database");
    app.points
        .clone()
        .return_items(v1::ReturnItemsRequest {
            request_id: "new-return".into(),
            order_id: "U-3".into(),
            return_id: "R2".into(),
            lines: vec![v1::ReturnLine {
                line_id: "2".into(),
                quantity: 2,
            }],
        })
        .await
        .expect("return an order the release stored");
    app.assert_ledger_balanced().await;
}
