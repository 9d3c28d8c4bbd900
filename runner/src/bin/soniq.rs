//! The stock `soniq` command: administration, and a worker for command handlers declared in
//! TOML jobs modules (SONIQ_JOBS_MODULES).

fn main() -> std::process::ExitCode {
    soniq_runner::cli::main_with(soniq_runner::Soniq::with_settings)
}
