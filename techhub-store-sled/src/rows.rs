//! Row formats: users, tokens, jobs and artifacts in the compact binary form of [`codec`](crate::codec), each
//! behind a format byte so a later layout can be told apart. A row's key (id or hash) is not repeated inside it.
//! Builds, log lines and notifications are stored as their JSON form (they are not on a hot path).
//!
//! A job row ends with its JSON payload, which never changes after enqueue: the writer decodes rows without
//! parsing it ([`decode_job_head`]) and copies those bytes into the next version; callers parse it when they
//! turn the row they got back into a [`Job`].

use std::cell::RefCell;

use serde_json::Value;
use sled::IVec;
use techhub_core::model::{
    Artifact, ArtifactInfo, ClientMeta, Email, Job, JobId, JobState, PasswordHash, Progress, Role, TokenHash,
    TokenKind, TokenRecord, User, UserId, WorkerId,
};
use techhub_core::storage::{StoreError, StoreResult};

use crate::codec::{DecodeError, Reader, Writer, corrupt};

const FORMAT: u8 = 1;

fn format(reader: &mut Reader<'_>) -> Result<(), DecodeError> {
    if reader.u8()? == FORMAT { Ok(()) } else { Err(DecodeError("unknown row format")) }
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(StoreError::backend)
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(StoreError::corrupt)
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::User => 0,
        Role::Admin => 1,
    }
}

pub(crate) fn encode_user(user: &User) -> Vec<u8> {
    let mut w = Writer::with_capacity(64 + user.email.as_str().len() + user.name.len());
    w.u8(FORMAT);
    w.str(user.email.as_str());
    w.str(&user.name);
    w.u8(role_byte(user.role));
    w.bool(user.active);
    w.bool(user.email_verified);
    w.u64(user.version);
    w.time(user.created_at);
    w.time(user.updated_at);
    w.option(user.password_hash.as_ref(), |w, hash| w.str(hash.as_phc()));
    w.u32(user.failed_logins);
    w.option(user.last_failed_login_at, Writer::time);
    w.into_bytes()
}

pub(crate) fn decode_user(id: UserId, bytes: &[u8]) -> StoreResult<User> {
    let mut r = Reader::new(bytes);
    format(&mut r)?;
    let email = Email::parse(r.str()?).map_err(|_| corrupt("a stored email does not parse"))?;
    let user = User {
        id,
        email,
        name: r.string()?,
        role: match r.u8()? {
            0 => Role::User,
            1 => Role::Admin,
            _ => return Err(corrupt("unknown role")),
        },
        active: r.bool()?,
        email_verified: r.bool()?,
        version: r.u64()?,
        created_at: r.time()?,
        updated_at: r.time()?,
        password_hash: r.option(|r| r.str().map(PasswordHash::from_phc))?,
        failed_logins: r.u32()?,
        last_failed_login_at: r.option(Reader::time)?,
    };
    r.finish()?;
    Ok(user)
}

const TOKEN_KINDS: [TokenKind; 3] = [TokenKind::Refresh, TokenKind::PasswordReset, TokenKind::EmailVerify];

pub(crate) fn encode_token(record: &TokenRecord) -> Vec<u8> {
    let mut w = Writer::with_capacity(80);
    w.u8(FORMAT);
    w.u8(TOKEN_KINDS.iter().position(|kind| *kind == record.kind).unwrap_or_default() as u8);
    w.uuid(record.user_id.as_uuid());
    w.uuid(record.family.as_uuid());
    w.time(record.created_at);
    w.time(record.family_created_at);
    w.time(record.expires_at);
    w.option(record.consumed_at, Writer::time);
    // The client fields came later: a record written before ends here, and reads them as absent.
    w.option(record.client.user_agent.as_deref(), Writer::str);
    w.option(record.client.ip.map(|ip| ip.to_string()), |w, ip| w.str(&ip));
    w.into_bytes()
}

pub(crate) fn decode_token(hash: TokenHash, bytes: &[u8]) -> StoreResult<TokenRecord> {
    let mut r = Reader::new(bytes);
    format(&mut r)?;
    let record = TokenRecord {
        hash,
        kind: *TOKEN_KINDS.get(usize::from(r.u8()?)).ok_or_else(|| corrupt("unknown token kind"))?,
        user_id: r.uuid()?.into(),
        family: r.uuid()?.into(),
        created_at: r.time()?,
        family_created_at: r.time()?,
        expires_at: r.time()?,
        consumed_at: r.option(Reader::time)?,
        client: ClientMeta::default(),
    };
    let mut record = record;
    if !r.rest_is_empty() {
        record.client.user_agent = r.option(Reader::string)?;
        record.client.ip = r
            .option(Reader::string)?
            .map(|ip| ip.parse().map_err(|_| corrupt("a token's client address is not an IP address")))
            .transpose()?;
    }
    r.finish()?;
    Ok(record)
}

thread_local! {
    /// Where job rows are encoded before they are copied into their `IVec`: every transition writes a row, and
    /// a buffer kept per thread spares each a growing `Vec` of its own.
    static JOB_ROW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `job` with `payload`, the JSON bytes of `job.payload` (serialized once at enqueue).
pub(crate) fn encode_job(job: &Job, payload: &[u8]) -> StoreResult<IVec> {
    let result = job.result.as_ref().map(to_json).transpose()?;
    JOB_ROW.with(|buffer| {
        // Taken, not borrowed: nothing below encodes another row, but a taken buffer cannot be borrowed twice.
        let mut bytes = buffer.take();
        bytes.clear();
        let mut w = Writer::from_vec(bytes);
        write_job(&mut w, job, result.as_deref(), payload);
        let bytes = w.into_bytes();
        let row = IVec::from(bytes.as_slice());
        buffer.replace(bytes);
        Ok(row)
    })
}

fn write_job(w: &mut Writer, job: &Job, result: Option<&[u8]>, payload: &[u8]) {
    w.u8(FORMAT);
    w.str(&job.queue);
    w.str(&job.kind);
    w.u8(job.state.index() as u8);
    w.i32(job.priority);
    w.u32(job.attempt);
    w.u32(job.max_attempts);
    w.time(job.run_at);
    w.time(job.created_at);
    w.option(job.started_at, Writer::time);
    w.option(job.finished_at, Writer::time);
    w.u8(job.progress.percent);
    w.option(job.progress.message.as_deref(), Writer::str);
    w.option(job.last_error.as_deref(), Writer::str);
    w.option(job.created_by, |w, user| w.uuid(user.as_uuid()));
    w.option(job.unique_key.as_deref(), Writer::str);
    w.option(job.lease_holder.as_ref(), |w, worker| w.str(worker.as_str()));
    w.option(job.lease_until, Writer::time);
    w.bool(job.cancel_requested);
    w.option(job.artifact.as_ref(), |w, info| {
        w.str(&info.content_type);
        w.option(info.file_name.as_deref(), Writer::str);
        w.u64(info.size);
    });
    w.option(result, Writer::bytes);
    w.rest(payload);
}

/// A decoded job.
pub(crate) fn decode_job(id: JobId, bytes: &[u8]) -> StoreResult<Job> {
    let (mut job, payload_at) = decode_job_head(id, bytes)?;
    job.payload = from_json::<Value>(&bytes[payload_at..])?;
    Ok(job)
}

/// A decoded job whose payload is left as JSON bytes (the job says `null`), and where they start in the row.
pub(crate) fn decode_job_head(id: JobId, bytes: &[u8]) -> StoreResult<(Job, usize)> {
    let mut r = Reader::new(bytes);
    format(&mut r)?;
    let queue = r.string()?;
    let kind = r.string()?;
    let state = *JobState::ALL.get(usize::from(r.u8()?)).ok_or_else(|| corrupt("unknown job state"))?;
    let priority = r.i32()?;
    let attempt = r.u32()?;
    let max_attempts = r.u32()?;
    let run_at = r.time()?;
    let created_at = r.time()?;
    let started_at = r.option(Reader::time)?;
    let finished_at = r.option(Reader::time)?;
    let progress = Progress { percent: r.u8()?, message: r.option(Reader::string)? };
    let last_error = r.option(Reader::string)?;
    let created_by = r.option(|r| r.uuid().map(UserId::from_uuid))?;
    let unique_key = r.option(Reader::string)?;
    let lease_holder = r.option(|r| r.str().map(WorkerId::new))?;
    let lease_until = r.option(Reader::time)?;
    let cancel_requested = r.bool()?;
    let artifact = r.option(|r| {
        Ok(ArtifactInfo { content_type: r.string()?, file_name: r.option(Reader::string)?, size: r.u64()? })
    })?;
    let result = r.option(Reader::bytes)?.map(from_json::<Value>).transpose()?;
    let payload_at = r.position();
    let job = Job {
        id,
        queue,
        kind,
        payload: Value::Null,
        state,
        priority,
        attempt,
        max_attempts,
        run_at,
        created_at,
        started_at,
        finished_at,
        progress,
        last_error,
        result,
        artifact,
        created_by,
        unique_key,
        lease_holder,
        lease_until,
        cancel_requested,
    };
    Ok((job, payload_at))
}

pub(crate) fn encode_artifact(artifact: &Artifact) -> Vec<u8> {
    let mut w = Writer::with_capacity(32 + artifact.content_type.len() + artifact.bytes.len());
    w.u8(FORMAT);
    w.str(&artifact.content_type);
    w.option(artifact.file_name.as_deref(), Writer::str);
    w.rest(&artifact.bytes);
    w.into_bytes()
}

pub(crate) fn decode_artifact(bytes: &[u8]) -> StoreResult<Artifact> {
    let mut r = Reader::new(bytes);
    format(&mut r)?;
    Ok(Artifact { content_type: r.string()?, file_name: r.option(Reader::string)?, bytes: r.rest().to_vec() })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;
    use techhub_core::model::{NewJob, TokenFamilyId};

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_893_456_000 + seconds, 0).expect("in range")
    }

    #[test]
    fn users_round_trip_with_their_secrets_and_counters() {
        let mut user = User::new(Email::parse("Ada@Example.com").expect("valid"), "Ada", Role::Admin, t(0));
        user.password_hash = Some(PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"));
        user.failed_logins = 3;
        user.last_failed_login_at = Some(t(5));
        user.version = 9;
        assert_eq!(decode_user(user.id, &encode_user(&user)).expect("decodes"), user);
    }

    #[test]
    fn tokens_round_trip() {
        let mut record = TokenRecord::new(
            TokenHash::of("raw"),
            TokenKind::EmailVerify,
            UserId::new(),
            TokenFamilyId::new(),
            t(0),
            t(60),
        );
        record.consumed_at = Some(t(3));
        assert_eq!(decode_token(record.hash, &encode_token(&record)).expect("decodes"), record);
    }

    #[test]
    fn jobs_round_trip_and_keep_their_payload_bytes() {
        let spec = NewJob::new("users.export", json!({ "format": "csv", "n": [1, 2] }))
            .queue("exports")
            .priority(-4)
            .unique_key("export:1")
            .created_by(UserId::new());
        let mut job = Job::new(spec, t(0)).expect("valid");
        job.state = JobState::Succeeded;
        job.result = Some(json!({ "rows": 3 }));
        job.artifact = Some(ArtifactInfo { content_type: "text/csv".into(), file_name: None, size: 12 });
        job.lease_holder = Some(WorkerId::new("w"));
        job.progress = Progress::new(40, Some("half".into()));
        let payload = to_json(&job.payload).expect("serializes");
        let row = encode_job(&job, &payload).expect("encodes");
        assert_eq!(decode_job(job.id, &row).expect("decodes"), job);
        let (head, payload_at) = decode_job_head(job.id, &row).expect("decodes");
        assert_eq!((head.payload, &row[payload_at..]), (Value::Null, payload.as_slice()));
    }

    #[test]
    fn artifacts_round_trip_and_bad_rows_are_corrupt() {
        let artifact =
            Artifact { content_type: "text/csv".into(), file_name: Some("a.csv".into()), bytes: vec![0, 255] };
        assert_eq!(decode_artifact(&encode_artifact(&artifact)).expect("decodes"), artifact);
        assert!(matches!(decode_user(UserId::new(), &[2, 0]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_job(JobId::new(), &[1]), Err(StoreError::Corrupt(_))));
    }
}
