//! The `homing` command line: people's interface to their home server.

/// `println!` that ends the program quietly when standard output is closed
/// (`homing inbox | head -1`) instead of panicking; other write errors end
/// it with a message and status 1.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::cli::stdout_failed(error);
        }
    }};
}

mod account;
mod context;
mod devices;
mod init;
mod messaging;
mod outbox;
mod people;
mod push;
mod receive;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use context::CliError;

use crate::network::Network;

/// End-to-end encrypted direct messages, addressed like email.
#[derive(Debug, Parser)]
#[command(name = "homing", version, about)]
pub struct Cli {
    /// The directory holding this device's keys and messages
    /// (default: $HOMING_HOME, else ~/.local/share/homing).
    #[arg(long, global = true)]
    pub home: Option<PathBuf>,
    /// Talk to the home server at this URL instead of resolving it.
    #[arg(long, global = true, env = "HOMING_SERVER_URL")]
    pub server_url: Option<String>,
    /// Reach servers over plain HTTP (local testing only).
    #[arg(long, global = true)]
    pub insecure_http: bool,
    /// Also trust the CA certificates in this PEM file, for a server whose
    /// certificate comes from a private CA (a test or company network).
    #[arg(long, global = true, env = "HOMING_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Look names up through this nameserver (IP or IP:PORT; repeat the
    /// option, or separate with commas) instead of the system's.
    #[arg(
        long = "nameserver",
        global = true,
        env = "HOMING_NAMESERVERS",
        value_delimiter = ',',
        value_parser = parse_nameserver
    )]
    pub nameservers: Vec<SocketAddr>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make keys for a new identity, register ALIAS@SERVER and sign in.
    Init {
        address: String,
        #[arg(long)]
        invite: Option<String>,
        /// A name for this device.
        #[arg(long, default_value = "first")]
        device: String,
    },
    /// Encrypt and send a message (text from --text, --file or stdin).
    Send {
        #[arg(required = true)]
        to: Vec<String>,
        #[arg(long, conflicts_with = "file")]
        text: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Fetch, verify, store and acknowledge new messages, then list them.
    Inbox {
        /// List only what arrived now.
        #[arg(long)]
        new: bool,
        /// List, without syncing, the messages refused (quarantined) or kept
        /// unread until they can be checked, with the reasons.
        #[arg(long, conflicts_with = "new")]
        quarantine: bool,
    },
    /// Stay connected and print messages as they arrive.
    Listen {
        /// Stop after this many messages (for scripts).
        #[arg(long)]
        count: Option<usize>,
    },
    /// What the home server knows of a sent message's delivery; without an
    /// id, every change to your sent messages since you last asked.
    Status {
        // Ids are base64url and may begin with '-'.
        #[arg(allow_hyphen_values = true)]
        message_id: Option<String>,
    },
    /// Take back a sent message from every mailbox that has not read it,
    /// here and on the servers it was relayed to.
    Recall {
        #[arg(allow_hyphen_values = true)]
        message_id: String,
    },
    /// Who is behind an address: server, account key, devices, pin.
    Whois { address: String },
    /// Accept a contact's new account key after it changed (a verified
    /// contact must then be verified again).
    Trust { address: String },
    /// Show the safety number of you and ADDRESS, to compare in person or
    /// on a call; both sides see the same number.
    Verify {
        address: String,
        /// Record that you compared the number with them and every digit
        /// matched.
        #[arg(long)]
        confirm: bool,
    },
    /// This account's devices.
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// Link another device to this identity.
    #[command(subcommand)]
    Link(devices::LinkCommand),
    /// Back up or restore the account key (passphrase-encrypted).
    #[command(subcommand)]
    Keys(devices::KeysCommand),
    /// What a home server offers: policy, limits, retention.
    ServerInfo { server: String },
    /// This account on its home server.
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// Wake-ups through a push service while this device is not connected.
    #[command(subcommand)]
    Push(push::PushCommand),
}

/// Runs the command; errors come back for the binary to print.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let network = Network::new(cli.ca_file.as_deref(), &cli.nameservers)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let options = context::Options {
        home: cli.home,
        server_url: cli.server_url,
        insecure_http: cli.insecure_http,
        network,
        json: cli.json,
    };
    match cli.command {
        Command::Init {
            address,
            invite,
            device,
        } => init::init(&options, &address, invite.as_deref(), &device).await,
        Command::Send { to, text, file } => messaging::send(&options, &to, text, file).await,
        Command::Inbox {
            quarantine: true, ..
        } => receive::list_kept(&options),
        Command::Inbox { new, .. } => receive::inbox(&options, new).await,
        Command::Listen { count } => receive::listen(&options, count).await,
        Command::Status {
            message_id: Some(message_id),
        } => messaging::status(&options, &message_id).await,
        Command::Status { message_id: None } => messaging::changes(&options).await,
        Command::Recall { message_id } => messaging::recall(&options, &message_id).await,
        Command::Whois { address } => people::whois(&options, &address).await,
        Command::Trust { address } => people::trust(&options, &address).await,
        Command::Verify { address, confirm } => verify::verify(&options, &address, confirm).await,
        Command::Devices(command) => devices::devices(&options, command).await,
        Command::Link(command) => devices::link(&options, command).await,
        Command::Keys(command) => devices::keys(&options, command).await,
        Command::ServerInfo { server } => people::server_info(&options, &server).await,
        Command::Account(command) => account::account(&options, command).await,
        Command::Push(command) => push::push(&options, command).await,
    }
}

/// `IP:PORT`, or an IP alone for port 53.
fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("`{text}` is not IP or IP:PORT"))
}

/// Standard output failed: a closed pipe is the reader's choice, not an
/// error. Nothing is lost by stopping: received messages are stored on the
/// device before they are acknowledged or printed.
pub(crate) fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("homing: error: cannot write output: {error}");
    std::process::exit(1);
}
