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

#[test]
fn about_settings_are_optional_and_parsed() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.about, About::default());

    let settings = load(&[
        ("HOMING__SERVER__DESCRIPTION", "  For the Example family.  "),
        ("HOMING__SERVER__CONTACT", "mailto:admin@example.org"),
        ("HOMING__SERVER__RULES_URL", "https://example.org/rules"),
    ])
    .unwrap();
    assert_eq!(
        settings.about.description.as_deref(),
        Some("For the Example family.")
    );
    assert_eq!(
        settings.about.contact,
        Some(Contact::Email("admin@example.org".into()))
    );
    assert_eq!(
        settings.about.rules_url.as_deref(),
        Some("https://example.org/rules")
    );

    let web = load(&[("HOMING__SERVER__CONTACT", "https://example.org/contact")]).unwrap();
    assert_eq!(
        web.about.contact.map(|c| c.href()).as_deref(),
        Some("https://example.org/contact")
    );
    let local = load(&[("HOMING__SERVER__RULES_URL", "http://localhost:8008/rules")]);
    assert!(local.is_ok(), "{local:?}");
}

#[test]
fn bad_about_settings_are_refused_with_the_key() {
    let long = "x".repeat(501);
    let cases = [
        (
            "HOMING__SERVER__DESCRIPTION",
            long.as_str(),
            "server.description",
        ),
        (
            "HOMING__SERVER__DESCRIPTION",
            "bell\u{7}",
            "server.description",
        ),
        ("HOMING__SERVER__CONTACT", "call me maybe", "server.contact"),
        (
            "HOMING__SERVER__CONTACT",
            "admin@localhost",
            "server.contact",
        ),
        (
            "HOMING__SERVER__CONTACT",
            "a<b>@example.org",
            "server.contact",
        ),
        (
            "HOMING__SERVER__CONTACT",
            "javascript://x",
            "server.contact",
        ),
        (
            "HOMING__SERVER__RULES_URL",
            "javascript:alert(1)",
            "server.rules_url",
        ),
        (
            "HOMING__SERVER__RULES_URL",
            "http://example.org/rules",
            "server.rules_url",
        ),
        (
            "HOMING__SERVER__RULES_URL",
            "https://u:p@example.org/",
            "server.rules_url",
        ),
        (
            "HOMING__SERVER__RULES_URL",
            "example.org/rules",
            "server.rules_url",
        ),
    ];
    for (key, value, named) in cases {
        let error = load(&[(key, value)]).unwrap_err().to_string();
        assert!(error.contains(named), "{value}: {error}");
    }
}
