#!/usr/bin/env python3
"""Validates every manifest under deploy/ against a real schema (make deploy-check, in make test).

Core Kubernetes kinds: kubernetes-validate (the published Kubernetes OpenAPI schemas), strict,
so an unknown or misspelt field fails. Istio kinds: the openAPIV3Schema of their CRDs, vendored
unchanged under deploy/schemas/istio/ (source and commit in each file), checked with jsonschema;
objects that declare their properties are closed here (as the API server's structural pruning
would drop an unknown field silently, a typo would otherwise pass unnoticed).
"""
import copy
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent
K8S_VERSION = "1.33.0"
ISTIO_GROUPS = ("extensions.istio.io", "networking.istio.io", "security.istio.io")
METADATA = {"type": "object"}


def closed(schema):
    """A copy where every object with `properties` refuses other members."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def istio_schemas():
    schemas = {}
    for path in sorted((ROOT / "schemas" / "istio").glob("*.json")):
        data = json.loads(path.read_text())
        schema = closed(data["openAPIV3Schema"])
        schema["properties"].update(
            {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": METADATA}
        )
        schemas[(f'{data["group"]}/{data["version"]}', data["kind"])] = schema
    return schemas


def check(doc, where, schemas):
    """The schema errors of one resource (empty: valid)."""
    api = doc.get("apiVersion", "")
    if api.split("/")[0] in ISTIO_GROUPS:
        schema = schemas.get((api, doc.get("kind")))
        if schema is None:
            return [f"{where}: no vendored schema for {api} {doc.get('kind')}"]
        errors = sorted(
            jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
        )
        return [f"{where}: {'/'.join(map(str, e.path))}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'/'.join(map(str, e.path))}: {e.message}"]
    return []


def self_test(docs, schemas):
    """The validator must refuse a misspelt field and a bad enum in each kind of schema."""
    problems = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in ("WasmPlugin", "Deployment"):
            continue
        bad = copy.deepcopy(doc)
        if kind == "WasmPlugin":
            bad["spec"]["failStrategy"] = "FAIL_CLOSED"
            bad["spec"]["phaze"] = bad["spec"].pop("phase")
        else:
            container = bad["spec"]["template"]["spec"]["containers"][0]
            container["readynessProbe"] = container.pop("readinessProbe")
        if not check(bad, kind, schemas):
            problems.append(f"self-test: a broken {kind} passed validation")
    return problems


def main():
    schemas = istio_schemas()
    failures, docs = [], []
    for path in sorted(ROOT.rglob("*.yaml")):
        if path.name == "mesh-stats.yaml":
            continue  # Helm values for istiod, not a resource: checked below
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            where = f'{path.relative_to(ROOT)}: {doc.get("kind")} {doc.get("metadata", {}).get("name")}'
            docs.append(doc)
            failures += check(doc, where, schemas)
    failures += self_test(docs, schemas)
    stats = yaml.safe_load((ROOT / "istio" / "mesh-stats.yaml").read_text())
    prefixes = stats["meshConfig"]["defaultConfig"]["proxyStatsMatcher"]["inclusionPrefixes"]
    if prefixes != ["wasmcustom.certbind."]:
        failures.append(f"istio/mesh-stats.yaml: unexpected inclusionPrefixes {prefixes}")
    for line in failures:
        print(f"deploy: {line}", file=sys.stderr)
    if failures or not docs:
        return 1
    print(f"deploy: {len(docs)} manifests valid (Kubernetes {K8S_VERSION}, Istio CRD schemas); broken copies refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
