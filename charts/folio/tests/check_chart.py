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
}

# Kinds the Kubernetes schemas do not know (CRDs): checked by the assertions only.
CRD_KINDS = {"ServiceMonitor"}


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
    """The chart's defaults with the case's values over them (top-level keys replace)."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        v = yaml.safe_load(f)
    for k, x in values.items():
        if isinstance(x, dict) and isinstance(v.get(k), dict):
            v[k] = {**v[k], **x}
        else:
            v[k] = x
    return v


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
        for i in range(g["replicas"]):
            pod_name = f"{sts_name}-{i}"
            advertise = f"{pod_name}.{sts_name}.{NAMESPACE}.svc.cluster.local:7070"
            said = run(folio, "server", "--config", path, "--node-id-from-ordinal", pod_name,
                       "--advertise-addr", advertise, "--check-config")
            assert f"node {i + 1} of group {g['groupId']} in region {g['region']}" in said, said
            assert advertise in said, said
    if v["registry"]["enabled"]:
        reg = f"{full}-registry"
        toml = config["registry.toml"]
        assert toml.count("[[initial_members]]") == v["registry"]["replicas"]
        assert f"{reg}-client" in services
        path = os.path.join(tmp, f"{name}-registry.toml")
        with open(path, "w") as f:
            f.write(toml)
        said = run(folio, "registry", "--config", path, "--node-id-from-ordinal", f"{reg}-0",
                   "--check-config")
        assert "registry node 1" in said, said
    monitors = by_kind(docs, "ServiceMonitor")
    assert bool(monitors) == v["serviceMonitor"]["enabled"]
    dash = by_kind(docs, "ConfigMap").get(f"{full}-dashboard")
    assert bool(dash) == v["dashboard"]["enabled"]
    if dash:
        assert json.loads(dash["data"]["folio.json"])["uid"] == "folio-overview"
    tests = [d for d in docs if d["kind"] == "Pod"]
    if v["registry"]["enabled"] or v["registry"].get("external"):
        assert len(tests) == 1 and tests[0]["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert tests[0]["spec"]["containers"][0]["args"][:2] == ["admin", "check"]
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
    print("chart: ok")


if __name__ == "__main__":
    main()
