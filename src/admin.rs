//! Operator commands that are not gRPC calls: managing API clients. Every action is
//! written to the audit log.
use std::process::ExitCode;

use crate::{
    auth::{self, Role},
    domain::ProgramId,
    store::{
        Store,
        clients::{self, ClientRow, NewAudit},
        programs,
    },
};

pub enum ClientsAction {
    Create {
        name: String,
        role: String,
        stores: Vec<String>,
        /// The programme the client belongs to.
        program: String,
    },
    List,
    Revoke {
        client_id: String,
    },
}

async fn audit(
    store: &Store,
    program: &str,
    method: &str,
    target: &str,
    outcome: &str,
) -> anyhow::Result<()> {
    clients::audit(
        store.conn(),
        NewAudit {
            at: crate::store::wall_now(),
            program_id: program.into(),
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
        ClientsAction::Create {
            name,
            role,
            stores,
            program,
        } => {
            let Some(role) = Role::parse(&role) else {
                anyhow::bail!("--role must be pos, ecommerce, crm, admin or platform");
            };
            let program =
                ProgramId::parse(&program).map_err(|e| anyhow::anyhow!("--program {e}"))?;
            if programs::find(store.conn(), program.as_str())
                .await?
                .is_none()
            {
                anyhow::bail!(
                    "no programme {program}: create it first (ProgramService.CreateProgram)"
                );
            }
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
                    program_id: program.as_str().to_owned(),
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
            audit(store, program.as_str(), "clients create", &id, "Ok").await?;
            println!("client_id: {id}");
            println!("program: {program}");
            println!("api_key: {key}");
            eprintln!("Store the key now: it is not shown again and only its hash is kept.");
        }
        ClientsAction::List => {
            for c in clients::list(store.conn()).await? {
                println!(
                    "{}\t{}\t{}\tprogram={}\tstores={}\tkey={}…\t{}",
                    c.id,
                    c.name,
                    c.role,
                    c.program_id,
                    c.stores,
                    c.key_prefix,
                    c.revoked_at
                        .map_or("active".to_owned(), |at| format!("revoked {at}"))
                );
            }
            audit(store, ProgramId::DEFAULT, "clients list", "", "Ok").await?;
        }
        ClientsAction::Revoke { client_id } => {
            let done = clients::revoke(store.conn(), &client_id, crate::store::wall_now()).await?;
            audit(
                store,
                ProgramId::DEFAULT,
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
