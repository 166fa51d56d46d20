use std::process::ExitCode;

fn main() -> ExitCode {
    faultline::cli::main()
}
