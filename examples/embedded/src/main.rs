//! TechHub linked straight into a program (a Tauri app would do the same), no HTTP:
//!
//! ```text
//! cargo run -p techhub-embedded -- [export-file]
//! ```
//!
//! It registers a user, signs in, enqueues an export of all users, prints the job's live progress from
//! `hub.subscribe()`, and writes the exported CSV to `export-file` (default `users-export.csv`).

use techhub_core::events::EventKind;
use techhub_core::jobs::WorkerConfig;
use techhub_core::model::Role;
use techhub_core::users::{Registration, TransferFormat, UserPatch};
use techhub_core::{Actor, TechHub};
use techhub_store_sqlite::SqliteStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let output = std::env::args().nth(1).unwrap_or_else(|| "users-export.csv".to_owned());
    let data = tempfile::tempdir()?;
    let hub = TechHub::builder().storage(SqliteStore::open(data.path().join("app.db"))?).build()?;
    let workers = hub.start_workers(WorkerConfig::default().queue("default", 2).queue("email", 1))?;

    // Sign up, and (as the app itself) make the user an admin: exports are for admins.
    let registration = Registration {
        email: "ada@example.com".to_owned(),
        password: "correct horse battery staple".to_owned(),
        name: Some("Ada".to_owned()),
    };
    let user = hub.users().register(registration).await?;
    let promote = UserPatch { role: Some(Role::Admin), ..UserPatch::default() };
    hub.users().update(&Actor::System, user.id, promote, None).await?;
    println!("registered {} ({})", user.email, user.id);

    // Sign in, and act as the session's user from here on.
    let tokens = hub.auth().login("ada@example.com", "correct horse battery staple").await?;
    let session = hub.auth().authenticate(&tokens.access_token).await?;
    println!("signed in; the access token expires in {} s", tokens.expires_in);

    // Subscribe before enqueueing, so no event of the job is missed.
    let mut events = hub.subscribe();
    let job = hub.users().export(&session.actor, TransferFormat::Csv).await?;
    println!("export job {} queued", job.id);
    loop {
        let event = events.recv().await?;
        if event.subject != *job.id.as_uuid() {
            continue;
        }
        match event.kind {
            EventKind::JobProgress => println!("  progress {}", event.data),
            EventKind::JobSucceeded => {
                println!("  succeeded");
                break;
            }
            EventKind::JobFailed | EventKind::JobCancelled => {
                return Err(format!("the export ended: {}", event.data).into());
            }
            other => println!("  {other:?}"),
        }
    }

    let artifact = hub.jobs().artifact(&session.actor, job.id).await?;
    std::fs::write(&output, &artifact.bytes)?;
    println!("wrote {} bytes of {} to {output}", artifact.bytes.len(), artifact.content_type);
    workers.shutdown().await;
    Ok(())
}
