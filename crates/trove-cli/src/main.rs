//! `trove`: runs nodes (`server`), a local development cluster (`dev`), and the client
//! commands for records, buckets, objects, the cluster and backups.
//!
//! Exit status: 0 success; 1 the operation failed (`error: <message>` on stderr); 2 usage
//! error (clap's, or a bad `--config` file / `--endpoints` value).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod args;
mod backup;
mod bench;
mod chaos;
mod cluster;
mod dev;
mod health;
mod objects;
mod output;
mod records;
mod scrub;
mod server;
mod signals;
mod upgrade;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use trove_client::{Client, ClientConfig};

use args::{Cli, Command, GlobalArgs, LogFormat, OutputFormat};

/// What the client commands share.
pub struct Ctx {
    pub client: Client,
    pub format: OutputFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(a) => server::run(a).await,
        Command::Dev(a) => {
            init_logging("warn", LogFormat::Text);
            dev::run(a, &cli.global).await
        }
        Command::Record(c) => records::run(&client_ctx(&cli.global), c).await,
        Command::Bucket(c) => objects::run_bucket(&client_ctx(&cli.global), c).await,
        Command::Object(c) => objects::run_object(&client_ctx(&cli.global), c).await,
        Command::Cluster(c) => cluster::run(&client_ctx(&cli.global), c).await,
        Command::Backup(c) => backup::run(&cli.global, c).await,
        Command::Health(a) => {
            init_logging("warn", LogFormat::Text);
            // A healthcheck must answer quickly: at most 5 s unless --timeout is lower.
            health::run(a, cli.global.timeout.min(std::time::Duration::from_secs(5))).await
        }
        Command::Config(args::ConfigCmd::Print(a)) => server::print_config(a),
        Command::Bench(a) => {
            init_logging("warn", LogFormat::Text);
            bench::run(&cli.global, a).await
        }
        Command::Chaos(a) => {
            init_logging("warn,trove_testkit=info", LogFormat::Text);
            match chaos::run(a).await? {
                0 => Ok(()),
                code => std::process::exit(i32::from(code)),
            }
        }
    }
}

/// The SDK client for the global flags; an invalid endpoint is a usage error (exit 2).
fn client_ctx(g: &GlobalArgs) -> Ctx {
    init_logging("warn", LogFormat::Text);
    let mut cfg = ClientConfig::new(g.endpoints.iter().cloned());
    cfg.request_timeout = g.timeout;
    cfg.retry_budget = g.retry_budget;
    let client = Client::new(cfg).unwrap_or_else(|e| {
        Cli::command()
            .error(ErrorKind::ValueValidation, format!("--endpoints: {e}"))
            .exit()
    });
    Ctx {
        client,
        format: g.output,
    }
}

/// Logs to stderr; the level comes from `RUST_LOG` (else `default_level`).
pub fn init_logging(default_level: &str, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| tracing_subscriber::EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| default_level.to_string());
    let _ = init_logging_filter(&filter, format);
}

/// Logs to stderr what `filter` (RUST_LOG syntax) selects, as text or JSON lines, and
/// keeps recent warnings and errors for the admin status page. Errs on a bad filter.
pub fn init_logging_filter(filter: &str, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    // Colour only for a person at a terminal, never in a log file.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    // Errors only if a subscriber is already set, which then stays in charge.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            trove_server::telemetry::RecentErrorsLayer
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .try_init();
    Ok(())
}
