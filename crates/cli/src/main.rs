//! The `gn-transpile` command.

fn main() -> std::process::ExitCode {
    gn_transpile_cli::main(std::env::args_os())
}
