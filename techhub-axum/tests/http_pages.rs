//! The browser pages of the `dashboard` feature over a real socket: the API reference at `/docs` and the
//! dashboard at `/dashboard`, every file from the binary, each page under a strict Content-Security-Policy
//! with no inline script. (The pages' behaviour in a real browser is tested by scripts/browser-tests.sh.)

mod common;

use common::{assert_problem, header, start};
use reqwest::StatusCode;

/// Every file each page loads.
const FILES: [(&str, &str); 14] = [
    ("/docs/", "text/html"),
    ("/docs/docs.js", "text/javascript"),
    ("/docs/docs.css", "text/css"),
    ("/docs/vendor/swagger-ui-bundle.js", "text/javascript"),
    ("/docs/vendor/swagger-ui.css", "text/css"),
    ("/dashboard/", "text/html"),
    ("/dashboard/app.js", "text/javascript"),
    ("/dashboard/api.js", "text/javascript"),
    ("/dashboard/live.js", "text/javascript"),
    ("/dashboard/dom.js", "text/javascript"),
    ("/dashboard/views.js", "text/javascript"),
    ("/dashboard/chart.js", "text/javascript"),
    ("/dashboard/notifications.js", "text/javascript"),
    ("/dashboard/app.css", "text/css"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_file_is_served_with_its_type_and_a_strict_policy() {
    let server = start().await;
    for (path, content_type) in FILES {
        let response = server.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(header(&response, "content-type").is_some_and(|value| value.starts_with(content_type)), "{path}");
        let policy = header(&response, "content-security-policy").expect("a policy").to_owned();
        assert!(policy.contains("script-src 'self';"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-eval") && policy.contains("frame-ancestors 'none'"), "{path}: {policy}");
        assert!(policy.contains("connect-src 'self'"), "{path}: {policy}");
        if path.starts_with("/dashboard") {
            assert!(!policy.contains("unsafe-inline"), "the dashboard allows nothing inline: {policy}");
        }
        assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
        let body = response.text().await.expect("text");
        assert!(!body.is_empty(), "{path}");
        if content_type == "text/html" {
            // Every script is a file of this origin: no inline script, no handler attribute.
            for (index, _) in body.match_indices("<script") {
                let tag = &body[index..index + body[index..].find('>').expect("a closed tag")];
                assert!(tag.contains(" src=\"/"), "{path}: an inline script: {tag}");
            }
            assert!(!body.contains(" onclick=") && !body.contains(" onload="), "{path}");
            assert!(!body.contains("http://") && !body.contains("https://"), "{path}: nothing from another origin");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_reads_this_servers_document_and_unknown_files_are_404() {
    let server = start().await;
    let script = server.get("/docs/docs.js", None).await.text().await.expect("text");
    assert!(script.contains("\"/api/v1/openapi.json\""), "{script}");
    for path in ["/docs/nothing.js", "/dashboard/../Cargo.toml", "/dashboard/secret.env"] {
        assert_problem(server.get(path, None).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client");
    for (path, target) in [("/docs", "/docs/"), ("/dashboard", "/dashboard/")] {
        let response = client.get(server.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT, "{path}");
        assert_eq!(header(&response, "location"), Some(target));
    }
}
