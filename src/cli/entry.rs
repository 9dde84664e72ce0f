//! The process: parse the command line, set up logging (colour only on a terminal) and the
//! async runtime, run the command and map its outcome to an exit code. It lives in the library,
//! not in `main.rs`: the runtime's instantiations over the whole command tree are then compiled
//! with the library, and the binary's own compile takes a second instead of a minute (measured
//! with `cargo build --release --timings`; the library's grows by about as much, so a whole
//! build is no faster).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use super::{Cli, Command, Outcome, is_broken_pipe, run};

/// `bottle`'s `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // As diff(1): 0 the same, 1 different, 2 trouble.
    let failure = if matches!(cli.command, Command::Diff { .. }) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    };
    // Colour only on a terminal, and never under NO_COLOR (https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let level = match (cli.global.quiet, cli.global.verbose) {
        (q, _) if q > 0 => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOTTLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("bottle={level}"))),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .without_time()
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return failure;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Damaged) => ExitCode::from(3),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Ok(Outcome::Exit(code)) => ExitCode::from(code),
        // A closed stdout (`bottle ls | head -1`) is a quiet success.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            failure
        }
    }
}
