//! `chat-accounts`: the accounts service binary; with a sub-command, an operator tool
//! over the same store. Usage: [`chat_accounts::cli::USAGE`]; configuration:
//! [`chat_accounts::Settings`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    chat_accounts::cli::main(std::env::args().skip(1).collect()).await
}
