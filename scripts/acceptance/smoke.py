"""A smoke test of the TechHub API through a client generated from its OpenAPI document by
openapi-python-client (package `api_client`, on PYTHONPATH): nobody here wrote the client, so a passing run
proves the document describes what the server does.

Usage: smoke.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD
"""

import sys
import time
import uuid

from api_client import AuthenticatedClient, Client
from api_client.api.auth import login, register
from api_client.api.jobs import artifact, get_job, list_jobs
from api_client.api.users import export_users, list_users, me
from api_client.models import (
    ExportRequest,
    ImportUser,
    JobAccepted,
    JobState,
    LoginRequest,
    PageViewJobView,
    Problem,
    RegisterRequest,
    Role,
    TokenPairView,
    TransferFormat,
    UserView,
)

checks = 0


def check(condition, message):
    global checks
    if not condition:
        raise SystemExit(f"smoke test failed: {message}")
    checks += 1


def sign_in(base, email, password):
    response = login.sync_detailed(client=Client(base_url=base), body=LoginRequest(email=email, password=password))
    check(response.status_code == 200, f"sign-in answered {response.status_code}: {response.content!r}")
    pair = response.parsed
    check(isinstance(pair, TokenPairView), f"sign-in parsed as {type(pair)}")
    return AuthenticatedClient(base_url=base, token=pair.access_token), pair


def wait_succeeded(client, job_id):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = get_job.sync(id=job_id, client=client)
        check(not isinstance(job, Problem), f"reading job {job_id}: {job}")
        if job.state == JobState.SUCCEEDED:
            return job
        check(job.state in (JobState.QUEUED, JobState.RUNNING), f"job {job_id} ended {job.state}: {job.last_error}")
        time.sleep(0.1)
    raise SystemExit(f"smoke test failed: job {job_id} did not succeed in 30 s")


def main():
    base, admin_email, admin_password = sys.argv[1:4]
    anonymous = Client(base_url=base)
    suffix = uuid.uuid4().hex[:8]

    # Register, sign in, read `me`.
    email = f"smoke-{suffix}@example.com"
    password = "a long smoke passphrase"
    created = register.sync_detailed(
        client=anonymous, body=RegisterRequest(email=email, password=password, name="Smoke")
    )
    check(created.status_code == 201, f"register answered {created.status_code}: {created.content!r}")
    check(isinstance(created.parsed, UserView) and created.parsed.email == email, f"register: {created.parsed}")
    check(created.parsed.role == Role.USER, f"a new account is a user: {created.parsed.role}")
    user, pair = sign_in(base, email, password)
    check(pair.user.email == email, "the token pair names its user")
    myself = me.sync(client=user)
    check(isinstance(myself, UserView) and myself.email == email, f"me: {myself}")

    # A 401 and a 403, parsed as problems.
    unauthorized = me.sync_detailed(client=AuthenticatedClient(base_url=base, token="not-a-token"))
    check(unauthorized.status_code == 401, f"a bad token answered {unauthorized.status_code}")
    check(isinstance(unauthorized.parsed, Problem), f"401 parsed as {type(unauthorized.parsed)}")
    check(unauthorized.parsed.status == 401 and unauthorized.parsed.code in ("unauthorized", "token_invalid"), "401")
    check(unauthorized.headers.get("content-type", "").startswith("application/problem+json"), "401 media type")
    forbidden = list_users.sync_detailed(client=user)
    check(forbidden.status_code == 403, f"a user listing users answered {forbidden.status_code}")
    check(isinstance(forbidden.parsed, Problem) and forbidden.parsed.code == "forbidden", f"403: {forbidden.parsed}")

    # As the admin: import JSON users, export, list jobs, download the export.
    admin, _ = sign_in(base, admin_email, admin_password)
    rows = [
        ImportUser(email=f"grace-{suffix}@example.com", name="Grace", role=Role.USER, password="another long passphrase"),
        ImportUser(email=f"linus-{suffix}@example.com", name="Linus"),
    ]
    # The generated `api.users.import_users` cannot be imported: openapi-python-client 0.29.1 writes a
    # function taking either body (JSON array or CSV) as `list[ImportUser] | str | Unset` without importing
    # `Unset`, and tests it with `isinstance(body, list[ImportUser])`, which Python refuses. So the JSON import
    # goes through the generated client's own HTTP session, with the generated models on both sides.
    response = admin.get_httpx_client().post("/api/v1/users/import", json=[row.to_dict() for row in rows])
    check(response.status_code == 202, f"import answered {response.status_code}: {response.content!r}")
    check(response.headers.get("location", "").startswith("/api/v1/jobs/"), "the import names its job")
    accepted = JobAccepted.from_dict(response.json())
    imported = wait_succeeded(admin, accepted.job_id)
    report = imported.result.to_dict() if imported.result else {}
    check(report.get("created") == 2, f"the import created {report}")

    accepted = export_users.sync_detailed(client=admin, body=ExportRequest(format_=TransferFormat.CSV))
    check(accepted.status_code == 202, f"export answered {accepted.status_code}: {accepted.content!r}")
    export_job = wait_succeeded(admin, accepted.parsed.job_id)
    check(export_job.has_artifact, "the export has a file")
    download = artifact.sync_detailed(id=export_job.id, client=admin)
    check(download.status_code == 200, f"the download answered {download.status_code}")
    check(download.headers.get("content-type", "").startswith("text/csv"), f"{download.headers}")
    check(f"grace-{suffix}@example.com".encode() in download.content, "the export holds the imported user")

    page = list_jobs.sync(client=admin, limit=100)
    check(isinstance(page, PageViewJobView), f"list jobs parsed as {type(page)}")
    ids = {str(job.id) for job in page.items}
    check(str(export_job.id) in ids and str(imported.id) in ids, "the admin sees the import and export jobs")
    own = list_jobs.sync(client=user, limit=100)
    check(isinstance(own, PageViewJobView), f"a user's job list parsed as {type(own)}")
    check(str(export_job.id) not in {str(job.id) for job in own.items}, "a user sees no admin job")

    print(f"smoke: {checks} passed, 0 failed")


if __name__ == "__main__":
    main()
