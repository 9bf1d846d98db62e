#!/usr/bin/env python3
"""Offline checks of the Helm chart, run by the test suite (crates/folio-cli/tests/chart.rs).

For each case of a matrix of values: `helm template`, strict validation of every manifest
against the Kubernetes schemas (kubernetes-validate), and assertions on what was rendered:
N replicas give N initial members with the pods' stable names, node ids and addresses come from
the pods, secrets are mounted where the config expects them, pods roll when the config changes,
the security context is non-root with a read-only root, probes use /readyz and /livez. Every
rendered node config is loaded by the real `folio` binary (`--check-config`) as each pod would
load it. Also `helm lint --strict`.

Usage: check_chart.py HELM FOLIO_BIN
"""

import json
import os
import subprocess
import sys
import tempfile

import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RELEASE, NAMESPACE = "rel", "folio-ns"

CASES = {
    "defaults": {},
    "two-groups-five-and-one": {
        "groups": [
            {"name": "g1", "groupId": 1, "region": "eu", "replicas": 5, "initialReplicas": 5},
            {"name": "edge", "groupId": 9, "region": "us", "replicas": 1},
        ],
        "registry": {"enabled": True, "replicas": 1},
        "test": {"region": "eu"},
    },
    "external-registry-secrets-and-extras": {
        "registry": {"enabled": False, "external": ["reg-a:7000", "reg-b:7000"]},
        "objectStore": {
            "bucket": "prod",
            "prefix": "eu-1/",
            "endpoint": "http://minio.storage:9000",
            "pathStyle": True,
            "existingSecret": "folio-s3",
        },
        "persistence": {"size": "100Gi", "storageClassName": "nvme"},
        "extraConfig": "[lifecycle]\nretention_ms = 604800000\n",
        "groups": [{"name": "g1", "groupId": 4, "region": "eu", "replicas": 4, "initialReplicas": 3}],
    },
    "no-registry": {"registry": {"enabled": False}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "dashboard": {"dashboard": {"enabled": True}},
    "tls-cert-manager-and-tokens": {
        "tls": {
            "enabled": True,
            "certManager": {
                "enabled": True,
                "issuerRef": {"name": "folio-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
                "duration": "720h",
                "renewBefore": "240h",
            },
        },
        "auth": {"enabled": True, "keysSecret": "folio-keys", "keyIds": ["k1", "k2"], "audience": "folio"},
        "groups": [
            {"name": "g1", "groupId": 5, "region": "eu", "replicas": 3},
            {"name": "g2", "groupId": 6, "region": "us", "replicas": 1},
        ],
        "serviceMonitor": {"enabled": True, "tokenSecret": {"name": "prom-token", "key": "token"}},
        "test": {"region": "eu", "tokenSecret": "folio-test-token"},
    },
    "shared-peer-port-and-network-policy": {"peerListener": False, "networkPolicy": {"enabled": True}},
    "network-policy": {"networkPolicy": {"enabled": True}},
    "tls-own-secrets-no-tokens": {
        "tls": {"enabled": True},
        "registry": {"enabled": True, "replicas": 1},
    },
}

# Values the chart refuses to render, and what it says.
REFUSED = {
    "tokens-without-tls": (
        {"auth": {"enabled": True, "keysSecret": "k"}},
        "auth.enabled needs tls.enabled",
    ),
    "tokens-without-keys": (
        {"tls": {"enabled": True}, "auth": {"enabled": True}},
        "auth.enabled needs auth.keysSecret",
    ),
    "cert-manager-without-issuer": (
        {"tls": {"enabled": True, "certManager": {"enabled": True}}},
        "tls.certManager.enabled needs tls.certManager.issuerRef.name",
    ),
    "helm-test-without-token": (
        {"tls": {"enabled": True}, "auth": {"enabled": True, "keysSecret": "k"}},
        "test.tokenSecret",
    ),
}

TLS_DIR = "/run/secrets/folio/tls"
KEYS_DIR = "/run/secrets/folio/keys"

# Kinds the Kubernetes schemas do not know (CRDs): checked by the assertions only.
CRD_KINDS = {"ServiceMonitor", "Certificate"}


def run(*args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def render(helm, values, tmp, name):
    path = os.path.join(tmp, f"{name}.values.json")
    with open(path, "w") as f:
        json.dump(values, f)
    out = run(helm, "template", RELEASE, CHART, "-n", NAMESPACE, "-f", path)
    docs = [d for d in yaml.safe_load_all(out) if d]
    return out, docs


def validate(docs, tmp, name):
    plain = [d for d in docs if d["kind"] not in CRD_KINDS]
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump_all(plain, f)
    run("kubernetes-validate", "--strict", "--quiet", path)


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def effective(values):
    """The chart's defaults with the case's values over them (maps merge, the rest replaces)."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        v = yaml.safe_load(f)

    def merge(base, over):
        out = dict(base)
        for k, x in over.items():
            out[k] = merge(base[k], x) if isinstance(x, dict) and isinstance(base.get(k), dict) else x
        return out

    return merge(v, values)


def pod_args(container, pod, config_path):
    """The container's arguments as Kubernetes expands them for `pod`, reading `config_path`."""
    args = [a.replace("$(POD_NAME)", pod).replace("$(POD_NAMESPACE)", NAMESPACE) for a in container["args"]]
    return [config_path if a == "/etc/folio/folio.toml" else a for a in args]


def check_security(v, sts_name, replicas, pod_spec, toml):
    """TLS and tokens as the values ask: each pod its own certificate, probes over HTTPS, the
    config's [tls] and [auth] pointing at what is mounted."""
    c = pod_spec["containers"][0]
    tls, auth = v["tls"]["enabled"], v["auth"]["enabled"]
    insecure = "false" if tls and auth else str(v["insecure"]).lower()
    assert f"insecure = {insecure}\n" in toml, toml
    scheme = "HTTPS" if tls else "HTTP"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["scheme"] == scheme, (probe, c[probe])
    volumes = {x["name"]: x for x in pod_spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert ("[tls]" in toml) == tls and ("--tls-cert" in c["args"]) == tls
    if tls:
        assert f'ca = "{TLS_DIR}/ca.crt"' in toml and "cert =" not in toml, toml
        i = c["args"].index("--tls-cert")
        assert c["args"][i : i + 4] == [
            "--tls-cert", f"{TLS_DIR}/$(POD_NAME)/tls.crt", "--tls-key", f"{TLS_DIR}/$(POD_NAME)/tls.key",
        ], c["args"]
        assert mounts["tls"] == TLS_DIR
        sources = volumes["tls"]["projected"]["sources"]
        assert [x["secret"]["name"] for x in sources] == [f"{sts_name}-{i}-tls" for i in range(replicas)]
        for i, x in enumerate(sources):
            paths = {item["key"]: item["path"] for item in x["secret"]["items"]}
            want = {"tls.crt": f"{sts_name}-{i}/tls.crt", "tls.key": f"{sts_name}-{i}/tls.key"}
            if i == 0:
                want["ca.crt"] = "ca.crt"
            assert paths == want, paths
    else:
        assert "tls" not in volumes and "tls" not in mounts
    assert ("[auth]" in toml) == auth
    if auth:
        assert toml.count("[[auth.keys]]") == len(v["auth"]["keyIds"])
        for kid in v["auth"]["keyIds"]:
            assert f'public_key = "{KEYS_DIR}/{kid}.pub"' in toml, toml
        assert mounts["keys"] == KEYS_DIR
        assert volumes["keys"]["secret"]["secretName"] == v["auth"]["keysSecret"]
    else:
        assert "keys" not in volumes


def check_certificates(v, docs, full):
    """With cert-manager, one Certificate per pod, naming the node it is for and the names it is
    dialled by; none otherwise."""
    certs = by_kind(docs, "Certificate")
    want = {}
    if v["tls"]["enabled"] and v["tls"]["certManager"]["enabled"]:
        for g in v["groups"]:
            for i in range(g["replicas"]):
                want[f"{full}-{g['name']}-{i}"] = (f"{full}-{g['name']}", f"spiffe://folio/group/{g['groupId']}/node/{i + 1}")
        if v["registry"]["enabled"]:
            for i in range(v["registry"]["replicas"]):
                want[f"{full}-registry-{i}"] = (f"{full}-registry", f"spiffe://folio/registry/node/{i + 1}")
    assert set(certs) == set(want), (set(certs), set(want))
    for pod, (sts, uri) in want.items():
        spec = certs[pod]["spec"]
        assert spec["secretName"] == f"{pod}-tls"
        assert spec["uris"] == [uri], spec["uris"]
        assert f"{pod}.{sts}.{NAMESPACE}.svc.cluster.local" in spec["dnsNames"]
        assert "127.0.0.1" in spec["ipAddresses"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"] == v["tls"]["certManager"]["issuerRef"]
        if sts.endswith("-registry"):
            assert f"{full}-registry-client.{NAMESPACE}.svc.cluster.local" in spec["dnsNames"]


def check_peer_port(v, sts_name, initial, c, svc, toml):
    """With peerListener, Raft has its own port: in the config, on the container, on the Service;
    every initial member names its peer address."""
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    svc_ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    if v["peerListener"]:
        assert 'peer_listen_addr = "0.0.0.0:7080"' in toml, toml
        assert ports.get("peer") == 7080 and svc_ports.get("peer") == 7080, (ports, svc_ports)
        for i in range(initial):
            want = f'peer_addr = "{sts_name}-{i}.{sts_name}.{NAMESPACE}.svc.cluster.local:7080"'
            assert want in toml, (want, toml)
    else:
        assert "peer_listen_addr" not in toml and "peer_addr" not in toml, toml
        assert "peer" not in ports and "peer" not in svc_ports


def check_network_policies(v, docs, full):
    """One NetworkPolicy per StatefulSet when asked for: the peer port only from its own pods."""
    policies = by_kind(docs, "NetworkPolicy")
    if not v["networkPolicy"]["enabled"]:
        assert not policies
        return
    want = {f"{full}-{g['name']}" for g in v["groups"]}
    if v["registry"]["enabled"]:
        want.add(f"{full}-registry")
    assert set(policies) == want, set(policies)
    sets = by_kind(docs, "StatefulSet")
    for name, p in policies.items():
        labels = sets[name]["spec"]["selector"]["matchLabels"]
        assert p["spec"]["podSelector"]["matchLabels"] == labels
        rules = p["spec"]["ingress"]
        assert rules[0] == {"ports": [{"port": "grpc"}, {"port": "http"}]}, rules
        if v["peerListener"]:
            assert rules[1]["from"] == [{"podSelector": {"matchLabels": labels}}], rules
            assert rules[1]["ports"] == [{"port": "peer"}], rules
        else:
            assert len(rules) == 1, rules


def check_said(v, said, pod):
    """What --check-config printed names the pod's own certificate and the token keys."""
    if v["tls"]["enabled"]:
        assert f"TLS with cert {TLS_DIR}/{pod}/tls.crt, key {TLS_DIR}/{pod}/tls.key" in said, said
    else:
        assert "no TLS" in said, said
    if v["auth"]["enabled"]:
        assert f"client tokens (keys {', '.join(v['auth']['keyIds'])})" in said, said
    else:
        assert "no client tokens" in said, said


def check_case(name, values, docs, folio, tmp):
    v = effective(values)
    full = f"{RELEASE}-folio"
    sets = by_kind(docs, "StatefulSet")
    services = by_kind(docs, "Service")
    config = by_kind(docs, "ConfigMap")[f"{full}-config"]["data"]
    want_sets = {f"{full}-{g['name']}" for g in v["groups"]}
    if v["registry"]["enabled"]:
        want_sets.add(f"{full}-registry")
    assert set(sets) == want_sets, (name, set(sets))
    for g in v["groups"]:
        sts_name = f"{full}-{g['name']}"
        sts = sets[sts_name]
        spec = sts["spec"]
        assert spec["replicas"] == g["replicas"]
        assert spec["podManagementPolicy"] == "Parallel"
        assert spec["serviceName"] == sts_name
        svc = services[sts_name]
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
        pdb = by_kind(docs, "PodDisruptionBudget")[sts_name]
        assert pdb["spec"]["maxUnavailable"] == 1
        pod = spec["template"]["spec"]
        c = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert "checksum/config" in spec["template"]["metadata"]["annotations"]
        assert "--node-id-from-ordinal" in c["args"] and "$(POD_NAME)" in c["args"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["data"] == "/var/lib/folio" and mounts["config"] == "/etc/folio"
        claim = spec["volumeClaimTemplates"][0]["spec"]
        assert claim["resources"]["requests"]["storage"] == v["persistence"]["size"]
        if v["persistence"].get("storageClassName"):
            assert claim["storageClassName"] == v["persistence"]["storageClassName"]
        secret = v["objectStore"].get("existingSecret")
        if secret:
            assert c["envFrom"] == [{"secretRef": {"name": secret}}], c.get("envFrom")
        else:
            assert "envFrom" not in c
        # The config each member loads: N initial members named by the pods' stable DNS names.
        toml = config[f"group-{g['name']}.toml"]
        initial = g.get("initialReplicas", g["replicas"])
        members = [
            f'addr = "{sts_name}-{i}.{sts_name}.{NAMESPACE}.svc.cluster.local:7070"'
            for i in range(initial)
        ]
        check_peer_port(v, sts_name, initial, c, svc, toml)
        assert toml.count("[[initial_members]]") == initial, toml
        for m in members:
            assert m in toml, (m, toml)
        if v["registry"]["enabled"] or v["registry"].get("external"):
            assert "[registry]" in toml
        else:
            assert "[registry]" not in toml
        path = os.path.join(tmp, f"{name}-{g['name']}.toml")
        with open(path, "w") as f:
            f.write(toml)
        check_security(v, sts_name, g["replicas"], pod, toml)
        for i in range(g["replicas"]):
            pod_name = f"{sts_name}-{i}"
            advertise = f"{pod_name}.{sts_name}.{NAMESPACE}.svc.cluster.local:7070"
            said = run(folio, *pod_args(c, pod_name, path), "--check-config")
            assert f"node {i + 1} of group {g['groupId']} in region {g['region']}" in said, said
            assert advertise in said, said
            check_said(v, said, pod_name)
    if v["registry"]["enabled"]:
        reg = f"{full}-registry"
        toml = config["registry.toml"]
        assert toml.count("[[initial_members]]") == v["registry"]["replicas"]
        assert f"{reg}-client" in services
        path = os.path.join(tmp, f"{name}-registry.toml")
        with open(path, "w") as f:
            f.write(toml)
        reg_pod = sets[reg]["spec"]["template"]["spec"]
        check_security(v, reg, v["registry"]["replicas"], reg_pod, toml)
        check_peer_port(v, reg, v["registry"]["replicas"], reg_pod["containers"][0], services[reg], toml)
        for i in range(v["registry"]["replicas"]):
            said = run(folio, *pod_args(reg_pod["containers"][0], f"{reg}-{i}", path), "--check-config")
            assert f"registry node {i + 1}" in said, said
            check_said(v, said, f"{reg}-{i}")
    check_certificates(v, docs, full)
    check_network_policies(v, docs, full)
    monitors = by_kind(docs, "ServiceMonitor")
    assert bool(monitors) == v["serviceMonitor"]["enabled"]
    for m in monitors.values():
        ep = m["spec"]["endpoints"][0]
        assert ep.get("scheme", "http") == ("https" if v["tls"]["enabled"] else "http"), ep
        if v["auth"]["enabled"]:
            assert ep["authorization"]["credentials"] == v["serviceMonitor"]["tokenSecret"], ep
        else:
            assert "authorization" not in ep
    dash = by_kind(docs, "ConfigMap").get(f"{full}-dashboard")
    assert bool(dash) == v["dashboard"]["enabled"]
    if dash:
        assert json.loads(dash["data"]["folio.json"])["uid"] == "folio-overview"
    tests = [d for d in docs if d["kind"] == "Pod"]
    if v["registry"]["enabled"] or v["registry"].get("external"):
        assert len(tests) == 1 and tests[0]["metadata"]["annotations"]["helm.sh/hook"] == "test"
        args = tests[0]["spec"]["containers"][0]["args"]
        assert args[:2] == ["admin", "check"]
        assert ("--ca" in args) == v["tls"]["enabled"] and ("--token-file" in args) == v["auth"]["enabled"]
        if v["auth"]["enabled"]:
            vols = {x["name"]: x for x in tests[0]["spec"]["volumes"]}
            assert vols["token"]["secret"]["secretName"] == v["test"]["tokenSecret"]
    else:
        assert not tests


def main():
    helm, folio = sys.argv[1], sys.argv[2]
    run(helm, "lint", "--strict", CHART)
    with tempfile.TemporaryDirectory() as tmp:
        checksums = {}
        for name, values in CASES.items():
            _, docs = render(helm, values, tmp, name)
            validate(docs, tmp, name)
            check_case(name, values, docs, folio, tmp)
            sts = next(d for d in docs if d["kind"] == "StatefulSet")
            checksums[name] = sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            print(f"chart case {name}: ok ({len(docs)} manifests)")
        # Pods roll when the config changes, and only then.
        assert checksums["defaults"] == checksums["service-monitor"]
        assert checksums["defaults"] != checksums["no-registry"]
        # Values the schema refuses never render.
        path = os.path.join(tmp, "bad.values.json")
        with open(path, "w") as f:
            json.dump({"groups": [{"name": "G_1", "groupId": 0, "region": "x", "replicas": 3}]}, f)
        r = subprocess.run([helm, "template", RELEASE, CHART, "-f", path], capture_output=True, text=True)
        assert r.returncode != 0 and "values don't meet the specifications" in r.stderr, r.stderr
        for case, (values, said) in REFUSED.items():
            path = os.path.join(tmp, f"{case}.values.json")
            with open(path, "w") as f:
                json.dump(values, f)
            r = subprocess.run([helm, "template", RELEASE, CHART, "-f", path], capture_output=True, text=True)
            assert r.returncode != 0 and said in r.stderr, (case, r.stderr)
            print(f"chart refuses {case}: ok")
        # A pod's certificate on the command line needs a [tls] section to go with it.
        plain = os.path.join(tmp, "defaults-g1.toml")
        r = subprocess.run(
            [folio, "server", "--config", plain, "--node-id-from-ordinal", "rel-folio-g1-0",
             "--tls-cert", "/x/tls.crt", "--tls-key", "/x/tls.key", "--check-config"],
            capture_output=True, text=True,
        )
        assert r.returncode != 0 and "--tls-cert given, but" in r.stderr, r.stderr
    print("chart: ok")


if __name__ == "__main__":
    main()
