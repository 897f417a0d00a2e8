//! The `loyalty` binary: parse the command line, load settings, and hand over to the library.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use loyalty::{config::Settings, startup::Application, store::Store, telemetry};

#[derive(Parser)]
#[command(name = "loyalty", version, about = "Loyalty-programme service (gRPC)")]
struct Cli {
    /// Optional TOML settings file; `LOYALTY__SECTION__KEY` variables override it.
    #[arg(long, short, env = "LOYALTY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check that every member's stored balances equal their ledger, lots and holds.
    CheckLedger,
    /// Manage API clients and their keys.
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Run the background jobs once (expire points and holds, release pending points);
    /// for a cron job when `jobs.interval_secs` is 0.
    ExpirePoints,
}

#[derive(Subcommand)]
enum ClientsAction {
    /// Create a client and print its API key (shown this once; only its hash is kept).
    Create {
        #[arg(long)]
        name: String,
        /// pos, ecommerce, crm, admin or platform (an administrator of every programme).
        #[arg(long)]
        role: String,
        /// A store a POS client may act for; repeat for several.
        #[arg(long = "store")]
        stores: Vec<String>,
        /// The programme the client belongs to and acts in.
        #[arg(long, default_value = "default")]
        program: String,
    },
    /// List clients (never their keys).
    List,
    /// Revoke a client's key.
    Revoke { client_id: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loyalty: {e}");
            return ExitCode::from(2);
        }
    };
    // Kept until the end of main: dropping it flushes the trace exporter.
    let command = cli.command.unwrap_or(Command::Serve);
    let to_stderr = !matches!(command, Command::Serve);
    let _telemetry = match telemetry::init(&settings.log, &settings.telemetry, to_stderr) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("loyalty: {e}");
            return ExitCode::from(2);
        }
    };
    match run(command, settings).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "loyalty failed");
            eprintln!("loyalty: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(loyalty::startup::shutdown_signal())
                .await?;
        }
        Command::Migrate => {
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
        }
        Command::Clients { action } => {
            let store = Store::connect(&settings.database).await?;
            if settings.database.migrate_on_start {
                store.migrate().await?;
            }
            return loyalty::admin::clients(&store, action.into()).await;
        }
        Command::ExpirePoints => {
            let store = Store::connect(&settings.database).await?;
            for (program, report) in loyalty::startup::run_jobs_once(&store, &settings).await? {
                println!("{program}: {report:?}");
            }
        }
        Command::CheckLedger => {
            let store = Store::connect(&settings.database).await?;
            let mismatches = loyalty::store::ledger::balance_mismatches(store.conn()).await?;
            if mismatches.is_empty() {
                println!("ledger and balances agree");
            } else {
                for m in &mismatches {
                    println!(
                        "{}: {} (stored {}, derived {})",
                        m.member_id, m.check, m.stored, m.derived
                    );
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl From<ClientsAction> for loyalty::admin::ClientsAction {
    fn from(a: ClientsAction) -> Self {
        match a {
            ClientsAction::Create {
                name,
                role,
                stores,
                program,
            } => Self::Create {
                name,
                role,
                stores,
                program,
            },
            ClientsAction::List => Self::List,
            ClientsAction::Revoke { client_id } => Self::Revoke { client_id },
        }
    }
}
