//! The `wattflow` command: a thin wrapper over [`wattflow_pipelines::cli`].

fn main() -> std::process::ExitCode {
    wattflow_pipelines::cli::main()
}
