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

/// libtorch's OpenMP runtime (libgomp) lets a thread that waits at a barrier spin for
/// 300,000 rounds before it sleeps, which assumes the process has its cores to itself.
/// Beside another busy process every barrier then waits for the partner thread's next
/// timeslice: `run samples/meeting.ogg --speakers auto` beside a `diarize --online` of the
/// same file took 307 s of wall time and 611 s of CPU for the pair, against 8 s for the
/// run alone. With a spin count of 2,000 the pair takes 21 s (38 s of CPU) and the run
/// alone 9.4 s instead of 8.1 s (`OMP_WAIT_POLICY=PASSIVE`: 20 s and 16.5 s). libgomp reads
/// `GOMP_SPINCOUNT` only as it loads, before `main`, so the process starts itself once
/// more with it set. `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY` in the environment win.
#[cfg(unix)]
fn limit_openmp_spinning() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GOMP_SPINCOUNT").is_some() || std::env::var_os("OMP_WAIT_POLICY").is_some()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    // exec only returns when it failed; the process then goes on as it is.
    let e = cmd
        .args(args)
        .env("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)
        .exec();
    eprintln!(
        "warning: could not restart with GOMP_SPINCOUNT={OPENMP_SPIN_COUNT} ({e}); libtorch's \
         threads spin at their default beside other busy processes"
    );
}

/// Rounds an OpenMP thread spins at a barrier before it sleeps (libgomp's own value when
/// it knows its threads outnumber the cores is 1,000).
#[cfg(unix)]
const OPENMP_SPIN_COUNT: &str = "2000";

fn main() {
    #[cfg(unix)]
    limit_openmp_spinning();
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
