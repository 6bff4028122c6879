"""scripts/deploy --dry-run: every step is printed, fully expanded, nothing runs, and the names it
derives (images, buckets, job, URL map) are the ones the Terraform creates."""

from __future__ import annotations

import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TF, load_module, one

DEPLOY = REPO / "scripts" / "deploy"
ARGS = [
    "--project", "demo-tickets-1",
    "--region", "europe-west3",
    "--domain", "vip.example.at",
    "--alert-email", "oncall@example.at",
    "--tag", "abc123",
]  # fmt: skip
# As the dry run prints it (shell-quoted).
ALERT_VAR = """'-var=alert_notifications={email="oncall@example.at"}'"""


@pytest.fixture
def fake_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose gcloud/terraform/docker only record that they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ["gcloud", "terraform", "docker"]:
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit 0\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CI": "true",
        "TMPDIR": str(tmp_path),
    }
    return env, calls


def deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def commands(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def effective_vars(cmd: str) -> dict[str, str]:
    """The variables a terraform command line sets, as Terraform resolves them: -var and
    -var-file are applied in order and a later one wins (a var file read from disk)."""
    values: dict[str, str] = {}
    for word in shlex.split(cmd):
        if word.startswith("-var-file="):
            for line in Path(word.removeprefix("-var-file=")).read_text().splitlines():
                m = re.fullmatch(r'\s*(\w+)\s*=\s*"([^"]*)"\s*', line)
                if m:
                    values[m.group(1)] = m.group(2)
        elif word.startswith("-var="):
            name, _, value = word.removeprefix("-var=").partition("=")
            values[name] = value
    return values


def test_dry_run_prints_every_step_and_runs_nothing(fake_tools, tmp_path):
    env, calls = fake_tools
    site = tmp_path / "dist"
    site.mkdir()
    (site / "index.html").write_text("<h1>VIP</h1>")
    res = deploy(env, *ARGS, "--site-dir", str(site), "--seed-args", "--capacity 2000 --opens-at 2027-03-01T10:00:00Z", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert not calls.exists(), f"dry run executed: {calls.read_text()}"
    cmds = commands(res.stdout)
    tf = f"terraform -chdir={TF}"
    registry = "europe-west3-docker.pkg.dev/demo-tickets-1/tickets"
    tf_vars = f"-var=project_id=demo-tickets-1 -var=region=europe-west3 -var=name_prefix=tickets -var=image_tag=abc123 -var=domain=vip.example.at {ALERT_VAR}"
    immutable = "'--cache-control=public, max-age=31536000, immutable'"
    expected_in_order = [
        "gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com --project=demo-tickets-1",
        "gcloud storage buckets describe gs://demo-tickets-1-tickets-tfstate --project=demo-tickets-1",
        "gcloud storage buckets create gs://demo-tickets-1-tickets-tfstate --project=demo-tickets-1 --location=europe-west3 --uniform-bucket-level-access --public-access-prevention",
        "gcloud storage buckets update gs://demo-tickets-1-tickets-tfstate --project=demo-tickets-1 --versioning",
        f"{tf} init -input=false -backend-config=bucket=demo-tickets-1-tickets-tfstate -backend-config=prefix=tickets -reconfigure",
        f"{tf} apply -input=false {tf_vars} -auto-approve -target=",
        "gcloud builds submit --project=demo-tickets-1 --region=europe-west3 --config=",
        f"{tf} apply {tf_vars}",
        "gcloud run jobs execute ops --project=demo-tickets-1 --region=europe-west3 --wait --args=migrate",
        "gcloud run jobs execute ops --project=demo-tickets-1 --region=europe-west3 --wait --args=seed,--capacity,2000,--opens-at,2027-03-01T10:00:00Z",
        # Assets first (immutable), then the pages naming them (no-cache), then stale assets go.
        f"gcloud storage rsync {site} gs://demo-tickets-1-tickets-site --project=demo-tickets-1 --recursive '--exclude=.*\\.html$' {immutable}",
        f"gcloud storage cp {site}/index.html gs://demo-tickets-1-tickets-site/ --project=demo-tickets-1 --cache-control=no-cache",
        f"gcloud storage rsync {site} gs://demo-tickets-1-tickets-site --project=demo-tickets-1 --recursive '--exclude=.*\\.html$' --delete-unmatched-destination-objects {immutable}",
        "gcloud compute url-maps invalidate-cdn-cache tickets-https --project=demo-tickets-1 --global '--path=/*' --async",
        f"{tf} output -raw site_url",
    ]
    i = 0
    for cmd in cmds:
        if i < len(expected_in_order) and cmd.startswith(expected_in_order[i]):
            i += 1
    assert i == len(expected_in_order), f"missing or out of order: {expected_in_order[i]}\n--- got:\n" + "\n".join(cmds)
    # Fully expanded: no unexpanded shell variables or command substitutions.
    assert not re.search(r"\$\{?[A-Za-z_]|\$\(", res.stdout)
    # The generated Cloud Build config builds and pushes all three images, as its own account.
    for fn in ["check-availability", "buy", "consume-order"]:
        assert f'"-f", "functions/{fn}/Dockerfile", "-t", "{registry}/{fn}:abc123"' in res.stdout
        assert f"  - {registry}/{fn}:abc123" in res.stdout
    submit = next(c for c in cmds if c.startswith("gcloud builds submit"))
    assert "--service-account=projects/demo-tickets-1/serviceAccounts/image-build@demo-tickets-1.iam.gserviceaccount.com" in submit
    assert "--gcs-source-staging-dir=gs://demo-tickets-1-tickets-build/source" in submit
    # Without --yes the main apply asks for confirmation (the bootstrap one never needs it), so it
    # may not carry -input=false, which refuses the approval prompt too.
    main_apply = [c for c in cmds if " apply " in c and "-target=" not in c]
    assert len(main_apply) == 1 and "-auto-approve" not in main_apply[0] and "-input=false" not in main_apply[0]
    # The site has no 404.html: said, not silently skipped.
    assert "404.html is missing" in res.stderr


def test_yes_auto_approves_and_no_seed_skips(fake_tools):
    env, _ = fake_tools
    res = deploy(env, *ARGS, "--yes", "--no-seed", "--dry-run", "--site-dir", "/nonexistent")
    assert res.returncode == 0, res.stderr
    cmds = commands(res.stdout)
    assert any(" apply " in c and "-target=" not in c and c.endswith("-input=false -auto-approve") for c in cmds)
    assert not any("--args=seed" in c for c in cmds)
    assert any("--args=migrate" in c for c in cmds)
    assert not any("gcloud storage rsync" in c for c in cmds)
    assert "site skipped" in res.stdout


def test_docker_builder_pushes_with_buildx(fake_tools):
    env, calls = fake_tools
    res = deploy(env, *ARGS, "--builder", "docker", "--dry-run")
    assert res.returncode == 0, res.stderr
    cmds = commands(res.stdout)
    assert "gcloud auth configure-docker europe-west3-docker.pkg.dev --quiet" in cmds
    for fn in ["check-availability", "buy", "consume-order"]:
        assert (
            f"docker buildx build --platform=linux/amd64 -f {REPO}/functions/{fn}/Dockerfile "
            f"-t europe-west3-docker.pkg.dev/demo-tickets-1/tickets/{fn}:abc123 --push {REPO}"
        ) in cmds
    assert not any(c.startswith("gcloud builds submit") for c in cmds)
    assert not calls.exists()


def test_default_tag_is_the_git_commit(fake_tools):
    env, _ = fake_tools
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    args = [a for a in ARGS if a not in ("--tag", "abc123")]
    res = deploy(env, *args, "--dry-run")
    assert res.returncode == 0, res.stderr
    tag = re.search(r"-var=image_tag=(\S+)", res.stdout).group(1)
    assert re.fullmatch(re.escape(head.stdout.strip()) + r"(-dirty-\d{14})?", tag), tag


@pytest.mark.parametrize(
    ("drop", "message"),
    [("--project", "no project"), ("--region", "no region")],
)
def test_missing_settings_fail_clearly(fake_tools, drop, message):
    env, calls = fake_tools
    args = list(ARGS)
    i = args.index(drop)
    del args[i : i + 2]
    res = deploy(env, *args, "--dry-run")
    assert res.returncode == 2
    assert message in res.stderr and drop in res.stderr
    assert not calls.exists()


def test_missing_domain_fails_clearly(fake_tools, tmp_path):
    env, _ = fake_tools
    var_file = tmp_path / "x.tfvars"
    var_file.write_text('database = "postgres"\n')
    args = [a for a in ARGS if a not in ("--domain", "vip.example.at")]
    res = deploy(env, *args, "--var-file", str(var_file), "--dry-run")
    assert res.returncode == 2 and "no domain" in res.stderr


def test_domain_may_come_from_the_var_file(fake_tools, tmp_path):
    env, _ = fake_tools
    var_file = tmp_path / "prod.tfvars"
    var_file.write_text('domain = "vip.example.at"\n')
    args = [a for a in ARGS if a not in ("--domain", "vip.example.at")]
    res = deploy(env, *args, "--var-file", str(var_file), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"-var-file={var_file}" in res.stdout and "-var=domain=" not in res.stdout


def test_environment_variables_work_like_flags(fake_tools):
    env, _ = fake_tools
    env = {**env, "PROJECT": "demo-tickets-2", "REGION": "europe-west1", "DOMAIN": "vip.example.at", "TAG": "t2", "ALERT_EMAIL": "a@example.at"}
    res = deploy(env, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "europe-west1-docker.pkg.dev/demo-tickets-2/tickets/buy:t2" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--builder", "kaniko"], "--builder must be"),
        (["--project", "Bad_Project"], "not a Google Cloud project id"),
        (["--tag", "no spaces"], "not a valid image tag"),
        (["--seed-args", "--opens-at 2027,1"], "contains a comma"),
        (["--frobnicate"], "unknown option"),
    ],
)
def test_bad_input_is_refused(fake_tools, args, message):
    env, calls = fake_tools
    res = deploy(env, *ARGS, *args, "--dry-run")
    assert res.returncode == 2, res.stdout
    assert message in res.stderr
    assert not calls.exists()


def test_real_run_without_a_terminal_needs_yes(fake_tools):
    env, calls = fake_tools
    res = deploy(env, *ARGS)
    assert res.returncode == 2 and "--yes" in res.stderr
    # Only the login check ran: nothing was built or applied.
    assert calls.read_text().splitlines() == ["gcloud auth print-access-token"]


def test_names_agree_with_the_terraform(fake_tools):
    """scripts/deploy derives names rather than reading terraform outputs (so the dry run works
    without state): they must follow the Terraform's own conventions."""
    root = load_module(TF)
    edge = load_module(TF / "modules" / "edge")
    assert root.resource("google_artifact_registry_repository", "images")["repository_id"] == "${var.name_prefix}"
    assert root.resource("google_artifact_registry_repository", "images")["location"] == "${var.region}"
    assert root.locals["registry"] == "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
    assert root.locals["images"] == "${{for f in local.functions : f => \"${local.registry}/${f}:${var.image_tag}\"}}"
    assert root.calls["edge"]["site_bucket_name"] == "${var.project_id}-${var.name_prefix}-site"
    assert edge.resource("google_storage_bucket", "site")["name"] == "${var.site_bucket_name}"
    assert edge.resource("google_compute_url_map", "https")["name"] == "${var.name_prefix}-https"
    assert root.resource("google_storage_bucket", "build_staging")["name"] == "${var.project_id}-${var.name_prefix}-build"
    assert root.resource("google_service_account", "build")["account_id"] == "image-build"
    assert root.resource("google_cloud_run_v2_job", "ops")["name"] == "ops"
    container = one(one(one(root.resource("google_cloud_run_v2_job", "ops")["template"])["template"])["containers"])
    assert container["command"] == ["/ops"]
    # The bootstrap targets exist.
    env, _ = fake_tools
    res = deploy(env, *ARGS, "--dry-run")
    targets = set(re.findall(r"-target=(\S+)", res.stdout))
    assert targets and all(tuple(t.split(".")) in root.resources for t in targets), targets
    # Variables the script passes are declared.
    for name in set(re.findall(r"-var=(\w+)=", res.stdout)):
        assert name in root.variables, name


# --- Issue: the var file overrode the flags; first applies failed on eventual consistency ------


def test_flags_win_over_the_var_file(fake_tools, tmp_path):
    """--var-file used to come after the -var flags, so a file naming another project won: the
    images went to --project and the apply to the file's project."""
    env, _ = fake_tools
    var_file = tmp_path / "other.tfvars"
    var_file.write_text(
        'project_id  = "other-project"\n'
        'region      = "us-central1"\n'
        'domain      = "shop.example.com"\n'
        'name_prefix = "shop"\n'
        'alert_notifications = { email = "x@example.at" }\n'
    )
    res = deploy(env, *ARGS, "--var-file", str(var_file), "--dry-run")
    assert res.returncode == 0, res.stderr
    applies = [c for c in commands(res.stdout) if " apply " in c]
    assert len(applies) == 2
    for cmd in applies:
        assert cmd.index("-var-file=") < cmd.index("-var=project_id="), "the file must come before the flags"
        got = effective_vars(cmd)
        assert got["project_id"] == "demo-tickets-1"
        assert got["region"] == "europe-west3"
        assert got["domain"] == "vip.example.at"
        # No --name-prefix: the file's, and the images go to that registry too.
        assert got["name_prefix"] == "shop"
    assert "europe-west3-docker.pkg.dev/demo-tickets-1/shop/buy:abc123" in res.stdout
    assert "gs://demo-tickets-1-shop-site" in res.stdout
    assert 'project_id = "other-project"; using "demo-tickets-1"' in res.stderr


def test_alert_recipient_is_required(fake_tools, tmp_path):
    env, _ = fake_tools
    args = [a for a in ARGS if a not in ("--alert-email", "oncall@example.at")]
    var_file = tmp_path / "x.tfvars"
    var_file.write_text('domain = "vip.example.at"\n')
    res = deploy(env, *args, "--var-file", str(var_file), "--dry-run")
    assert res.returncode == 2 and "no alert recipient" in res.stderr
    var_file.write_text('alert_notifications = {\n  channels = ["projects/p/notificationChannels/1"]\n}\n')
    res = deploy(env, *args, "--var-file", str(var_file), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "-var=alert_notifications" not in res.stdout
    res = deploy(env, *ARGS, "--alert-email", "not-an-address", "--dry-run")
    assert res.returncode == 2 and "not an e-mail address" in res.stderr


def scripted_tools(tmp_path: Path, terraform_body: str, gcloud_body: str = "") -> tuple[dict[str, str], Path]:
    """Fake tools that record their calls; terraform and gcloud run the given sh snippets first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    bodies = {"terraform": terraform_body, "gcloud": gcloud_body, "docker": ""}
    for tool, body in bodies.items():
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n{body}\nexit 0\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CI": "true",
        "TMPDIR": str(tmp_path),
        "DEPLOY_RETRY_WAIT": "0",
    }
    return env, calls


def real_run(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "dist"
    site.mkdir()
    (site / "index.html").write_text("<h1>VIP</h1>")
    (site / "404.html").write_text("<h1>Not here</h1>")
    return deploy(env, *ARGS, "--yes", "--no-seed", "--site-dir", str(site))


# The main apply (no -target) fails once with the Monitoring API's answer for a metric created a
# moment ago, as on every first deploy before the fix.
FAIL_MAIN_APPLY_ONCE = """
case "$*" in *" apply "*-target=*) ;; *" apply "*)
  if [ ! -f "$TMPDIR/failed-once" ]; then
    touch "$TMPDIR/failed-once"
    echo 'Error: Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) that match type = "logging.googleapis.com/user/refunds_failed". If a metric was created recently, it could take up to 10 minutes to become available. Please try again soon.' >&2
    exit 1
  fi ;;
esac
"""


def test_first_apply_survives_a_metric_not_yet_visible(tmp_path):
    env, calls = scripted_tools(tmp_path, FAIL_MAIN_APPLY_ONCE)
    res = real_run(env, tmp_path)
    assert res.returncode == 0, res.stderr
    log = calls.read_text().splitlines()
    main_applies = [i for i, c in enumerate(log) if c.startswith("terraform ") and " apply " in c and "-target=" not in c]
    assert len(main_applies) == 2, log
    migrate = next(i for i, c in enumerate(log) if "--args=migrate" in c)
    assert migrate > main_applies[-1], "migrations run after the apply that succeeded"
    assert any(c.startswith("gcloud storage cp ") for c in log), "the site is uploaded"
    assert "Cannot find metric(s)" in res.stdout + res.stderr


def test_other_apply_failures_stop_at_once(tmp_path):
    env, calls = scripted_tools(
        tmp_path,
        'case "$*" in *" apply "*-target=*) ;; *" apply "*) echo "Error: Invalid value for variable" >&2; exit 1 ;; esac',
    )
    res = real_run(env, tmp_path)
    assert res.returncode != 0
    log = calls.read_text().splitlines()
    assert sum(1 for c in log if " apply " in c and "-target=" not in c) == 1
    assert not any("gcloud run jobs execute" in c for c in log)


def test_retries_are_bounded(tmp_path):
    env, calls = scripted_tools(
        tmp_path,
        'case "$*" in *" apply "*-target=*) ;; *" apply "*) echo "googleapi: Error 404: Cannot find metric(s)" >&2; exit 1 ;; esac',
    )
    res = real_run({**env, "DEPLOY_APPLY_ATTEMPTS": "3"}, tmp_path)
    assert res.returncode != 0
    log = calls.read_text().splitlines()
    assert sum(1 for c in log if " apply " in c and "-target=" not in c) == 3
    assert not any("gcloud run jobs execute" in c for c in log)


def test_state_bucket_is_created_versioned_when_missing(tmp_path):
    env, calls = scripted_tools(tmp_path, "", 'case "$*" in "storage buckets describe"*) exit 1 ;; esac')
    res = real_run(env, tmp_path)
    assert res.returncode == 0, res.stderr
    log = calls.read_text().splitlines()
    create = log.index(
        "gcloud storage buckets create gs://demo-tickets-1-tickets-tfstate --project=demo-tickets-1 "
        "--location=europe-west3 --uniform-bucket-level-access --public-access-prevention"
    )
    versioning = log.index("gcloud storage buckets update gs://demo-tickets-1-tickets-tfstate --project=demo-tickets-1 --versioning")
    init = next(i for i, c in enumerate(log) if c.startswith("terraform ") and " init " in c)
    assert create < versioning < init
    assert "-backend-config=bucket=demo-tickets-1-tickets-tfstate -backend-config=prefix=tickets" in log[init]
    # An existing bucket (the fake gcloud finds every one) is not created again, but its
    # versioning is still ensured.
    again = tmp_path / "again"
    again.mkdir()
    env, calls = scripted_tools(again, "")
    assert real_run(env, again).returncode == 0
    log = calls.read_text().splitlines()
    assert not any("storage buckets create" in c for c in log)
    assert any(c.endswith("--versioning") for c in log)


def test_pages_are_uploaded_after_their_assets_and_never_immutable(tmp_path):
    env, calls = scripted_tools(tmp_path, "")
    res = real_run(env, tmp_path)
    assert res.returncode == 0, res.stderr
    log = [c for c in calls.read_text().splitlines() if c.startswith("gcloud storage rsync") or c.startswith("gcloud storage cp")]
    assert len(log) == 3
    first, pages, prune = log
    assert "--exclude=.*\\.html$" in first and "--delete-unmatched-destination-objects" not in first
    assert pages.startswith("gcloud storage cp ") and pages.endswith("--cache-control=no-cache")
    assert f"{tmp_path}/dist/404.html" in pages and f"{tmp_path}/dist/index.html" in pages
    assert "--exclude=.*\\.html$" in prune and "--delete-unmatched-destination-objects" in prune
