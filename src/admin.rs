//! Operator commands that are not gRPC calls: managing API clients. Every action is
//! written to the audit log.
use std::process::ExitCode;

use crate::{
    auth::{self, Role},
    store::{
        Store,
        clients::{self, ClientRow, NewAudit},
    },
};

pub enum ClientsAction {
    Create {
        name: String,
        role: String,
        stores: Vec<String>,
    },
    List,
    Revoke {
        client_id: String,
    },
}

async fn audit(store: &Store, method: &str, target: &str, outcome: &str) -> anyhow::Result<()> {
    clients::audit(
        store.conn(),
        NewAudit {
            at: crate::store::wall_now(),
            client_id: "cli".into(),
            client_name: "loyalty clients".into(),
            role: "admin".into(),
            method: method.into(),
            target: target.into(),
            outcome: outcome.into(),
            request_id: String::new(),
        },
    )
    .await?;
    Ok(())
}

/// Runs a `loyalty clients …` command; prints to stdout.
pub async fn clients(store: &Store, action: ClientsAction) -> anyhow::Result<ExitCode> {
    match action {
        ClientsAction::Create { name, role, stores } => {
            let Some(role) = Role::parse(&role) else {
                anyhow::bail!("--role must be pos, ecommerce, crm or admin");
            };
            if name.trim().is_empty() || name.len() > 100 {
                anyhow::bail!("--name must be 1 to 100 characters");
            }
            if role == Role::Pos && stores.is_empty() {
                anyhow::bail!("a pos client needs at least one --store");
            }
            if stores
                .iter()
                .any(|s| s.is_empty() || s.contains(',') || s.len() > 64)
            {
                anyhow::bail!("--store values must be 1 to 64 characters without commas");
            }
            let key = auth::new_key();
            let id = uuid::Uuid::now_v7().to_string();
            clients::insert(
                store.conn(),
                ClientRow {
                    id: id.clone(),
                    name: name.trim().to_owned(),
                    role: role.as_str().to_owned(),
                    stores: stores.join(","),
                    key_prefix: auth::key_prefix(&key),
                    key_hash: auth::key_hash(&key),
                    created_at: crate::store::wall_now(),
                    revoked_at: None,
                },
            )
            .await?;
            audit(store, "clients create", &id, "Ok").await?;
            println!("client_id: {id}");
            println!("api_key: {key}");
            eprintln!("Store the key now: it is not shown again and only its hash is kept.");
        }
        ClientsAction::List => {
            for c in clients::list(store.conn()).await? {
                println!(
                    "{}\t{}\t{}\tstores={}\tkey={}…\t{}",
                    c.id,
                    c.name,
                    c.role,
                    c.stores,
                    c.key_prefix,
                    c.revoked_at
                        .map_or("active".to_owned(), |at| format!("revoked {at}"))
                );
            }
            audit(store, "clients list", "", "Ok").await?;
        }
        ClientsAction::Revoke { client_id } => {
            let done = clients::revoke(store.conn(), &client_id, crate::store::wall_now()).await?;
            audit(
                store,
                "clients revoke",
                &client_id,
                if done { "Ok" } else { "NotFound" },
            )
            .await?;
            if !done {
                eprintln!("no active client {client_id}");
                return Ok(ExitCode::FAILURE);
            }
            println!("revoked {client_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
