//! Stand-alone store server (the same as `snapshot serve`), used by the tests.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "snapshot-store",
    about = "Redis-compatible store with fork()-based snapshots"
)]
struct Cli {
    #[command(flatten)]
    serve: snapshot_store::ServeArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match snapshot_store::serve(cli.serve, None) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (the whole context chain), no backtrace noise.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
