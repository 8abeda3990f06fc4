//! `homing push`: this device's Web Push subscription, for people who wire
//! Homing to a UnifiedPush distributor (ntfy, say) or another push service.

use clap::Subcommand;
use serde_json::Value;

use super::context::{output, CliError, Context, Options};
use crate::push::{PushKeys, PushSubscription};

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Have the home server wake this device through a push service while
    /// it is not connected (the endpoint and keys come from the
    /// distributor: RFC 8291's `p256dh` and `auth`, base64url).
    Set {
        endpoint: String,
        // base64url values may begin with '-'.
        #[arg(long, allow_hyphen_values = true)]
        p256dh: String,
        #[arg(long, allow_hyphen_values = true)]
        auth: String,
    },
    /// Show the subscription the server holds for this device.
    Show,
    /// Stop wake-ups for this device.
    Clear,
}

pub async fn push(options: &Options, command: PushCommand) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let device_id = context.device.device_id.as_str().to_string();
    match command {
        PushCommand::Set {
            endpoint,
            p256dh,
            auth,
        } => {
            let subscription = PushSubscription {
                endpoint: endpoint.clone(),
                keys: PushKeys { p256dh, auth },
            };
            context.server.set_push(&device_id, &subscription).await?;
            output(options, &serde_json::json!({"endpoint": endpoint}), || {
                out!("this device is woken through {endpoint}")
            });
        }
        PushCommand::Show => {
            let info: Value = context.server.push_subscription(&device_id).await?;
            output(options, &info, || {
                out!("endpoint: {}", info["endpoint"].as_str().unwrap_or("?"));
                match info["last_push_at"].as_i64() {
                    Some(at) => out!("last wake-up accepted at {at} (ms since 1970)"),
                    None => out!("no wake-up sent yet"),
                }
            });
        }
        PushCommand::Clear => {
            context.server.clear_push(&device_id).await?;
            output(options, &Value::Null, || {
                out!("wake-ups for this device are off")
            });
        }
    }
    Ok(())
}
