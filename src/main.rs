//! Thin binary: parse the command line, set up logging, run the library.

use clap::Parser;

/// glibc's malloc gives each thread that allocates its own arena (up to 8 per core), and
/// a long run's stream, GStreamer and worker threads come and go (a live source
/// reconnects with new threads): memory freed in one arena is not reused by another, so a
/// process's RSS crept up for an hour (3 streams of the two-speaker call looped for
/// 60 min: 1031 -> 1124 MiB, still rising). With two arenas the same soak settles at
/// 1072-1073 MiB from minute 34 to 60 (`scripts/soak 60 DIR 3 samples/call.mp4`), at no
/// measurable CPU cost. `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() {
    limit_malloc_arenas();
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
