//! The `hoop` binary: see `hoop --help`.

use clap::Parser;

/// mimalloc rather than glibc's malloc: a statement's records are built
/// on a session thread and freed on the audit writer's, which glibc pays
/// for in arena locks and consolidation. `pgbench -S -c 8 -M prepared`
/// with every statement recorded, A/B of this alone (2 runs each): 62.0 /
/// 60.9 -> 58.6 / 53.4 us of gateway CPU per statement; without recording
/// 4.4 -> 3.9 us of user time per statement. RSS: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = hoop_proxy::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoop: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hoop_proxy::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("hoop: {failure}");
            std::process::ExitCode::from(failure.code.max(1))
        }
    }
}
