//! Thin binary: parse the command line, set up logging, run the library.

use clap::Parser;

fn main() {
    let cli = sentistream::cli::Cli::parse();
    let default = match cli.verbose {
        0 => "sentistream=info,whisper_rs=warn",
        1 => "sentistream=debug,whisper_rs=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    whisper_rs::install_logging_hooks();
    match sentistream::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Every error's message already names its cause: print it once.
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
