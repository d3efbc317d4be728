"""The Helm chart (helm/vouch): rendered with Helm's own Go SDK (helm-python-sdk, no helm binary),
linted strictly, every manifest validated against the Kubernetes API schemas in strict mode, and
the security properties the chart promises checked on what it renders."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from vouch.audit_key import FILE_NAME as AUDIT_KEY_FILE
from vouch.settings import Settings

CHART = Path(__file__).resolve().parents[2] / "helm" / "vouch"
KUBERNETES = kubernetes_validate.latest_version()  # the newest the pinned package knows: 1.37
RELEASE, NAMESPACE = "corp", "security"
# Custom resources have no schema in kubernetes-validate; only these may go unvalidated.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

SLACK = {"slackBotToken": "xoxb-1-2-abc", "slackSigningSecret": "8f14e45fceea167a5a36dedd4bea2543"}
AUDIT_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef"
DATABASE_URL = "postgresql+psycopg://vouch:pw@db.internal:5432/vouch"

VALUE_SETS = {
    "defaults": {},
    "postgresql-3": {
        "replicaCount": 3,
        "database": {"type": "postgresql"},
        "secrets": SLACK | {"auditKey": AUDIT_KEY, "databaseUrl": DATABASE_URL,
                            "pkcs11Pin": "123456"},
        # A network HSM: every replica opens its own session through the vendor's module.
        "ca": {"key": "pkcs11:token=vouch;object=vouch-ca",
               "hostKey": "pkcs11:token=vouch;object=vouch-host-ca"},
        "hsm": {"module": {"path": "/opt/pkcs11/libnethsm.so",
                           "volume": {"image": {"reference": "registry.example/nethsm-pkcs11:3",
                                                "pullPolicy": "IfNotPresent"}}}},
        "audit": {"checkpoints": {"existingClaim": "vouch-checkpoints"}},
        "ingress": {"enabled": True, "className": "nginx"},
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"egress": {"databaseTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                                     "extra": [{"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
                                                "ports": [{"port": 1792, "protocol": "TCP"}]}]}},
    },
    "existing-secret": {
        "replicaCount": 2,
        "database": {"type": "postgresql"},
        "secrets": {"existingSecret": "vouch-managed"},
        "policy": {"existingConfigMap": "vouch-policy-managed"},
        "publicUrl": "https://vouch.corp.example/",
        "ca": {"key": "pkcs11:token=vouch;object=vouch-ca"},
        "hsm": {"module": {"path": "/usr/lib/nethsm/libnethsm.so"}},  # in a derived image
    },
    "softhsm": {
        "secrets": SLACK | {"pkcs11Pin": "1234", "auditKey": AUDIT_KEY},
        "ca": {"key": "pkcs11:token=vouch;object=vouch-ca"},
        "hsm": {"module": {"path": "/opt/pkcs11/libsofthsm2.so",
                           "volume": {"hostPath": {"path": "/usr/lib/softhsm",
                                                   "type": "Directory"}}},
                "softhsm": {"enabled": True,
                            "tokens": {"persistentVolumeClaim": {"claimName": "softhsm-tokens"}}}},
    },
    "yubikey": {
        "secrets": SLACK | {"pkcs11Pin": "123456", "auditKey": AUDIT_KEY},
        "ca": {"key": "pkcs11:id=%02"},
        "hsm": {"module": {"path": "/opt/pkcs11/libykcs11.so",
                           "volume": {"hostPath": {"path": "/usr/lib/x86_64-linux-gnu",
                                                   "type": "Directory"}}}},
        "yubikey": {"enabled": True,
                    "pcscd": {"image": {"repository": "registry.example/pcscd", "tag": "1.9.9"}}},
        "nodeSelector": {"vouch.example.com/yubikey": "true"},
    },
    "yubikey-device-plugin": {
        "secrets": SLACK | {"pkcs11Pin": "123456"},
        "ca": {"key": "pkcs11:id=%02"},
        "hsm": {"module": {"path": "/usr/lib/x86_64-linux-gnu/libykcs11.so"}},
        "yubikey": {"enabled": True, "device": {"resourceName": "squat.ai/yubikey"},
                    "pcscd": {"image": {"repository": "registry.example/pcscd", "tag": "1.9.9"}}},
    },
}


def render(values: dict) -> list[dict]:
    """Every manifest the chart renders, NOTES.txt as {"kind": "NOTES", "text": …}."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    documents = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            documents.append({"kind": "NOTES", "text": text})
            continue
        documents.extend(d for d in yaml.safe_load_all(text) if d)
    return documents


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


def by_kind(documents: list[dict], kind: str) -> list[dict]:
    return [d for d in documents if d.get("kind") == kind]


def one(documents: list[dict], kind: str) -> dict:
    (found,) = by_kind(documents, kind)
    return found


def pod_specs(documents: list[dict]) -> list[dict]:
    return [d["spec"]["template"]["spec"] for d in documents if d["kind"] in ("Deployment", "Job")]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def server(documents: list[dict]) -> dict:
    spec = one(documents, "Deployment")["spec"]["template"]["spec"]
    (vouch,) = [c for c in spec["containers"] if c["name"] == "vouch"]
    return vouch


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mount_of(container: dict, volume: str) -> str:
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return path


# --- Helm's lint, Kubernetes' schemas --------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
def test_strict_lint_passes(name):
    report = helm.lint(str(CHART), VALUE_SETS[name], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_validates_strictly(rendered, name):
    skipped = set()
    for document in rendered[name]:
        if document["kind"] == "NOTES":
            continue
        if (document["apiVersion"], document["kind"]) in CUSTOM_KINDS:
            skipped.add((document["apiVersion"], document["kind"]))
            continue
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    assert skipped == (CUSTOM_KINDS if name == "postgresql-3" else set())


def test_strict_validation_catches_a_misspelt_field(rendered):
    deployment = yaml.safe_load(yaml.safe_dump(one(rendered["defaults"], "Deployment")))
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    context["runAsNonRot"] = context.pop("runAsNonRoot")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


# --- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": 2},
     "replicaCount is 2 but database.type is sqlite: SQLite runs one replica"),
    ({"database": {"type": "postgresql"}, "secrets": SLACK},
     "database.type is postgresql but no database URL"),
    ({"replicaCount": 2, "database": {"type": "postgresql"},
      "secrets": SLACK | {"databaseUrl": DATABASE_URL}},
     "the audit key must be in the Secret"),
    ({"persistence": {"enabled": False}, "secrets": SLACK},
     "the audit key must be in the Secret"),
    ({"replicaCount": 2, "database": {"type": "postgresql"},
      "secrets": {"existingSecret": "s"}, "hsm": {"module": {"path": "/m.so"}},
      "yubikey": {"enabled": True, "pcscd": {"image": {"repository": "p"}}},
      "nodeSelector": {"k": "v"}},
     "replicaCount is 2 but yubikey.enabled"),
    ({"yubikey": {"enabled": True, "pcscd": {"image": {"repository": "p"}}},
      "hsm": {"module": {"path": "/m.so"}}},
     "needs nodeSelector naming the node the YubiKey is plugged into"),
])
def test_impossible_values_fail_to_render_saying_why(values, message):
    with pytest.raises(helm.HelmRenderError) as refused:
        render(values)
    assert message in str(refused.value)


def test_the_schema_refuses_an_unknown_value():
    with pytest.raises(helm.HelmError) as refused:
        render({"replicas": 3})
    assert "replicas" in str(refused.value)


def test_the_schema_refuses_a_secret_as_an_environment_value():
    with pytest.raises(helm.HelmError) as refused:
        render({"extraEnv": [{"name": "VOUCH_SLACK_BOT_TOKEN", "value": "xoxb-1-2-3"}]})
    assert "extraEnv" in str(refused.value)


# --- security properties ----------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
def test_pods_run_unprivileged(rendered, name):
    specs = pod_specs(rendered[name])
    assert specs
    for spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
            if container["name"] == "pcscd":  # root owns the USB device nodes; checked below
                continue
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
            assert context["allowPrivilegeEscalation"] is False
            assert context.get("privileged") is not True
            assert mount_of(container, "tmp") == "/tmp"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_secrets_are_0400_files_never_environment_values(rendered, name):
    secret_names = {f"VOUCH_{field.upper()}" for field, info in Settings.model_fields.items()
                    if "SecretStr" in str(info.annotation)}
    assert {"VOUCH_SLACK_BOT_TOKEN", "VOUCH_AUDIT_KEY", "VOUCH_PKCS11_PIN"} <= secret_names
    for spec in pod_specs(rendered[name]):
        for container in containers(spec):
            assert "envFrom" not in container
            for variable in container.get("env", []):
                assert "valueFrom" not in variable, variable
                assert variable["name"] not in secret_names, variable
        volumes = [v for v in spec["volumes"] if "secret" in v]
        assert volumes and all(v["secret"]["defaultMode"] == 0o400 for v in volumes)
        # kubelet lets the pod's group read 0400 secret files: the group must be Vouch's own.
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    vouch = server(rendered[name])
    assert env(vouch)["VOUCH_SECRETS_DIR"] == mount_of(vouch, "secrets")


def test_postgresql_url_is_left_to_the_secret_file(rendered):
    """An environment value would win over the file in VOUCH_SECRETS_DIR."""
    assert "VOUCH_DATABASE_URL" not in env(server(rendered["postgresql-3"]))
    assert env(server(rendered["defaults"]))["VOUCH_DATABASE_URL"].startswith("sqlite:////var/lib/vouch/")


def test_vouch_reads_every_secret_the_chart_creates(rendered, tmp_path, monkeypatch):
    """The Secret's keys become files in VOUCH_SECRETS_DIR: written out as kubelet would, the
    real Settings and audit-key loader must find every value."""
    import base64

    from vouch.audit_key import load_audit_key

    secret = one(rendered["postgresql-3"], "Secret")
    for key, value in secret["data"].items():
        path = tmp_path / key
        path.write_bytes(base64.b64decode(value))
        path.chmod(0o400)
    for name in list(os.environ):
        if name.startswith("VOUCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VOUCH_SECRETS_DIR", str(tmp_path))
    settings = Settings.load()
    assert settings.slack_bot_token.get_secret_value() == SLACK["slackBotToken"]
    assert settings.slack_signing_secret.get_secret_value() == SLACK["slackSigningSecret"]
    assert settings.pkcs11_pin.get_secret_value() == "123456"
    assert settings.database_url == DATABASE_URL
    assert load_audit_key(settings, create=False) == AUDIT_KEY.encode()
    assert AUDIT_KEY_FILE in secret["data"]


def test_every_vouch_variable_the_chart_sets_is_one_vouch_reads(rendered):
    known = {f"VOUCH_{field.upper()}" for field in Settings.model_fields}
    # In the contract (host CA) but read by code not merged here yet.
    known |= {"VOUCH_SECRETS_DIR", "VOUCH_HOST_CA_KEY", "VOUCH_HOST_PATTERN"}
    for documents in rendered.values():
        for spec in pod_specs(documents):
            for container in containers(spec):
                names = {n for n in env(container) if n.startswith("VOUCH_")}
                assert names <= known, names - known


def test_a_policy_change_rolls_the_pods():
    def checksum(content: str) -> str:
        deployment = one(render({"policy": {"content": content}}), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]

    base = yaml.safe_load((CHART / "values.yaml").read_text())["policy"]["content"]
    assert checksum(base) == checksum(base)
    assert checksum(base) != checksum(base.replace("max_duration: 4h", "max_duration: 2h"))


def test_a_secret_change_rolls_the_pods_and_an_existing_one_is_not_created(rendered):
    def annotations(documents):
        return one(documents, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})

    assert "checksum/secret" in annotations(rendered["postgresql-3"])
    assert annotations(rendered["postgresql-3"])["checksum/secret"] != \
        annotations(rendered["softhsm"])["checksum/secret"]
    existing = rendered["existing-secret"]
    assert by_kind(existing, "Secret") == [] and by_kind(existing, "ConfigMap") == []
    assert "checksum/policy" not in annotations(existing)
    spec = one(existing, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "vouch-managed"
    assert volumes["policy"]["configMap"]["name"] == "vouch-policy-managed"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_policy_is_checked_before_vouch_starts(rendered, name):
    spec = one(rendered[name], "Deployment")["spec"]["template"]["spec"]
    first = spec["initContainers"][0]
    policy_file = env(server(rendered[name]))["VOUCH_POLICY_FILE"]
    assert first["command"] + first["args"] == ["vouch", "policy", "check", policy_file]
    assert policy_file.startswith(mount_of(first, "policy") + "/")
    assert policy_file.startswith(mount_of(server(rendered[name]), "policy") + "/")


def test_the_default_policy_passes_vouch_policy_check(rendered, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(one(rendered["defaults"], "ConfigMap")["data"]["policy.yaml"])
    checked = subprocess.run([sys.executable, "-m", "vouch", "policy", "check", str(policy)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_file_ca_key_is_copied_private_as_vouch_requires(rendered, tmp_path):
    """kubelet makes secret files group-readable (0440) under fsGroup; Vouch refuses such a key.
    The init container's own command, run here, makes a 0600 copy that Vouch loads."""
    from ca.errors import BadInput
    from ca.signer import FileSigner

    spec = one(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    (copy,) = [c for c in spec["initContainers"] if c["name"] == "ca-key"]
    secrets_dir, key_dir = tmp_path / "secrets", tmp_path / "ca"
    secrets_dir.mkdir(), key_dir.mkdir()
    subprocess.run([sys.executable, "-m", "vouch", "ca", "init", "--key",
                    str(secrets_dir / "ca_key")], check=True, capture_output=True, cwd=tmp_path)
    (secrets_dir / "ca_key").chmod(0o440)
    with pytest.raises(BadInput):
        FileSigner.load(secrets_dir / "ca_key")
    argv = [a.replace(mount_of(copy, "secrets"), str(secrets_dir))
             .replace(mount_of(copy, "ca-key"), str(key_dir)) for a in copy["command"] + copy["args"]]
    subprocess.run(argv, check=True)
    copied = key_dir / "ca_key"
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
    assert env(server(rendered["defaults"]))["VOUCH_CA_KEY"] == \
        f"{mount_of(server(rendered['defaults']), 'ca-key')}/ca_key"
    FileSigner.load(copied)


# --- replicas ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
def test_replicas_prefer_different_nodes(rendered, name):
    deployment = one(rendered[name], "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_several_replicas_get_a_disruption_budget_and_one_does_not(rendered):
    documents = rendered["postgresql-3"]
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    budget = one(documents, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert by_kind(rendered["defaults"], "PodDisruptionBudget") == []
    # A new pod has to be ready before an old one goes: a bad rollout leaves the old serving.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_sqlite_has_one_pod_on_its_volume_and_migrates_in_an_init_container(rendered):
    documents = rendered["defaults"]
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert by_kind(documents, "Job") == []
    claim = one(documents, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    spec = deployment["spec"]["template"]["spec"]
    (upgrade,) = [c for c in spec["initContainers"] if c["name"] == "db-upgrade"]
    assert upgrade["args"] == ["db", "upgrade"]
    assert env(upgrade)["VOUCH_DATABASE_URL"] == env(server(documents))["VOUCH_DATABASE_URL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


@pytest.mark.parametrize(("name", "hook"), [("postgresql-3", "pre-upgrade"),
                                            ("existing-secret", "pre-install,pre-upgrade")])
def test_postgresql_migrates_in_a_hook_job(rendered, name, hook):
    documents = rendered[name]
    job = one(documents, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == hook
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] + container["args"] == ["vouch", "db", "upgrade"]
    (volume,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["items"] == [{"key": "VOUCH_DATABASE_URL", "path": "VOUCH_DATABASE_URL"}]
    assert env(container)["VOUCH_SECRETS_DIR"] == mount_of(container, "secrets")
    # The NetworkPolicy lets the Job reach the database too.
    policy = one(documents, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        job["spec"]["template"]["metadata"]["labels"].items()
    assert by_kind(documents, "PersistentVolumeClaim") == []


# --- HSM and YubiKey --------------------------------------------------------------------------

def test_softhsm_gets_its_module_token_directory_and_a_config_softhsm_reads(rendered, tmp_path):
    documents = rendered["softhsm"]
    vouch = server(documents)
    variables = env(vouch)
    assert variables["VOUCH_CA_KEY"] == "pkcs11:token=vouch;object=vouch-ca"
    assert os.path.dirname(variables["VOUCH_PKCS11_MODULE"]) == mount_of(vouch, "pkcs11-module")
    conf = [c for c in by_kind(documents, "ConfigMap") if "softhsm2.conf" in c["data"]][0]
    text = conf["data"]["softhsm2.conf"]
    assert variables["SOFTHSM2_CONF"] == mount_of(vouch, "softhsm-config") + "/softhsm2.conf"
    assert f"directories.tokendir = {mount_of(vouch, 'softhsm-tokens')}\n" in text
    if not shutil.which("softhsm2-util"):
        pytest.skip("softhsm2 is not installed (make test installs it)")
    (tmp_path / "tokens").mkdir()
    local = tmp_path / "softhsm2.conf"
    local.write_text(text.replace(mount_of(vouch, "softhsm-tokens"), str(tmp_path / "tokens")))
    shown = subprocess.run(["softhsm2-util", "--show-slots"], capture_output=True, text=True,
                           env={**os.environ, "SOFTHSM2_CONF": str(local)})
    assert shown.returncode == 0 and "Slot " in shown.stdout, shown.stderr


@pytest.mark.parametrize("name", ["yubikey", "yubikey-device-plugin"])
def test_a_yubikey_is_reached_through_a_pcscd_sidecar(rendered, name):
    spec = one(rendered[name], "Deployment")["spec"]["template"]["spec"]
    (pcscd,) = [c for c in spec["initContainers"] if c["name"] == "pcscd"]
    assert pcscd["restartPolicy"] == "Always"  # a native sidecar, up before Vouch
    assert mount_of(pcscd, "pcscd") == mount_of(server(rendered[name]), "pcscd") == "/run/pcscd"
    assert env(server(rendered[name]))["VOUCH_CA_KEY"] == "pkcs11:id=%02"
    context = pcscd["securityContext"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    if name == "yubikey":
        assert volumes["usb"]["hostPath"]["path"] == "/dev/bus/usb"
        assert mount_of(pcscd, "usb") == "/dev/bus/usb"
        assert spec["nodeSelector"] == {"vouch.example.com/yubikey": "true"}
        assert context["privileged"] is True
    else:
        assert "usb" not in volumes
        assert pcscd["resources"]["limits"]["squat.ai/yubikey"] == 1
        assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert one(rendered[name], "Deployment")["spec"]["replicas"] == 1


def test_a_network_hsm_signs_in_every_replica(rendered):
    documents = rendered["postgresql-3"]
    vouch = server(documents)
    spec = one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["pkcs11-module"]["image"]["reference"] == "registry.example/nethsm-pkcs11:3"
    assert env(vouch)["VOUCH_PKCS11_MODULE"] == "/opt/pkcs11/libnethsm.so"
    assert "nodeSelector" not in spec and "pcscd" not in volumes
    egress = one(documents, "NetworkPolicy")["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
            "ports": [{"port": 1792, "protocol": "TCP"}]} in egress


# --- the network ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
def test_probes_ask_healthz_and_readyz(rendered, name):
    vouch = server(rendered[name])
    assert vouch["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert vouch["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert vouch["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert vouch["args"] == ["serve", "--host", "0.0.0.0", "--port", "3000"]


def test_the_ingress_serves_slack_and_hosts_with_tls_and_keeps_metrics_inside(rendered):
    documents = rendered["postgresql-3"]
    ingress = one(documents, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    paths = {p["path"] for p in rule["http"]["paths"]}
    assert paths == {"/slack/events", "/krl", "/ca.pub", "/known_hosts", "/api"}
    assert ingress["spec"]["tls"] == [{"hosts": ["vouch.example.com"],
                                       "secretName": f"{RELEASE}-vouch-tls"}]
    assert env(server(documents))["VOUCH_PUBLIC_URL"] == "https://vouch.example.com"
    monitor = one(documents, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service = one(documents, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_network_policy_opens_only_what_vouch_uses(rendered, name):
    policy = one(rendered[name], "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [r["ports"] for r in policy["ingress"]] == [[{"port": 3000, "protocol": "TCP"}]]
    ports = [p["port"] for rule in policy["egress"] for p in rule["ports"]]
    postgresql = VALUE_SETS[name].get("database", {}).get("type") == "postgresql"
    expected = [53, 53, 443] + ([5432] if postgresql else [])
    assert ports[:len(expected)] == expected


def test_notes_give_the_slack_request_url_and_how_to_fetch_the_ca_and_krl(rendered):
    (notes,) = [d["text"] for d in rendered["postgresql-3"] if d["kind"] == "NOTES"]
    assert "https://vouch.example.com/slack/events" in notes
    assert "curl -fsS https://vouch.example.com/ca.pub" in notes
    assert "https://vouch.example.com/krl" in notes
    (notes,) = [d["text"] for d in rendered["defaults"] if d["kind"] == "NOTES"]
    assert "port-forward" in notes and "/ca.pub" in notes and "/krl" in notes
