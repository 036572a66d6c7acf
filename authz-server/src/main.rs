//! certbind-authz entry point: logging setup, then the command line.

use certbind_authz::cli::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(&cli.command, Command::Serve(args) if args.log_json);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    if json {
        // One JSON object per line, for a cluster's log collector (`serve --log-json`).
        builder.json().with_current_span(false).init();
    } else {
        // Colour codes only for a terminal; logs under .run/ stay plain key=value lines.
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    certbind_authz::cli::run(cli)
}
