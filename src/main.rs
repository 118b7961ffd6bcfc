fn main() -> std::process::ExitCode {
    agentenv::cli::main()
}
