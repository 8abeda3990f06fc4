//! `homing`: the Homing client.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use homing_client::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("homing: error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("homing: error: {error}");
            ExitCode::FAILURE
        }
    }
}
