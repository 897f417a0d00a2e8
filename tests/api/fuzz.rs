//! Boundary values for every field of every method, read from the served descriptors:
//! each request sets one field (top level, or one level down) to an edge of its type —
//! the largest and smallest integers, unknown enum numbers, NUL, empty and long text.
//! No call may answer INTERNAL or UNKNOWN or take 5 s, a refused call leaves the books
//! as they were, and every mutation, refused or not, leaves exactly one audit record.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use loyalty::grpc::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::{DescriptorProto, FieldDescriptorProto, field_descriptor_proto::Type};
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;

use crate::{
    faults::call_raw,
    helpers::{TestApp, all_methods, spawn_configured},
};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(number: i32, wire: u64, out: &mut Vec<u8>) {
    varint(((number as u64) << 3) | wire, out);
}

fn delimited(number: i32, bytes: &[u8], out: &mut Vec<u8>) {
    tag(number, 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Edge values of one field, each as the bytes of that field alone.
fn edges(field: &FieldDescriptorProto) -> Vec<(String, Vec<u8>)> {
    let n = field.number();
    let mut out = Vec::new();
    match field.r#type() {
        Type::Int64 | Type::Int32 | Type::Uint64 | Type::Uint32 | Type::Enum | Type::Bool => {
            for v in [i64::MAX, i64::MIN, -1, 0, i64::from(i32::MAX), 999] {
                let mut b = Vec::new();
                tag(n, 0, &mut b);
                varint(v as u64, &mut b);
                out.push((format!("{v}"), b));
            }
        }
        Type::String => {
            for (what, text) in [
                ("empty", String::new()),
                ("NUL", "a\0b".to_owned()),
                ("only NUL", "\0".to_owned()),
                ("control", "\u{7}\u{1b}[2J".to_owned()),
                ("long", "x".repeat(5_000)),
                ("multi-byte", "é😀".repeat(100)),
            ] {
                let mut b = Vec::new();
                delimited(n, text.as_bytes(), &mut b);
                out.push((what.to_owned(), b));
            }
        }
        Type::Double | Type::Fixed64 | Type::Sfixed64 => {
            let mut b = Vec::new();
            tag(n, 1, &mut b);
            b.extend_from_slice(&f64::NAN.to_le_bytes());
            out.push(("NaN".to_owned(), b));
        }
        _ => {}
    }
    out
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let row = app
        .store
        .conn()
        .query_one_raw(Statement::from_string(app.store.backend(), sql))
        .await
        .expect("count")
        .expect("row");
    row.try_get("", "n").expect("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_values_in_every_field_are_refused_clearly_and_leave_the_books_alone() {
    let app = spawn_configured(|_| {}).await;
    app.enroll("FUZZ-1").await;
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut messages: HashMap<String, DescriptorProto> = HashMap::new();
    let mut inputs: HashMap<String, String> = HashMap::new();
    for file in &fds.file {
        for m in &file.message_type {
            messages.insert(format!(".{}.{}", file.package(), m.name()), m.clone());
        }
        for s in &file.service {
            for method in &s.method {
                inputs.insert(
                    format!("/{}.{}/{}", file.package(), s.name(), method.name()),
                    method.input_type().to_owned(),
                );
            }
        }
    }
    let entries_sql = "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ledger_entries";
    let audit_sql = "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_events";
    let mut calls = 0;
    for method in all_methods() {
        let input = &messages[&inputs[&method]];
        // Each field alone, and each field of a message field inside it.
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for field in &input.field {
            for (what, bytes) in edges(field) {
                cases.push((format!("{}={what}", field.name()), bytes));
            }
            if field.r#type() == Type::Message
                && let Some(inner) = messages.get(field.type_name())
            {
                for sub in &inner.field {
                    for (what, bytes) in edges(sub) {
                        let mut b = Vec::new();
                        delimited(field.number(), &bytes, &mut b);
                        cases.push((format!("{}.{}={what}", field.name(), sub.name()), b));
                    }
                }
            }
        }
        let mutation = loyalty::auth::is_mutation(&method);
        for (what, bytes) in cases {
            calls += 1;
            let entries = count(&app, entries_sql).await;
            let audits = count(&app, audit_sql).await;
            let started = Instant::now();
            let result = call_raw(&app, &method, bytes).await;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{method} {what}: {:?}",
                started.elapsed()
            );
            // NUL and control characters are refused alike on both backends (PostgreSQL
            // stores no NUL; SQLite would).
            if what.ends_with("=NUL") || what.ends_with("=only NUL") || what.ends_with("=control") {
                assert!(result.is_err(), "{method} {what} was accepted");
            }
            if let Err(err) = &result {
                assert!(
                    !matches!(err.code(), Code::Internal | Code::Unknown),
                    "{method} {what}: {err:?}"
                );
                assert_eq!(
                    count(&app, entries_sql).await,
                    entries,
                    "{method} {what}: a refused call changed the books"
                );
            }
            if mutation {
                assert_eq!(
                    count(&app, audit_sql).await,
                    audits + 1,
                    "{method} {what}: not audited exactly once ({result:?})"
                );
            }
        }
    }
    assert!(calls > 1000, "only {calls} calls");
    app.assert_ledger_balanced().await;
}
