//! Argument parsing shared by the examples (kept dependency-free).

use std::collections::BTreeMap;

use client_sdk::Client;

/// `--key value` pairs from the command line.
pub struct Args(BTreeMap<String, String>);

impl Args {
    /// Read the process arguments.
    pub fn parse() -> Args {
        let mut map = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            if let Some(k) = k.strip_prefix("--") {
                map.insert(k.to_string(), it.next().unwrap_or_default());
            }
        }
        Args(map)
    }

    /// A string argument.
    pub fn get(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    /// A number argument.
    pub fn num(&self, key: &str, default: u64) -> u64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Connect with `--relay`, `--cert` and `--token` (hex, as printed by
    /// `relay mint-token`).
    pub async fn connect(&self) -> Result<Client, Box<dyn std::error::Error>> {
        let relay = self.get("relay", "127.0.0.1:4700").parse()?;
        let pem = std::fs::read_to_string(self.get("cert", "ringside-data/relay-cert.pem"))?;
        let token = net::token::from_hex(&self.get("token", ""))
            .ok_or("--token must be the hex printed by `relay mint-token`")?;
        let client = Client::builder()
            .relay(relay)
            .token(token)
            .trust_pem(&pem)?
            .connect()
            .await?;
        Ok(client)
    }
}
