//! The `prefect-events-exporter` binary: parse flags into settings, set up logging and
//! signals, run a command, map the outcome to an exit code. The only place that prints
//! errors and exits.
//!
//! Writing to stderr never panics here (a closed pipe, `… 2>&1 | head -1`, must not take the
//! signal handler or any task down with it), the first SIGTERM/SIGINT starts a bounded
//! shutdown, and a second one exits at once.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use prefect_events_exporter::cli::{self, FromEnv, Invocation, LogFormat};
use prefect_events_exporter::error::Error;
use prefect_events_exporter::{fake_server, run};

/// mimalloc instead of the system allocator: the socket reader allocates every frame and the
/// pipeline task frees it, a pattern on which glibc's arenas contend on their locks and keep
/// returning and re-faulting pages (a fifth of the CPU at 200,000 events/s, by `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (cli, from_env) = match cli::parse(args.clone()) {
        Ok(parsed) => parsed,
        Err(e) => return flag_error(&e, &args),
    };
    init_logging(cli.log_format);
    let result = match cli.invocation() {
        Invocation::Replay(settings) => run::offline::replay(&settings).map(|(output, summary)| {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(output.as_bytes());
            let _ = stdout.flush();
            print_error_line(&summary);
        }),
        Invocation::Run(settings) => block_on(|shutdown| run::run(settings, shutdown)),
        Invocation::Record(settings) => {
            block_on(|shutdown| run::record::record(settings, shutdown))
        }
        Invocation::ServeReplay(settings) => block_on(|shutdown| async move {
            fake_server::run(settings, shutdown)
                .await
                .map_err(Error::from)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error_line(&error_line(&e, &from_env));
            ExitCode::from(e.exit_code())
        }
    }
}

/// How long blocking work (a state-file write, a bcrypt check) may hold up the exit after
/// the command has returned.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

/// One line on stderr, ignoring a closed or full stderr (`eprintln!` would panic).
fn print_error_line(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// Runs an async command on a multi-threaded runtime with SIGINT/SIGTERM wired to its
/// shutdown token.
fn block_on<F, Fut>(command: F) -> Result<(), Error>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        command(shutdown).await
    });
    runtime.shutdown_timeout(BLOCKING_GRACE);
    result
}

/// Cancels `shutdown` on SIGINT or SIGTERM (before logging it: nothing may stand between a
/// signal and the shutdown); a second signal exits at once.
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop the process with SIGKILL.");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    shutdown.cancel();
    tracing::info!(signal = name, "Shutting down.");
    let code = tokio::select! {
        _ = term.recv() => 128 + 15,
        _ = int.recv() => 128 + 2,
    };
    tracing::warn!("A second signal: exiting now.");
    std::process::exit(code);
}

/// A command's error as one line; a configuration error whose flag was set by an
/// environment variable names the variable too (`error: VARIABLE (--flag): ...`).
fn error_line(e: &Error, from_env: &FromEnv) -> String {
    match e {
        Error::Config { flag, message } => match from_env.variable(flag) {
            Some(variable) => format!("error: {variable} ({flag}): {message}"),
            None => format!("error: {e}"),
        },
        _ => format!("error: {e}"),
    }
}

/// Prints help/version as clap does; any other parse error as one line (clap's first
/// paragraph, joined: "required arguments were not provided: --web-tls-key <PATH>"; a bad
/// value from an environment variable names the variable), exit 2.
fn flag_error(e: &clap::Error, args: &[std::ffi::OsString]) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            print_error_line(&cli::error_line(e, args));
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A failed write to stderr is dropped: by default tracing reports it with `eprintln!`,
    // which panics on a closed pipe, in whatever task was logging.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
