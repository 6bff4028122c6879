"""What broke (or was missing) on the way to a first real deploy, each kept fixed by a test:
first-apply races with Google's eventual consistency, readiness, the ops job as the operators'
tool (dead-letter replay, scheduled audit), delivery attempts against a database failover,
remote state, pinned and rotatable secrets, TLS to Postgres, public services without allUsers,
CDN lifetimes, and the alerts (PromQL twins of the local rules, platform alerts, no silent
ones). The HCL is parsed as in test_structure.py."""

from __future__ import annotations

import re

import hcl2

from conftest import REPO, TF, Module, one, rust_env_vars, walk
from test_structure import resolve_keys, service_calls

MON = "monitoring"


def seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, f"not a duration in seconds: {duration!r}"
    return int(m.group(1))


def local_value(module: Module, value):
    """A literal, or the literal a `${local.x}` names."""
    if isinstance(value, str) and (m := re.fullmatch(r"\$\{local\.(\w+)\}", value)):
        return module.locals[m.group(1)]
    return value


def depends_on(body: dict) -> list[str]:
    return [str(d) for d in body.get("depends_on", [])]


def ops_container(root: Module) -> dict:
    job = root.resource("google_cloud_run_v2_job", "ops")
    return one(one(one(job["template"])["template"])["containers"])


# --- 1. A first apply: alert policies on log-based metrics wait for them ------------------------


def test_alerts_on_log_based_metrics_wait_until_the_metrics_are_usable(root, modules):
    mon = modules[MON]
    metrics = mon.of_type("google_logging_metric")
    assert {"refunds_failed", "orders_forged"} <= set(metrics)
    sleep = mon.resource("time_sleep", "log_metrics")
    # The Monitoring API may answer "Cannot find metric(s)" for up to ten minutes.
    assert seconds(sleep["create_duration"]) >= 600
    # Re-created metrics wait again: the sleep is replaced with them.
    triggers = str(sleep["triggers"])
    for name in metrics:
        assert f"google_logging_metric.{name}.id" in triggers, f"time_sleep does not follow {name}"
    users = {n: b for n, b in mon.of_type("google_monitoring_alert_policy").items() if "logging.googleapis.com/user/" in str(b)}
    assert set(users) == {"refunds_owed", "orders_forged"}
    for name, body in users.items():
        assert "${time_sleep.log_metrics}" in depends_on(body), f"{name} does not wait for its log-based metric"
    for m in (root, mon):
        assert one(one(m.terraform)["required_providers"])["time"]["source"] == "hashicorp/time"


# --- 2. The bootstrap apply: nothing IAM-shaped before the APIs, the Pub/Sub agent made first --


def test_every_service_account_waits_for_the_api_enablement(root, modules):
    apis = "${google_project_service.apis}"
    for name, body in root.of_type("google_service_account").items():
        assert apis in depends_on(body), f"google_service_account.{name} does not depend on the API enablement"
    # Accounts made inside modules: every call of such a module depends on the APIs.
    for mod_name, mod in modules.items():
        if not mod.of_type("google_service_account") and not mod.of_type("google_project_service_identity"):
            continue
        calls = [c for c in root.calls.values() if c["source"] == f"./modules/{mod_name}"]
        assert calls, mod_name
        for call in calls:
            assert apis in depends_on(call), f"a call of modules/{mod_name} does not depend on the API enablement"
    # The build account is in the bootstrap's targeted apply: its dependency is what makes the
    # targeted apply enable iam.googleapis.com first.
    assert apis in depends_on(root.resource("google_service_account", "build"))


def test_pubsub_service_agent_is_created_before_it_is_granted(root, modules):
    ps = modules["pubsub"]
    identity = ps.resource("google_project_service_identity", "pubsub")
    assert identity["service"] == "pubsub.googleapis.com"
    assert identity["provider"] in ("google-beta", "${google-beta}")
    # Every grant to the agent goes through the identity, never a hand-built address.
    for m in [root, *modules.values()]:
        for path, leaf in walk(m.resources):
            assert "gcp-sa-pubsub" not in str(leaf), f"{m.path.name}: hand-built service agent address at {path}"
    agent_grants = [b for (t, _), b in ps.resources.items() if "iam" in t and b.get("member") == "${local.pubsub_agent}"]
    assert len(agent_grants) == 3
    # google-beta is declared where it is used and handed to the module.
    assert one(one(ps.terraform)["required_providers"])["google-beta"]["source"] == "hashicorp/google-beta"
    assert one(one(root.terraform)["required_providers"])["google-beta"]["source"] == "hashicorp/google-beta"
    providers = {k: v.strip("${}") for k, v in root.calls["pubsub"]["providers"].items()}
    assert providers == {"google": "google", "google-beta": "google-beta"}


# --- 3. Readiness --------------------------------------------------------------------------------


def test_traffic_waits_for_readiness_and_liveness_ignores_dependencies(modules):
    svc_mod = modules["cloud_run_service"]
    template = one(svc_mod.resource("google_cloud_run_v2_service", "this")["template"])
    app = next(c for c in template["containers"] if c["name"] == "app")
    startup = one(app["startup_probe"])
    assert one(startup["http_get"]) == {"path": "/readyz", "port": 8080}
    period = local_value(svc_mod, startup["period_seconds"])
    threshold = local_value(svc_mod, startup["failure_threshold"])
    budget = local_value(svc_mod, startup["initial_delay_seconds"]) + period * threshold
    # Several minutes (Direct VPC egress may take one), within Cloud Run's 240 s cap on
    # period x threshold; a ready instance waits at most one period.
    assert 180 <= period * threshold <= 240 and budget >= 180
    assert period <= 5 and startup["timeout_seconds"] <= period
    liveness = one(app["liveness_probe"])
    assert one(liveness["http_get"]) == {"path": "/healthz", "port": 8080}


def test_the_ops_job_retries_within_a_task_timeout(root):
    task = one(one(root.resource("google_cloud_run_v2_job", "ops")["template"])["template"])
    assert task["max_retries"] >= 1
    # Each attempt may spend ~2 minutes connecting, gate-restore waits up to 10 for the books.
    assert 900 <= seconds(task["timeout"]) <= 3600


# --- 5. Operations: the ops job -----------------------------------------------------------------


def test_the_ops_job_can_replay_dead_letters(root, modules):
    env = resolve_keys(root, root.locals["ops_env"])
    secrets = resolve_keys(root, root.locals["ops_secrets"])
    assert {"GOOGLE_CLOUD_PROJECT", "ORDERS_TOPIC", "DEAD_LETTER_SUBSCRIPTION", "EVENT_ID"} <= env
    # The republished messages must carry a signature consume-order accepts: buy's key.
    assert "ORDER_SIGNING_KEY" in secrets and "local.buy_signing_secret" in root.locals["ops_secrets"]
    assert {"REDIS_URL", "DATABASE_URL"} <= secrets
    allowed = rust_env_vars() | {"RUST_LOG"}
    assert env | secrets <= allowed, f"the job gets variables the code does not read: {(env | secrets) - allowed}"
    container = ops_container(root)
    assert str(container["dynamic"]).count("local.ops_env") == 1 and str(container["dynamic"]).count("local.ops_secrets") == 1
    # Its roles: publish to orders, pull and acknowledge on the dead-letter subscription.
    assert root.calls["pubsub"]["publishers"]["ops"] == "${google_service_account.ops.email}"
    assert root.calls["pubsub"]["dead_letter_readers"] == {"ops": "${google_service_account.ops.email}"}
    reader = modules["pubsub"].resource("google_pubsub_subscription_iam_member", "dead_letter_readers")
    assert (reader["subscription"], reader["role"]) == ("${google_pubsub_subscription.dead_letter.name}", "roles/pubsub.subscriber")
    grant = root.resource("google_secret_manager_secret_iam_member", "ops")
    # One grant per secret: a _PREVIOUS key is a version of its current twin's secret.
    assert grant["for_each"] == '${{for k, v in local.ops_secrets : k => v if !endswith(k, "_PREVIOUS")}}'
    assert grant["member"] == "serviceAccount:${google_service_account.ops.email}"
    # It checks a dead letter's own signature with buy's key and, once a rotation is no longer
    # staged, the one before it: never a version the rotation has disabled.
    ops_secrets = str(root.locals["ops_secrets"])
    assert "ORDER_SIGNING_KEY_PREVIOUS" in ops_secrets and "!var.order_signing_key.staged" in ops_secrets
    assert "local.signing_generation - 1" in ops_secrets


def test_every_workload_names_its_project(root, modules):
    """GOOGLE_CLOUD_PROJECT names the project in the logs' trace field: all three services (the
    module sets it) and the job."""
    template = one(modules["cloud_run_service"].resource("google_cloud_run_v2_service", "this")["template"])
    app = next(c for c in template["containers"] if c["name"] == "app")
    assert {"name": "GOOGLE_CLOUD_PROJECT", "value": "${var.project_id}"} in app["env"]
    assert "GOOGLE_CLOUD_PROJECT = var.project_id" in root.locals["ops_env"]
    # Set once per service: a caller setting it too would make a duplicate variable.
    for name, call in service_calls(root).items():
        assert "GOOGLE_CLOUD_PROJECT" not in str(call["env"]), name


def test_audit_runs_on_a_schedule_with_its_own_identity(root, modules):
    sched = root.resource("google_cloud_scheduler_job", "ops_audit")
    assert sched["schedule"] == "${var.ops_audit_schedule}"
    target = one(sched["http_target"])
    assert target["http_method"] == "POST"
    assert target["uri"] == (
        "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/"
        "${google_cloud_run_v2_job.ops.name}:run"
    )
    assert '"audit"' in target["body"] and "containerOverrides" in target["body"]
    token = one(target["oauth_token"])
    assert token["service_account_email"] == "${google_service_account.scheduler.email}"
    assert token["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    grant = root.resource("google_cloud_run_v2_job_iam_member", "scheduler")
    assert grant["name"] == "${google_cloud_run_v2_job.ops.name}"
    assert grant["role"] == "roles/run.jobsExecutorWithOverrides"
    assert grant["member"] == "serviceAccount:${google_service_account.scheduler.email}"
    assert "cloudscheduler.googleapis.com" in root.locals["apis"]
    # A failed execution (audit exits 1 on a broken invariant) pages.
    failed = modules[MON].resource("google_monitoring_alert_policy", "ops_job_failed")
    cond = one(one(failed["conditions"])["condition_threshold"])
    assert "run.googleapis.com/job/completed_execution_count" in cond["filter"]
    assert 'metric.labels.result = \\"failed\\"' in cond["filter"] or 'metric.labels.result = "failed"' in cond["filter"]
    assert root.calls[MON]["ops_job"] == "${google_cloud_run_v2_job.ops.name}"


def test_a_database_failover_dead_letters_nothing(modules):
    ps = modules["pubsub"]
    attempts = ps.variables["max_delivery_attempts"]["default"]
    backoff = ps.variables["minimum_backoff_seconds"]["default"]
    sub = ps.resource("google_pubsub_subscription", "push")
    assert one(sub["retry_policy"])["minimum_backoff"] == "${var.minimum_backoff_seconds}s"
    assert one(sub["dead_letter_policy"])["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    # Even if Pub/Sub never grew the backoff, one message's deliveries span at least
    # (attempts - 1) x minimum_backoff: at least twice a one-minute failover.
    assert (attempts - 1) * backoff >= 2 * 60
    # The arithmetic is written down next to the policy, with these numbers.
    text = (TF / "modules" / "pubsub" / "main.tf").read_text(encoding="utf-8")
    assert f"{attempts - 1} x {backoff} s = {(attempts - 1) * backoff} s" in text
    # consume-order's 503s page only when they outlast a failover.
    mon = modules[MON]
    c503 = one(one(mon.resource("google_monitoring_alert_policy", "consume_order_503")["conditions"])["condition_threshold"])
    assert 'response_code = \\"503\\"' in c503["filter"] or 'response_code = "503"' in c503["filter"]
    assert c503["duration"] == "${var.thresholds.consume_503_minutes * 60}s"
    assert "var.alerts.consume_503_minutes >= 3" in str(load_root_variable("alerts")["validation"])


def load_root_variable(name: str) -> dict:
    from conftest import load_module

    return load_module(TF).variables[name]


# --- 5. State, secrets, signing-key rotation -----------------------------------------------------


def test_state_lives_in_a_gcs_backend_configured_by_the_deploy(root):
    block = one(root.terraform)
    backend = block["backend"]
    assert isinstance(backend, list) and len(backend) == 1 and set(backend[0]) >= {"gcs"}
    # Partial configuration: the bucket and prefix come from scripts/deploy's -backend-config.
    assert {k: v for k, v in backend[0]["gcs"].items() if not k.startswith("__")} == {}
    deploy = (REPO / "scripts" / "deploy").read_text(encoding="utf-8")
    assert '"-backend-config=bucket=$STATE_BUCKET"' in deploy
    assert "--versioning" in deploy and "--uniform-bucket-level-access" in deploy


def test_secrets_are_read_by_pinned_version(root, modules):
    for m in [root, *modules.values()]:
        for tf in m.path.glob("*.tf"):
            text = tf.read_text(encoding="utf-8")
            assert not re.search(r'version\s*=\s*"latest"', text), f"{tf.name} reads a secret at latest"
    svc = modules["cloud_run_service"]
    assert "latest" in str(svc.variables["secret_env"]["validation"])
    outputs = {
        "redis": ("redis_url_secret", "google_secret_manager_secret_version.redis_url.version"),
        "database": ("database_url_secret", "google_secret_manager_secret_version.database_url[0].version"),
    }
    for mod, (out, ref) in outputs.items():
        assert ref in str(modules[mod].outputs[out]["value"]), f"{mod}.{out} is not pinned"


def test_the_signing_key_rotates_without_refusing_messages(root):
    calls = service_calls(root)
    assert calls["buy"]["secret_env"] == "${merge(local.redis_secret, local.buy_signing_secret, local.buy_room_secret)}"
    assert "local.consumer_signing_secret" in calls["consume-order"]["secret_env"]
    consumer = root.locals["consumer_signing_secret"]
    assert "ORDER_SIGNING_KEY = local.signing_key[tostring(local.signing_generation)]" in consumer
    assert "ORDER_SIGNING_KEY_PREVIOUS = local.signing_key[tostring(local.signing_generation - 1)]" in consumer
    # Staged: consume-order trusts the new key before buy signs with it.
    assert root.locals["signing_buy_generation"] == (
        "${var.order_signing_key.staged ? local.signing_generation - 1 : local.signing_generation}"
    )
    # consume-order reads the _PREVIOUS key (and its one grant covers both versions).
    assert '"ORDER_SIGNING_KEY_PREVIOUS"' in (REPO / "functions/consume-order/src/lib.rs").read_text(encoding="utf-8")
    # The key of earlier rounds stays generation 1 (no new key on upgrade), older ones are disabled.
    moved = {(b["from"], b["to"]) for b in hcl2.load(open(TF / "services.tf", encoding="utf-8")).get("moved", [])}
    assert ("${random_password.order_signing_key}", '${random_password.order_signing_key["1"]}') in moved
    version = root.resource("google_secret_manager_secret_version", "order_signing_key")
    assert version["enabled"] == "${tonumber(each.key) >= local.signing_generation - 1}"
    assert root.variables["order_signing_key"].get("validation")


def test_forged_messages_are_counted_and_alerted(modules):
    mon = modules[MON]
    line = mon.locals["forged_log_line"]
    src = (REPO / "functions/consume-order/src/lib.rs").read_text(encoding="utf-8")
    assert f'"{line}"' in src, "consume-order no longer logs this line: the metric would count nothing"
    metric = mon.resource("google_logging_metric", "orders_forged")
    assert "${local.forged_log_line}" in metric["filter"]
    policy = mon.resource("google_monitoring_alert_policy", "orders_forged")
    assert "${google_logging_metric.orders_forged.name}" in str(policy["conditions"])


# --- 5. Postgres over TLS --------------------------------------------------------------------------


def test_postgres_requires_tls_verified_against_the_instance_ca(root, modules):
    db = modules["database"]
    ip = one(one(db.resource("google_sql_database_instance", "postgres")["settings"])["ip_configuration"])
    assert ip["ssl_mode"] == "ENCRYPTED_ONLY"
    assert ip["server_ca_mode"] == "GOOGLE_MANAGED_INTERNAL_CA"
    for tf in TF.rglob("*.tf"):
        assert "ALLOW_UNENCRYPTED" not in tf.read_text(encoding="utf-8"), tf
    url = db.resource("google_secret_manager_secret_version", "database_url")["secret_data"]
    assert url.endswith("?sslmode=require")
    assert "data.google_sql_ca_certs.postgres[0].certs" in db.outputs["server_ca_cert"]["value"]
    assert "DATABASE_CA_CERT = module.database.server_ca_cert" in root.locals["database_env"]
    # The job gets it too (database_env), and consume-order.
    assert "local.database_env" in root.locals["ops_env"]
    assert "local.database_env" in service_calls(root)["consume-order"]["env"]


# --- 5. Public services without allUsers ---------------------------------------------------------


def test_lb_fronted_services_skip_the_invoker_check_instead_of_allusers(root, modules):
    calls = service_calls(root)
    for name in ("check-availability", "buy"):
        assert calls[name]["invoker_iam_disabled"] is True
        assert calls[name]["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    svc_mod = modules["cloud_run_service"]
    service = svc_mod.resource("google_cloud_run_v2_service", "this")
    assert service["invoker_iam_disabled"] == "${var.invoker_iam_disabled}"
    assert svc_mod.variables["invoker_iam_disabled"]["default"] is False
    # Never with an ingress that admits more than the load balancer.
    pre = one(one(service["lifecycle"])["precondition"])
    assert 'var.ingress == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"' in pre["condition"]


# --- 5. CDN lifetimes ----------------------------------------------------------------------------


def test_the_cdn_honours_immutable_assets(modules):
    policy = one(modules["edge"].resource("google_compute_backend_bucket", "site")["cdn_policy"])
    deploy = (REPO / "scripts" / "deploy").read_text(encoding="utf-8")
    max_age = int(re.search(r"max-age=(\d+), immutable", deploy).group(1))
    assert max_age >= 31536000
    if policy["cache_mode"] != "USE_ORIGIN_HEADERS":
        # Any cap must not cut the upload's max-age short.
        assert policy.get("max_ttl", 0) >= max_age and policy.get("client_ttl", 0) >= max_age
    else:
        assert not {"max_ttl", "client_ttl", "default_ttl"} & set(policy)
    bucket = modules["edge"].resource("google_storage_bucket", "site")
    assert one(bucket["website"])["not_found_page"] == "404.html"
    # The pages (index.html, 404.html) are uploaded with no-cache, never with the assets' header.
    assert "--cache-control=no-cache" in deploy and "'--exclude=.*\\.html$'" in deploy


# --- 5. The example var file and the README ------------------------------------------------------


def test_the_example_var_file_keeps_consume_order_running(root):
    example = hcl2.load(open(TF / "terraform.tfvars.example", encoding="utf-8"))
    for name in example:
        if not name.startswith("__"):
            assert name in root.variables, f"terraform.tfvars.example sets undeclared {name}"
    assert example["services"]["consume-order"]["min_instances"] >= 1
    assert "consume-order" in str(root.variables["services"]["validation"]) and "min_instances >= 1" in str(
        root.variables["services"]["validation"]
    )
    assert example["alert_notifications"]["email"]
    text = (TF / "terraform.tfvars.example").read_text(encoding="utf-8")
    assert "needs TLS support" not in text and "until then" not in text


def test_the_readme_does_not_contradict_the_code():
    readme = (TF / "README.md").read_text(encoding="utf-8")
    for stale in [
        "allUsers`",  # the invoker check is off instead
        "scales to zero",  # consume-order keeps an instance (gate watcher, refunder)
        "5 failures",  # max_delivery_attempts is 15
        "optional e-mail channel",  # a recipient is required
        "ALLOW_UNENCRYPTED",
    ]:
        assert stale not in readme, f"terraform/README.md still says {stale!r}"


# --- 6. Metrics and alerts ------------------------------------------------------------------------


def test_services_run_the_managed_prometheus_sidecar(root, modules):
    svc_mod = modules["cloud_run_service"]
    template = one(svc_mod.resource("google_cloud_run_v2_service", "this")["template"])
    names = [c["name"] for c in template["containers"]]
    assert names == ["app", "collector"]
    app, collector = template["containers"]
    assert one(app["ports"]) == {"container_port": 8080}, "the sidecar scrapes :8080/metrics"
    assert "ports" not in collector, "only the ingress container has a port"
    assert collector["image"] == "${var.metrics_sidecar.image}"
    assert collector["depends_on"] == ["app"]
    assert "cloud-run-gmp-sidecar" in root.variables["metrics_sidecar"]["type"]
    writer = svc_mod.resource("google_project_iam_member", "metric_writer")
    assert writer["role"] == "roles/monitoring.metricWriter"
    assert writer["member"] == "serviceAccount:${google_service_account.this.email}"
    # The metrics exist: the Rust serves /metrics on the same router as /healthz.
    assert '.route("/metrics"' in (REPO / "shared/web/src/http.rs").read_text(encoding="utf-8")


# Local alerts whose cloud equivalent is not a PromQL twin but an alert on Google's own metrics.
COVERED_OTHERWISE = {
    "ReserveLatencySLO": "latency_p95 (buy, run.googleapis.com/request_latencies)",
    "AvailabilityLatencySLO": "latency_p95 (check-availability)",
}


def test_every_local_prometheus_alert_has_a_cloud_twin(modules):
    rules = (REPO / "emulators" / "prometheus" / "rules.yml").read_text(encoding="utf-8")
    local_alerts = set(re.findall(r"^\s*- alert: (\w+)", rules, re.M))
    assert local_alerts
    twins = modules[MON].locals["prometheus_rules"]
    assert local_alerts == set(twins) | set(COVERED_OTHERWISE), "rules.yml and modules/monitoring/prometheus.tf disagree"
    # Every metric a twin queries is one the Rust exports (or Google's, name_with_colons).
    exported = set()
    for rs in list((REPO / "functions").rglob("src/*.rs")) + list((REPO / "shared").rglob("src/**/*.rs")):
        exported |= set(re.findall(r'(?:counter|gauge|histogram)!\(\s*"(\w+)"', rs.read_text(encoding="utf-8")))
    for name, rule in twins.items():
        for metric in re.findall(r"\b([a-z_]+(?:_total|_seconds|_delta|_messages))\b", rule["query"]):
            if ":" in metric or metric.startswith("subscription_"):
                continue
            assert metric in exported, f"{name} queries {metric}, which no function exports"
    policy = modules[MON].resource("google_monitoring_alert_policy", "prometheus")
    assert policy["for_each"] == "${local.prometheus_rules}"
    cond = one(one(policy["conditions"])["condition_prometheus_query_language"])
    assert cond["query"] == "${each.value.query}" and cond["alert_rule"] == "${each.key}"


def test_the_platform_is_watched(modules):
    mon = modules[MON]
    policies = {n: str(b) for n, b in mon.of_type("google_monitoring_alert_policy").items()}
    usage = mon.locals["cloudsql_usage"]
    assert {u["metric"] for u in usage.values()} == {
        "cloudsql.googleapis.com/database/cpu/utilization",
        "cloudsql.googleapis.com/database/memory/utilization",
        "cloudsql.googleapis.com/database/disk/utilization",
    }
    assert "cloudsql.googleapis.com/database/up" in policies["cloudsql_down"]
    assert "spanner.googleapis.com/instance/cpu/utilization_by_priority" in policies["spanner_cpu"]
    assert "loadbalancing.googleapis.com/https/request_count" in policies["lb_5xx"]
    assert "response_code_class = 500" in policies["lb_5xx"]
    for name in ["consume_order_503", "orders_forged", "ops_job_failed", "dead_letters", "push_backlog_age"]:
        assert name in policies


def test_no_alert_is_silent(root, modules):
    var = root.variables["alert_notifications"]
    assert "default" not in var, "alert_notifications must be required"
    assert "length(var.alert_notifications.channels) > 0" in str(var["validation"])
    assert "notification_channels" not in root.variables and "alert_email" not in root.variables
    mon = modules[MON]
    assert "default" not in mon.variables["notifications"]
    for name, body in mon.of_type("google_monitoring_alert_policy").items():
        assert body["notification_channels"] == "${local.channels}", name
    assert mon.locals["channels"] == "${concat(var.notifications.channels, google_monitoring_notification_channel.email[*].id)}"


def test_the_docs_tell_the_operator_commands():
    text = (REPO / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    for needle in [
        "First-deploy checklist",
        "--args=dead-letters,--replay",
        "ops-audit",
        "order_signing_key",
        "tfstate",
        "404.html",
    ]:
        assert needle in text, f"docs/DEPLOY.md lacks {needle!r}"
