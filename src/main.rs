fn main() -> std::process::ExitCode {
    bottle::cli::entry::main()
}
