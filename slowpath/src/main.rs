//! `tasd`: command-line entry point. See the library crate for the parts.
use clap::Parser;

fn main() {
    let cli = tasd::config::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TAS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match tasd::config::Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tasd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = tasd::daemon::run(cfg) {
        eprintln!("tasd: {e}");
        std::process::exit(1);
    }
}
