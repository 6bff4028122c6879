"""The wiring `terraform validate` cannot check here (no provider download) and a reviewer would:
identities, who may invoke what, Pub/Sub delivery, the load balancer's routes against the
functions' own routers, and the environment variables against the code's config structs."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, TF, Module, one, rust_env_vars, rust_routes, walk

FUNCTIONS = ["check-availability", "buy", "consume-order"]
PUBLIC = ["check-availability", "buy"]


def service_calls(root: Module) -> dict[str, dict]:
    """Function name → its module call in the root (source ./modules/cloud_run_service)."""
    calls = {
        body["name"]: body
        for body in root.calls.values()
        if body.get("source") == "./modules/cloud_run_service"
    }
    assert sorted(calls) == sorted(FUNCTIONS)
    return calls


def resolve_keys(root: Module, value) -> set[str]:
    """Environment variable names a module argument (a map, a local, a merge of locals) can hold."""
    if isinstance(value, dict):
        return set(value)
    names: set[str] = set()
    text = str(value)
    names.update(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\s*=", text))
    for ref in re.findall(r"local\.([a-z_]+)", text):
        names |= resolve_keys(root, root.locals[ref])
    return names


# --- Layout -------------------------------------------------------------------------------------


def test_every_module_has_the_usual_files(modules):
    for path in [TF, *[m.path for m in modules.values()]]:
        for name in ["versions.tf", "variables.tf", "outputs.tf", "main.tf"]:
            assert (path / name).is_file(), f"{path.relative_to(REPO)} lacks {name}"
    assert (TF / "terraform.tfvars.example").is_file()
    assert (TF / "README.md").is_file()


def test_every_variable_and_output_is_described(root, modules):
    for m in [root, *modules.values()]:
        for kind, items in [("variable", m.variables), ("output", m.outputs)]:
            for name, body in items.items():
                assert str(body.get("description", "")).strip(), f"{m.path.name}: {kind} {name} has no description"


def test_root_inputs_are_validated(root):
    for name in ["project_id", "region", "name_prefix", "domain", "image_tag", "database", "redis", "services", "armor", "postgres"]:
        assert root.variables[name].get("validation"), f"variable {name} has no validation block"


def test_google_provider_is_pinned_to_6(root):
    google = one(one(root.terraform)["required_providers"])["google"]
    assert google["source"] == "hashicorp/google"
    assert re.fullmatch(r"~> 6\.\d+", google["version"]), google["version"]


# --- Cloud Run ----------------------------------------------------------------------------------


def test_every_cloud_run_service_has_its_own_service_account(root, modules):
    svc_module = modules["cloud_run_service"]
    service = svc_module.resource("google_cloud_run_v2_service", "this")
    assert one(service["template"])["service_account"] == "${google_service_account.this.email}"
    assert svc_module.resource("google_service_account", "this")["account_id"] == "fn-${var.name}"
    # Three instances of the module, so three accounts: fn-check-availability, fn-buy, fn-consume-order.
    calls = service_calls(root)
    assert len({c["name"] for c in calls.values()}) == 3
    # No Cloud Run service is defined anywhere else (it would escape these rules).
    for m in [root, *modules.values()]:
        if m is not svc_module:
            assert not m.of_type("google_cloud_run_v2_service"), f"{m.path.name} defines a Cloud Run service"
    # The ops job has its own identity too.
    job = root.resource("google_cloud_run_v2_job", "ops")
    assert one(one(job["template"])["template"])["service_account"] == "${google_service_account.ops.email}"


def test_services_are_sized_and_reach_the_vpc(modules):
    template = one(modules["cloud_run_service"].resource("google_cloud_run_v2_service", "this")["template"])
    assert template["max_instance_request_concurrency"] == "${var.scaling.concurrency}"
    assert template["timeout"] == "${var.scaling.timeout_seconds}s"
    scaling = one(template["scaling"])
    assert scaling == {"min_instance_count": "${var.scaling.min_instances}", "max_instance_count": "${var.scaling.max_instances}"}
    vpc = one(template["vpc_access"])
    assert vpc["egress"] == "PRIVATE_RANGES_ONLY"
    assert one(vpc["network_interfaces"])["subnetwork"] == "${var.vpc.subnetwork}"
    app = next(c for c in template["containers"] if c["name"] == "app")
    resources = one(app["resources"])
    assert resources["startup_cpu_boost"] is True
    assert resources["cpu_idle"] == "${var.cpu_idle}"


def test_background_tasks_keep_their_cpu(root):
    calls = service_calls(root)
    # buy's outbox relay, check-availability's snapshot refresher and consume-order's gate
    # watcher run between requests.
    assert calls["buy"]["cpu_idle"] is False
    assert calls["check-availability"]["cpu_idle"] is False
    assert calls["consume-order"]["cpu_idle"] is False


def test_no_service_is_open_to_the_internet_directly(root, modules):
    calls = service_calls(root)
    for name in PUBLIC:
        assert calls[name]["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert calls["consume-order"]["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    validation = str(modules["cloud_run_service"].variables["ingress"]["validation"])
    assert "INGRESS_TRAFFIC_ALL" not in validation


def invoker_grants(root: Module, modules: dict[str, Module]) -> list[tuple[str, str, dict]]:
    grants = []
    for m in [root, *modules.values()]:
        for (rtype, name), body in m.resources.items():
            if rtype.startswith("google_cloud_run") and "iam" in rtype:
                grants.append((m.path.name, name, body))
    return grants


def test_consume_order_is_invoked_only_by_the_push_identity(root, modules):
    calls = service_calls(root)
    # Cloud Run has verified the caller: the service must not expect the local ?token=.
    assert re.search(r'PUSH_AUTH = "iam"', calls["consume-order"]["env"])
    grants = invoker_grants(root, modules)
    # Only _member grants: a _binding or _policy would silently replace other members.
    for m in [root, *modules.values()]:
        for rtype, _ in m.resources:
            if rtype.startswith("google_cloud_run") and "iam" in rtype:
                assert rtype.endswith("_member"), rtype
    # No public grant at all: the LB-fronted services skip the invoker check instead (the
    # domain-restricted-sharing organisation policy refuses allUsers).
    assert not [(f, n) for f, n, b in grants if b.get("member") in ("allUsers", "allAuthenticatedUsers")]
    assert calls["consume-order"]["invoker_iam_disabled"] is False
    push = modules["pubsub"].resource("google_cloud_run_v2_service_iam_member", "push_invoker")
    assert push["role"] == "roles/run.invoker"
    assert push["member"] == "serviceAccount:${google_service_account.push.email}"
    assert push["name"] == "${var.push_service.name}"
    assert root.calls["pubsub"]["push_service"]["name"] == "${module.consume_order.name}"
    # The other grant: Cloud Scheduler may run the ops job (scheduled audit), not a service.
    assert sorted((f, n) for f, n, _ in grants) == [("pubsub", "push_invoker"), ("terraform", "scheduler")]


def test_public_access_only_where_intended(root, modules):
    intended = {
        ("edge", "google_storage_bucket_iam_member", "site_public"),  # the static site
    }
    found = set()
    for m in [root, *modules.values()]:
        for (rtype, name), body in m.resources.items():
            for _, leaf in walk(body):
                if isinstance(leaf, str) and re.search(r"\ballUsers\b|\ballAuthenticatedUsers\b", leaf):
                    found.add((m.path.name, rtype, name))
    assert found == intended
    site = modules["edge"].resource("google_storage_bucket_iam_member", "site_public")
    assert site["role"] == "roles/storage.objectViewer"


def test_secrets_are_granted_one_by_one(root, modules):
    svc = modules["cloud_run_service"]
    grant = svc.resource("google_secret_manager_secret_iam_member", "this")
    # One grant per secret: a _PREVIOUS key is a version of its current twin's secret.
    assert grant["for_each"] == '${{for k, v in var.secret_env : k => v if !endswith(k, "_PREVIOUS")}}'
    assert grant["secret_id"] == "${each.value.secret}"
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    for m in [root, *modules.values()]:
        for (rtype, name), body in m.resources.items():
            if rtype.startswith("google_project_iam"):
                assert "secretmanager" not in str(body.get("role")), f"project-wide secret access: {name}"
                assert body.get("role") not in ("roles/owner", "roles/editor"), f"broad role: {name}"
    calls = service_calls(root)
    assert resolve_keys(root, calls["check-availability"]["secret_env"]) == {"REDIS_URL"}
    # The signing key (ADR 40): buy signs, consume-order checks; nobody else reads it. buy
    # also checks its admission tokens, with the key before during a rotation (ADR 59).
    assert resolve_keys(root, calls["buy"]["secret_env"]) == {
        "REDIS_URL",
        "ORDER_SIGNING_KEY",
        "ORDER_SIGNING_KEY_PREVIOUS",
    }
    assert resolve_keys(root, calls["consume-order"]["secret_env"]) == {
        "REDIS_URL",
        "DATABASE_URL",
        "ORDER_SIGNING_KEY",
        "ORDER_SIGNING_KEY_PREVIOUS",
    }


def module_env(modules: dict[str, Module]) -> set[str]:
    """Variables the cloud_run_service module sets on every service itself."""
    app = next(
        c
        for c in one(modules["cloud_run_service"].resource("google_cloud_run_v2_service", "this")["template"])["containers"]
        if c["name"] == "app"
    )
    return {e["name"] for e in app["env"]}


def test_environment_matches_the_code(root, modules):
    known = rust_env_vars()
    allowed = known | {"RUST_LOG"}
    calls = service_calls(root)
    env = {
        name: resolve_keys(root, c["env"]) | resolve_keys(root, c["secret_env"]) | module_env(modules)
        for name, c in calls.items()
    }
    for name, names in env.items():
        assert names <= allowed, f"{name} gets variables the code does not read: {names - allowed}"
    required = {
        "check-availability": {"REDIS_URL", "GOOGLE_CLOUD_PROJECT"},
        "buy": {"REDIS_URL", "GOOGLE_CLOUD_PROJECT", "ORDERS_TOPIC"},
        "consume-order": {"REDIS_URL", "DATABASE_URL", "DATABASE_CA_CERT", "PUSH_AUTH", "GOOGLE_CLOUD_PROJECT"},
    }
    for name, need in required.items():
        assert need <= env[name], f"{name} lacks {need - env[name]}"
    assert "PUBSUB_EMULATOR_HOST" not in str(root.calls)
    # PORT is Cloud Run's to set: the container port is 8080 and so is the code's default.
    assert "PORT" not in set().union(*env.values())


def test_ops_job_runs_the_consume_order_image(root):
    job = root.resource("google_cloud_run_v2_job", "ops")
    assert job["name"] == "ops"
    container = one(one(one(job["template"])["template"])["containers"])
    assert container["image"] == '${local.images["consume-order"]}'
    assert container["command"] == ["/ops"]
    assert container["args"] == ["migrate"]
    assert one(one(one(job["template"])["template"])["vpc_access"])["egress"] == "PRIVATE_RANGES_ONLY"


# --- Pub/Sub ------------------------------------------------------------------------------------


def test_push_subscription_uses_oidc_and_dead_letters(modules):
    ps = modules["pubsub"]
    sub = ps.resource("google_pubsub_subscription", "push")
    push = one(sub["push_config"])
    assert push["push_endpoint"] == "${var.push_service.uri}/pubsub/orders"
    oidc = one(push["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.push.email}"
    assert oidc["audience"] == "${var.push_service.uri}"
    dl = one(sub["dead_letter_policy"])
    assert dl["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert dl["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    assert one(sub["retry_policy"]) == {"minimum_backoff": "${var.minimum_backoff_seconds}s", "maximum_backoff": "60s"}
    assert ps.variables["ack_deadline_seconds"]["default"] >= 30
    assert ps.resource("google_pubsub_topic", "orders")["name"] == "orders"
    assert ps.resource("google_pubsub_topic", "dead_letter")["name"] == "orders-dead-letter"
    dl_sub = ps.resource("google_pubsub_subscription", "dead_letter")
    assert dl_sub["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert "push_config" not in dl_sub, "the dead-letter subscription is pulled by operators"
    for s in (sub, dl_sub):
        assert one(s["expiration_policy"]) == {"ttl": ""}, "subscriptions must not expire when quiet"


def test_pubsub_service_agent_can_dead_letter_and_sign(modules):
    ps = modules["pubsub"]
    # The agent's address comes from the identity resource, which makes Google create it.
    assert ps.locals["pubsub_agent"] == "serviceAccount:${google_project_service_identity.pubsub.email}"
    pub = ps.resource("google_pubsub_topic_iam_member", "agent_dead_letter_publisher")
    assert (pub["topic"], pub["role"], pub["member"]) == (
        "${google_pubsub_topic.dead_letter.name}",
        "roles/pubsub.publisher",
        "${local.pubsub_agent}",
    )
    sub = ps.resource("google_pubsub_subscription_iam_member", "agent_push_subscriber")
    assert (sub["subscription"], sub["role"], sub["member"]) == (
        "${google_pubsub_subscription.push.name}",
        "roles/pubsub.subscriber",
        "${local.pubsub_agent}",
    )
    tok = ps.resource("google_service_account_iam_member", "agent_token_creator")
    assert (tok["service_account_id"], tok["role"], tok["member"]) == (
        "${google_service_account.push.name}",
        "roles/iam.serviceAccountTokenCreator",
        "${local.pubsub_agent}",
    )


def test_only_buy_and_the_replay_publish_orders(root, modules):
    pub = modules["pubsub"].resource("google_pubsub_topic_iam_member", "publishers")
    assert pub["topic"] == "${google_pubsub_topic.orders.name}"
    assert pub["role"] == "roles/pubsub.publisher"
    # buy, and the ops job republishing dead letters (signed with buy's key).
    assert root.calls["pubsub"]["publishers"] == {
        "buy": "${module.buy.service_account_email}",
        "ops": "${google_service_account.ops.email}",
    }


# --- Load balancer ------------------------------------------------------------------------------


def test_lb_routes_match_the_functions_routes(modules):
    edge = modules["edge"]
    routes = edge.locals["api_routes"]
    in_tf = {(r["method"], re.sub(r"\{(\w+)=\*\}", r"{\1}", r["path"]), r["backend"]) for r in routes}
    in_code = {
        (method, path, fn)
        for fn in PUBLIC
        for method, path in rust_routes(REPO / "functions" / fn)
    }
    assert in_tf == in_code
    # The push endpoint is never reachable through the load balancer.
    assert rust_routes(REPO / "functions" / "consume-order") == {("POST", "/pubsub/orders")}
    assert "/pubsub" not in str(edge.resources)
    # Unique priorities; a longer path under a shorter one's prefix is matched first.
    prios = [r["priority"] for r in routes]
    assert len(set(prios)) == len(prios)
    for a in routes:
        for b in routes:
            if a is not b and a["path"].startswith(b["path"] + "/"):
                assert a["priority"] < b["priority"], f"{a['path']} must win over {b['path']}"


def test_url_map_uses_the_routes_with_method_and_template(modules):
    edge = modules["edge"]
    url_map = edge.resource("google_compute_url_map", "https")
    matcher = one(url_map["path_matcher"])
    assert matcher["default_service"] == "${google_compute_backend_bucket.site.id}"
    dyn = one(matcher["dynamic"])["route_rules"]
    assert dyn["for_each"] == "${local.api_routes}"
    content = one(dyn["content"])
    assert content["service"] == "${google_compute_backend_service.api[route_rules.value.backend].id}"
    match = one(content["match_rules"])
    assert match["path_template_match"] == "${route_rules.value.path}"
    assert one(match["header_matches"]) == {"header_name": ":method", "exact_match": "${route_rules.value.method}"}
    fallback = one(matcher["route_rules"])
    assert fallback["priority"] > max(r["priority"] for r in edge.locals["api_routes"])
    assert one(fallback["match_rules"]) == {"prefix_match": "/v1/"}


def test_lb_is_https_with_cdn_armor_and_redirect(modules):
    edge = modules["edge"]
    https = edge.resource("google_compute_global_forwarding_rule", "https")
    assert (https["port_range"], https["load_balancing_scheme"]) == ("443", "EXTERNAL_MANAGED")
    http = edge.resource("google_compute_global_forwarding_rule", "http")
    assert http["target"] == "${google_compute_target_http_proxy.redirect.id}"
    redirect = one(edge.resource("google_compute_url_map", "http_redirect")["default_url_redirect"])
    assert redirect["https_redirect"] is True
    cert = edge.resource("google_compute_managed_ssl_certificate", "site")
    assert one(cert["managed"])["domains"] == ["${var.domain}"]
    bucket = edge.resource("google_compute_backend_bucket", "site")
    assert bucket["enable_cdn"] is True
    backend = edge.resource("google_compute_backend_service", "api")
    assert backend["security_policy"] == "${google_compute_security_policy.api.id}"
    assert backend["load_balancing_scheme"] == "EXTERNAL_MANAGED"
    neg = edge.resource("google_compute_region_network_endpoint_group", "api")
    assert neg["network_endpoint_type"] == "SERVERLESS"
    assert edge.resource("google_compute_target_https_proxy", "site")["ssl_policy"] == "${google_compute_ssl_policy.modern.id}"


def test_armor_filters_before_it_rate_limits(modules):
    policy = modules["edge"].resource("google_compute_security_policy", "api")
    rules = sorted(policy["rule"], key=lambda r: int(r["priority"]))
    actions = [r["action"] for r in rules]
    # Denials first: a rate-limit rule's "allow when under the limit" ends the evaluation.
    first_limit = next(i for i, a in enumerate(actions) if a in ("rate_based_ban", "throttle"))
    assert all(a.startswith("deny") for a in actions[:first_limit])
    assert any("cve-canary" in str(r["match"]) for r in rules[:first_limit])
    assert sum("evaluatePreconfiguredWaf" in str(r["match"]) for r in rules[:first_limit]) >= 3
    ban = next(r for r in rules if r["action"] == "rate_based_ban")
    assert "request.method == 'POST'" in str(ban["match"])
    opts = one(ban["rate_limit_options"])
    assert opts["enforce_on_key"] == "IP"
    assert opts["exceed_action"] == "deny(429)"
    assert one(opts["rate_limit_threshold"])["count"] == "${var.armor.buy_limit_count}"
    assert opts["ban_duration_sec"] == "${var.armor.ban_duration_sec}"
    assert rules[-1]["priority"] == 2147483647 and rules[-1]["action"] == "allow"


# --- Data stores --------------------------------------------------------------------------------


def test_redis_is_ha_authenticated_and_encrypted(root, modules):
    redis = modules["redis"].resource("google_redis_instance", "gate")
    assert redis["auth_enabled"] is True
    assert redis["transit_encryption_mode"] == "${var.transit_encryption_mode}"
    assert redis["connect_mode"] == "PRIVATE_SERVICE_ACCESS"
    assert redis["redis_configs"]["maxmemory-policy"] == "noeviction"
    redis_type = root.variables["redis"]["type"]
    assert 'tier = optional(string, "STANDARD_HA")' in redis_type
    assert 'transit_encryption_mode = optional(string, "SERVER_AUTHENTICATION")' in redis_type
    url = modules["redis"].locals["redis_url"]
    assert "google_redis_instance.gate.auth_string" in url


def test_database_is_chosen_by_a_variable(root, modules):
    db = modules["database"]
    assert root.calls["database"]["engine"] == "${var.database}"
    pg = db.resource("google_sql_database_instance", "postgres")
    assert pg["count"] == "${local.postgres ? 1 : 0}"
    ip = one(one(pg["settings"])["ip_configuration"])
    assert ip["ipv4_enabled"] is False and ip["private_network"] == "${var.network_id}"
    assert db.resource("google_spanner_instance", "this")["count"] == "${local.spanner ? 1 : 0}"
    assert db.resource("google_spanner_database_iam_member", "users")["role"] == "roles/spanner.databaseUser"
    assert "SPANNER_DATABASE" in str(root.locals["database_env"])
    assert set(root.calls["database"]["database_users"]) == {"consume-order", "ops"}
    # Only the ops job changes the Spanner schema (ops migrate).
    assert db.resource("google_spanner_database_iam_member", "schema_admins")["role"] == "roles/spanner.databaseAdmin"
    assert set(root.calls["database"]["schema_admins"]) == {"ops"}


def test_everything_can_be_destroyed(root, modules):
    assert root.variables["deletion_protection"]["default"] is False
    svc = modules["cloud_run_service"].resource("google_cloud_run_v2_service", "this")
    assert svc["deletion_protection"] == "${var.deletion_protection}"
    assert root.resource("google_cloud_run_v2_job", "ops")["deletion_protection"] == "${var.deletion_protection}"
    assert modules["network"].resource("google_service_networking_connection", "psa")["deletion_policy"] == "ABANDON"
    assert root.resource("google_storage_bucket", "build_staging")["force_destroy"] is True
    for rtype, name in root.resources:
        if rtype == "google_project_service":
            assert root.resources[(rtype, name)]["disable_on_destroy"] is False


# --- Monitoring ---------------------------------------------------------------------------------


def test_alerts_cover_the_slos(root, modules):
    mon = modules["monitoring"]
    policies = mon.of_type("google_monitoring_alert_policy")
    text = {name: str(body) for name, body in policies.items()}
    cond = one(one(policies["buy_5xx"]["conditions"])["condition_threshold"])
    assert 'metric.labels.response_code_class = "5xx"' in cond["filter"]
    assert 'var.services["buy"]' in cond["filter"] and 'var.services["buy"]' in cond["denominator_filter"]
    assert "5xx" not in cond["denominator_filter"]
    assert "request_latencies" in text["latency_p95"] and "REDUCE_PERCENTILE_95" in text["latency_p95"]
    assert "num_undelivered_messages" in text["dead_letters"]
    assert one(one(policies["dead_letters"]["conditions"])["condition_threshold"])["threshold_value"] == 0
    assert "oldest_unacked_message_age" in text["push_backlog_age"]
    # Refunds owed: consume-order's failed-refund log line, counted and alerted on.
    metric = mon.resource("google_logging_metric", "refunds_failed")
    line = "refund failed; it stays owed and is retried"
    assert line in metric["filter"]
    assert f'"{line}"' in (TF.parent / "functions/consume-order/src/lib.rs").read_text(encoding="utf-8")
    assert "refunds_failed" in text["refunds_owed"]
    assert "redis.googleapis.com/stats/memory/usage_ratio" in text["redis_memory"]
    for name, body in policies.items():
        assert body["notification_channels"] == "${local.channels}", name
    assert root.calls["monitoring"]["notifications"] == "${var.alert_notifications}"


# --- Hygiene ------------------------------------------------------------------------------------


def test_checkov_skips_are_explained():
    skips = []
    for tf in TF.rglob("*.tf"):
        if ".terraform" in tf.parts:
            continue
        for line in tf.read_text(encoding="utf-8").splitlines():
            if "checkov:skip" in line:
                skips.append((tf.name, line.strip()))
    assert skips
    for name, line in skips:
        m = re.fullmatch(r"#checkov:skip=CKV2?_[A-Z]+_\d+:(.+)", line)
        assert m and len(m.group(1).strip()) >= 20, f"{name}: skip without a reason: {line}"


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_dockerfile_builds_the_crate_and_runs_as_non_root(fn):
    text = (REPO / "functions" / fn / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG RUST_IMAGE=rust:\S+", text, re.M)
    assert re.search(r"^ARG RUNTIME_IMAGE=gcr\.io/distroless/cc-debian\d+:nonroot$", text, re.M)
    assert re.search(rf"cargo build --release --locked -p {fn}\b", text)
    assert "--mount=type=cache" in text
    final = text.split("FROM ${RUNTIME_IMAGE}")[-1]
    user = re.search(r"^USER (\S+)", final, re.M)
    assert user and user.group(1).split(":")[0] not in ("0", "root")
    assert re.search(rf'^ENTRYPOINT \["/{fn}"\]', final, re.M)
    if fn == "consume-order":
        assert "/out/ops" in final, "the consume-order image ships ops for the Cloud Run Job"


def test_dockerignore_keeps_the_context_small():
    lines = {l.strip() for l in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    for entry in ["target/", ".state/", ".git/", "**/node_modules/"]:
        assert entry in lines
