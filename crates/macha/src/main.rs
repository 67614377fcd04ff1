//! The `macha` multicall binary: `macha <command>`, or `macha-check`, `macha-approve`, … by link name.

fn main() -> std::process::ExitCode {
    macha::cli::main()
}
