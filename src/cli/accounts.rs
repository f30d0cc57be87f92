//! `smart-presence accounts ...`: create and list SIP accounts, and set a user's "share my
//! status", from the command line.
//!
//! Works on the data directory directly, through the `Accounts` handle. sled lets one
//! process open a database, so while the server runs this refuses with a clear message:
//! create accounts through the provisioning service then, or stop the server. "Share my
//! status" is the user's own on a running server (`PUT /v1/account/settings`); this command
//! cannot tell his watchers (no server here), which see it at their next NOTIFY about him.

use crate::accounts::{self, Accounts};
use crate::config::Config;
use crate::numbers::normalize;
use anyhow::Context;

#[derive(clap::Subcommand, Debug)]
pub enum AccountsCommand {
    /// Create an account: username, password, and the phone numbers it owns.
    Add {
        username: String,
        /// The password (give "-" to generate one, printed once).
        password: String,
        /// Its verified numbers: +E.164, or national with numbers.default_region.
        numbers: Vec<String>,
    },
    /// List accounts with their numbers.
    List,
    /// Set a user's "share my status", only while the server is stopped.
    ///
    /// `on` (the default): watchers get what the user publishes (activities, notes,
    /// capabilities); `off`: they see only that he is a user. On a running server the user
    /// sets it himself with `PUT /v1/account/settings` on the provisioning API, and his
    /// watchers are told at once.
    ShareStatus {
        username: String,
        #[arg(value_parser = ["on", "off"])]
        share: String,
    },
}

pub fn run(cmd: AccountsCommand, config: &Config) -> anyhow::Result<()> {
    let dir = accounts::dir_in(&config.data_dir);
    let store = Accounts::open(&dir, &config.domain).with_context(|| {
        format!("cannot open {} (is the server running? stop it, or use the provisioning API: share-status is PUT /v1/account/settings)", dir.display())
    })?;
    match cmd {
        AccountsCommand::Add { username, password, numbers } => add(&store, config, &username, &password, &numbers),
        AccountsCommand::ShareStatus { username, share } => {
            store.set_share_status(&username, share == "on")?;
            println!("{username}: share status {share}");
            Ok(())
        }
        AccountsCommand::List => {
            for a in store.list()? {
                let nums: Vec<String> = a.numbers.iter().map(|n| n.to_string()).collect();
                println!("{}\t{}", a.sip_uri(), nums.join(","));
            }
            Ok(())
        }
    }
}

fn add(store: &Accounts, config: &Config, username: &str, password: &str, numbers: &[String]) -> anyhow::Result<()> {
    let region = config.numbers.default_region;
    let parsed = numbers
        .iter()
        .map(|n| normalize(n, region).with_context(|| format!("bad number {n:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let generated = (password == "-").then(accounts::random_password);
    let password = generated.as_deref().unwrap_or(password);
    let account = store.create(username, password, &parsed)?;
    println!("created {}", account.sip_uri());
    if let Some(p) = generated {
        println!("password: {p}");
    }
    Ok(())
}
