//! Sending and receiving with the Homing client library, without the CLI.
//!
//! Start a server (`cargo run --bin homingd`), then:
//!
//! ```sh
//! cargo run --example send_receive -- http://127.0.0.1:8008
//! ```
//!
//! It registers two fresh identities, seals a message from the first to the
//! second, and has the second fetch, open, verify and acknowledge it.

use homing::crypto::envelope::{self, Plaintext};
use homing::crypto::identity::DeviceId;
use homing::crypto::{b64, PublicKey};
use homing::mailbox::{DeliveryMode, DeviceWrap, RecipientWraps, SendRequest};
use homing_client::api::HomeServer;
use homing_client::keys::{AccountKeys, DeviceKeys};

struct Person {
    address: String,
    device: DeviceKeys,
    server: HomeServer,
}

async fn register(url: &str, server_name: &str, alias: &str) -> anyhow::Result<Person> {
    let account = AccountKeys::generate();
    let device = DeviceKeys::generate(DeviceId::parse("example")?);
    let plain = HomeServer::new(url);
    plain
        .register(&account.registration(alias, server_name, &device, None)?)
        .await?;
    let (token, _) = plain
        .sign_in(server_name, &account.public(), &device)
        .await?;
    Ok(Person {
        address: format!("{alias}@{server_name}"),
        device,
        server: HomeServer::new(url).with_token(&token),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8008".into());
    let info = HomeServer::new(&url).server_info().await?;
    let server_name = info["server_name"]
        .as_str()
        .unwrap_or("localhost:8008")
        .to_string();
    let suffix: u32 = rand::random();
    let alice = register(&url, &server_name, &format!("alice{suffix}")).await?;
    let bob = register(&url, &server_name, &format!("bob{suffix}")).await?;

    // Alice looks Bob up through her own server and verifies his device list.
    let document = alice.server.directory(&bob.address).await?;
    let bob_key = PublicKey::parse(document["account_key"].as_str().unwrap_or_default())?;
    let list: homing::crypto::identity::SignedDeviceList =
        serde_json::from_value(document["signed_device_list"].clone())?;
    list.verify(&bob_key)?;

    let plaintext = Plaintext {
        from: alice.address.clone(),
        from_device: alice.device.device_id.clone(),
        to: vec![bob.address.clone()],
        sent_at: homing::time::now_ms(),
        thread: None,
        content_type: "text/plain".into(),
        content: b"Hello from the library".to_vec(),
    };
    let box_keys: Vec<_> = list.device_list.devices.iter().map(|d| d.box_key).collect();
    let sealed = envelope::seal(&plaintext, &alice.device.signing, &box_keys)?;
    let request = SendRequest {
        message_id: b64(&rand::random::<[u8; 18]>()),
        body: b64(&sealed.body),
        delivery: DeliveryMode::All,
        recipients: vec![RecipientWraps {
            address: bob.address.clone(),
            devices: list
                .device_list
                .devices
                .iter()
                .zip(&sealed.wraps)
                .map(|(device, (_, wrap))| DeviceWrap {
                    device_id: device.device_id.to_string(),
                    key_wrap: b64(wrap),
                })
                .collect(),
        }],
    };
    let answer = alice.server.send(&request).await?;
    println!("sent {} → {:?}", answer.message_id, answer.recipients);

    // Bob syncs, opens, verifies against Alice's device list, and acks.
    let page = bob.server.sync(0, 10).await?;
    for item in &page.items {
        let wrap = base64_decode(&item.key_wrap)?;
        let key = envelope::unwrap_key(&wrap, &bob.device.box_secret)?;
        let signed = envelope::open(&base64_decode(&item.body)?, &key)?;
        let (from, from_device) = signed.claimed_sender();
        let sender = bob.server.directory(from).await?;
        let sender_key = PublicKey::parse(sender["account_key"].as_str().unwrap_or_default())?;
        let sender_list: homing::crypto::identity::SignedDeviceList =
            serde_json::from_value(sender["signed_device_list"].clone())?;
        sender_list.verify(&sender_key)?;
        let device = sender_list
            .device_list
            .device(from_device)
            .ok_or_else(|| anyhow::anyhow!("unknown sender device"))?;
        let opened = signed.verify(&device.sign_key)?;
        println!(
            "{} received from {}: {}",
            bob.address,
            opened.from,
            String::from_utf8_lossy(&opened.content)
        );
    }
    let ids: Vec<String> = page.items.iter().map(|i| i.message_id.clone()).collect();
    bob.server.ack(&ids).await?;
    Ok(())
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text)?)
}
