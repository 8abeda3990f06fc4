//! Loading and validating settings.
use super::*;

fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(
        None,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn defaults_are_valid_and_use_sqlite_under_data_dir() {
    let settings = load(&[]).unwrap();
    assert_eq!(
        settings.database.url,
        DatabaseUrl::Sqlite(PathBuf::from("./data/homing.db"))
    );
    assert_eq!(settings.registration_policy, RegistrationPolicy::Open);
    assert!(!settings.federation.allow_insecure_http);
    assert!(!settings.federation.allow_private_addresses);
}

#[test]
fn environment_overrides_and_lists_parse() {
    let settings = load(&[
        ("HOMING__SERVER__NAME", "Example.org:8448"),
        ("HOMING__FEDERATION__ALLOW_INSECURE_HTTP", "true"),
        ("HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "true"),
        ("HOMING__FEDERATION__NAMESERVERS", "127.0.0.1:5353,10.0.0.1"),
        ("HOMING__FEDERATION__DENY", "evil.example,worse.example"),
        ("HOMING__DATABASE__URL", "postgres://u:p@127.0.0.1/homing"),
    ])
    .unwrap();
    assert_eq!(settings.server_name.as_str(), "example.org:8448");
    assert!(settings.federation.allow_insecure_http);
    assert!(settings.federation.allow_private_addresses);
    assert_eq!(settings.federation.nameservers.len(), 2);
    assert_eq!(settings.federation.nameservers[1].port(), 53);
    assert_eq!(settings.federation.deny.len(), 2);
    assert!(matches!(settings.database.url, DatabaseUrl::Postgres(_)));
}

#[test]
fn errors_name_the_key_and_value() {
    let cases = [
        ("HOMING__SERVER__BIND", "nowhere", "server.bind"),
        (
            "HOMING__RETENTION__MAX_KEEP",
            "forever",
            "retention.max_keep",
        ),
        (
            "HOMING__DATABASE__SQLITE_SYNCHRONOUS",
            "off",
            "database.sqlite_synchronous",
        ),
        (
            "HOMING__FEDERATION__NAMESERVERS",
            "dns.example",
            "federation.nameservers",
        ),
        (
            "HOMING__LIMITS__MAX_REQUEST_BYTES",
            "10",
            "limits.max_request_bytes",
        ),
    ];
    for (key, value, named) in cases {
        let error = load(&[(key, value)]).unwrap_err().to_string();
        assert!(error.contains(named), "{error}");
        assert!(error.contains(value), "{error}");
    }
}

#[test]
fn database_passwords_are_redacted() {
    assert_eq!(
        redact_url("postgres://homing:s3cret@db:5432/homing"),
        "postgres://homing:***@db:5432/homing"
    );
    assert_eq!(redact_url("postgres://db/homing"), "postgres://db/homing");
    assert_eq!(
        redact_url("postgres://homing@db/homing?sslmode=require&password=s3cret"),
        "postgres://homing@db/homing?sslmode=require&password=***"
    );
    assert_eq!(
        redact_url("postgres://u:p@db/x?sslpassword=k"),
        "postgres://u:***@db/x?sslpassword=***"
    );
}

#[test]
fn example_config_documents_every_default() {
    let example: toml::Table = include_str!("../../examples/homingd.toml").parse().unwrap();
    let defaults: toml::Table = DEFAULTS_TOML.parse().unwrap();
    assert_eq!(
        example, defaults,
        "examples/homingd.toml must list every option at its default"
    );
}

#[test]
fn zero_durations_that_would_break_the_server_are_refused() {
    for key in [
        "HOMING__RETENTION__MAX_PENDING_AGE",
        "HOMING__RETENTION__DEVICE_INACTIVITY",
        "HOMING__AUTH__TOKEN_TTL",
        "HOMING__AUTH__CHALLENGE_TTL",
        "HOMING__FEDERATION__REQUEST_TIMEOUT",
        "HOMING__FEDERATION__RELAY_LEASE",
    ] {
        let error = load(&[(key, "0s")]).unwrap_err().to_string();
        assert!(error.contains("longer than zero"), "{key}: {error}");
    }
    assert!(load(&[("HOMING__RETENTION__MAX_PENDING_AGE", "1s")]).is_ok());
}

#[test]
fn debug_output_of_settings_carries_no_database_password() {
    let settings = load(&[(
        "HOMING__DATABASE__URL",
        "postgres://homing:hunter2secret@127.0.0.1/homing?sslpassword=alsosecret",
    )])
    .unwrap();
    let printed = format!("{settings:?}");
    assert!(printed.contains("127.0.0.1"), "{printed}");
    assert!(!printed.contains("hunter2secret"), "{printed}");
    assert!(!printed.contains("alsosecret"), "{printed}");
}
