//! `smart-presence accounts ...`: create and list SIP accounts, and set a user's "share my
//! status", from the command line.
//!
//! Works on the data directory directly, through the `Accounts` handle. sled lets one
//! process open a database, so while the server runs this refuses with a clear message:
//! create accounts through the provisioning service then, or stop the server. `share-status`
//! goes through the running server's admin endpoint when one answers (`PUT
//! /accounts/{username}/settings`: his watchers are told at once), else works on the data
//! directory (no server: watchers see it in their NOTIFYs after the start). The user sets
//! it himself with `PUT /v1/account/settings` on the provisioning API. In cluster mode
//! (`[cluster]` set) it works on the cluster's accounts in Redis, nodes running or not.

use super::bindings::{api_error, encode_path_segment, Client};
use crate::accounts::{self, Accounts};
use crate::config::Config;
use crate::numbers::normalize;
use anyhow::Context;
use std::sync::Arc;

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
    /// Set a user's "share my status" (through the admin endpoint when the server runs).
    ///
    /// `on` (the default): watchers get what the user publishes (activities, notes,
    /// capabilities); `off`: they see only that he is a user. On a running server (reached
    /// at `[admin] listen`) his watchers are told at once. The user sets it himself with
    /// `PUT /v1/account/settings` on the provisioning API.
    ShareStatus {
        username: String,
        #[arg(value_parser = ["on", "off"])]
        share: String,
    },
}

pub async fn run(cmd: AccountsCommand, config: &Config) -> anyhow::Result<()> {
    if let AccountsCommand::ShareStatus { username, share } = &cmd {
        if let Some(client) = admin_client(config).await? {
            return share_remote(&client, username, share).await;
        }
    }
    let store = open(config)?;
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

/// The account store: the cluster's in Redis with `[cluster]` set (the nodes may run), else
/// the sled database of the data directory (the server must not run).
fn open(config: &Config) -> anyhow::Result<Accounts> {
    if config.cluster.enabled() {
        let redis = crate::storage::redis::Redis::connect(crate::cluster::options(&config.cluster)).context("cluster: cannot reach Redis")?;
        return Ok(Accounts::with_store(Arc::new(crate::storage::redis::RedisAccounts::open(Arc::new(redis))), &config.domain));
    }
    let dir = accounts::dir_in(&config.data_dir);
    Accounts::open(&dir, &config.domain).with_context(|| {
        format!("cannot open {} (is the server running? stop it, or use the provisioning API; share-status reaches a running server through its [admin] listen)", dir.display())
    })
}

/// The running server's admin endpoint, when one is configured and answers.
async fn admin_client(config: &Config) -> anyhow::Result<Option<Client>> {
    let Some(addr) = config.admin.listen else { return Ok(None) };
    let token = crate::admin::auth::configured_token(&config.admin)?;
    Client::connect(addr, token).await
}

/// `share-status` on the running server: stored, and his watchers told.
async fn share_remote(c: &Client, username: &str, share: &str) -> anyhow::Result<()> {
    let path = format!("/accounts/{}/settings", encode_path_segment(username));
    let body = serde_json::to_vec(&serde_json::json!({"share_status": share == "on"}))?;
    let (status, answer) = c.request("PUT", &path, Some("application/json"), Client::full(body)).await?;
    if status != 200 {
        return Err(api_error(status, &answer));
    }
    println!("{username}: share status {share} (running server: his watchers are told)");
    Ok(())
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
