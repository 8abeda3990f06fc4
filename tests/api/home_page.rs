//! The home page (`GET /`, `/about`) for people picking a server: what it
//! says, that admin text is escaped, and its Content-Security-Policy.
//! `home_page_browser` opens it in a real browser.

use homing::address::ServerName;
use homing::federation::policy::{set_rule, Rule};
use reqwest::Response;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// An admin description that would run if it were not escaped.
pub const HOSTILE: &str = "Friends & <script>window.owned = 'yes'</script> family";

/// A server with every admin setting the page shows.
pub async fn about_app() -> TestApp {
    spawn_app_with(vec![
        ("HOMING__SERVER__DESCRIPTION", HOSTILE),
        ("HOMING__SERVER__CONTACT", "admin@example.org"),
        ("HOMING__SERVER__RULES_URL", "https://example.org/rules"),
    ])
    .await
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The policy's directives, each as written.
fn directives(policy: &str) -> Vec<String> {
    policy
        .split(';')
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|d| !d.is_empty())
        .collect()
}

/// The page's policy: its own files only, nothing inline, no frames.
pub fn assert_strict_policy(response: &Response) {
    let policy = directives(header(response, "content-security-policy"));
    for expected in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            policy.iter().any(|d| d == expected),
            "{expected}: {policy:?}"
        );
    }
    assert!(
        policy
            .iter()
            .all(|d| !d.contains("unsafe") && !d.contains('*')),
        "{policy:?}"
    );
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn home_page_describes_the_server_with_admin_text_escaped() {
    let app = about_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_strict_policy(&response);
    let html = response.text().await.unwrap();

    assert!(html.contains(&format!("<h1 id=\"server-name\">{}</h1>", app.server_name)));
    assert!(html.contains(&format!("homing init you@{}", app.server_name)));
    assert!(html.contains("Registration is <strong>open</strong>"));
    assert!(html.contains("256&nbsp;KiB"), "message limit in words");
    assert!(html.contains("after 30\ndays"), "retention in words");
    assert!(html.contains(&format!(
        "Homing <span id=\"version\">{}</span>",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(html.contains("href=\"mailto:admin@example.org\""));
    assert!(html.contains("href=\"https://example.org/rules\""));
    assert!(html.contains("<meta name=\"description\" content=\"Friends &#38; &#60;script&#62;"));

    // The description shows, escaped, and no admin text became markup.
    assert!(
        html.contains(
            "Friends &#38; &#60;script&#62;window.owned = &#39;yes&#39;&#60;/script&#62; family"
        ),
        "{html}"
    );
    assert!(!html.contains("<script>window"), "{html}");
    // The only script is the page's own file, and nothing comes from elsewhere.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains("<script src=\"/static/home.js\" defer></script>"));
    assert!(
        !html.contains(" style=") && !html.contains("<style"),
        "no inline style"
    );
    for (at, _) in html.match_indices(" on") {
        let name: String = html[at + 3..]
            .chars()
            .take_while(char::is_ascii_lowercase)
            .collect();
        let handler = html[at + 3 + name.len()..].starts_with('=');
        assert!(!handler, "inline handler on{name}=");
    }
    for attribute in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attribute) {
            let target = &html[at + attribute.len()..];
            let external =
                target.starts_with("http") && !target.starts_with("https://example.org/rules");
            assert!(
                !external && !target.starts_with("//"),
                "external {}",
                &target[..40.min(target.len())]
            );
        }
    }

    // `/about` is the same page.
    let about = app.get("/about").await;
    assert_eq!(about.status(), 200);
    assert_strict_policy(&about);
    assert_eq!(about.text().await.unwrap(), html);
}

#[tokio::test]
async fn server_info_carries_the_admin_text_and_federation_policy() {
    let app = about_app().await;
    let info: Value = app
        .get("/.well-known/homing/server-info")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["description"], HOSTILE);
    assert_eq!(info["contact"], "admin@example.org");
    assert_eq!(info["rules_url"], "https://example.org/rules");
    assert_eq!(info["federation"]["policy"], "open");
    assert_eq!(info["federation"]["allow"], serde_json::json!([]));

    // Without the settings the members are absent, not empty strings.
    let plain = spawn_app().await;
    let info: Value = plain
        .get("/.well-known/homing/server-info")
        .await
        .json()
        .await
        .unwrap();
    for key in ["description", "contact", "rules_url"] {
        assert!(info.get(key).is_none(), "{key}: {info}");
    }
    let html = plain.get("/").await.text().await.unwrap();
    assert!(
        !html.contains("mailto:") && !html.contains("id=\"rules\""),
        "{html}"
    );

    // The document says so, for the schema fuzzer and client authors.
    let document: Value = plain
        .get("/api/v1/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    let schema = &document["components"]["schemas"]["ServerInfo"];
    let required = schema["required"].as_array().unwrap();
    assert!(required.contains(&"federation".into()), "{schema}");
    for key in ["description", "contact", "rules_url"] {
        assert!(!required.contains(&key.into()), "{key}: {schema}");
        assert!(schema["properties"][key].is_object(), "{key}: {schema}");
    }
}

#[tokio::test]
async fn the_allow_list_is_the_one_the_relay_applies() {
    let app = spawn_app_with(vec![
        (
            "HOMING__FEDERATION__ALLOW",
            "friends.example,former.example",
        ),
        ("HOMING__REGISTRATION__POLICY", "invite"),
    ])
    .await;
    app.state
        .db
        .run(|conn| {
            set_rule(
                conn,
                &ServerName::parse("late.example").unwrap(),
                Rule::Allow,
            )?;
            set_rule(
                conn,
                &ServerName::parse("former.example").unwrap(),
                Rule::Deny,
            )
        })
        .await
        .unwrap();
    let info: Value = app
        .get("/.well-known/homing/server-info")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["federation"]["policy"], "allow_list");
    assert_eq!(
        info["federation"]["allow"],
        serde_json::json!(["friends.example", "late.example"])
    );
    let html = app.get("/").await.text().await.unwrap();
    assert!(
        html.contains("<li><code>friends.example</code></li>"),
        "{html}"
    );
    assert!(
        html.contains("<li><code>late.example</code></li>"),
        "{html}"
    );
    assert!(
        !html.contains("former.example"),
        "a denied server is not listed"
    );
    assert!(html.contains("Registration needs an <strong>invite</strong>"));
    assert!(html.contains(&format!(
        "homing init you@{} <span class=\"nowrap\">--invite CODE</span>",
        app.server_name
    )));
}

#[tokio::test]
async fn the_stylesheet_and_script_are_served_from_the_binary() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/static/home.css", "text/css; charset=utf-8"),
        ("/static/home.js", "text/javascript; charset=utf-8"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type);
        assert_strict_policy(&response);
        let body = response.text().await.unwrap();
        assert!(!body.contains("innerHTML"), "{path} writes text only");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path}"
        );
    }
    let missing = app.get("/static/other.js").await;
    assert_eq!(missing.status(), 404);
}
