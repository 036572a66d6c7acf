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


def main():
    schemas = istio_schemas()
    failures, checked = [], 0
    for path in sorted(ROOT.rglob("*.yaml")):
        if path.name == "mesh-stats.yaml":
            continue  # Helm values for istiod, not a resource: checked below
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            where = f'{path.relative_to(ROOT)}: {doc.get("kind")} {doc.get("metadata", {}).get("name")}'
            checked += 1
            api = doc.get("apiVersion", "")
            if api.split("/")[0] in ISTIO_GROUPS:
                schema = schemas.get((api, doc.get("kind")))
                if schema is None:
                    failures.append(f"{where}: no vendored schema for {api} {doc.get('kind')}")
                    continue
                errors = sorted(
                    jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
                )
                failures += [f"{where}: {'/'.join(map(str, e.path))}: {e.message}" for e in errors]
            else:
                try:
                    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                except kubernetes_validate.ValidationError as e:
                    failures.append(f"{where}: {'/'.join(map(str, e.path))}: {e.message}")
    stats = yaml.safe_load((ROOT / "istio" / "mesh-stats.yaml").read_text())
    prefixes = stats["meshConfig"]["defaultConfig"]["proxyStatsMatcher"]["inclusionPrefixes"]
    if prefixes != ["wasmcustom.certbind."]:
        failures.append(f"istio/mesh-stats.yaml: unexpected inclusionPrefixes {prefixes}")
    for line in failures:
        print(f"deploy: {line}", file=sys.stderr)
    if failures or checked == 0:
        return 1
    print(f"deploy: {checked} manifests valid (Kubernetes {K8S_VERSION}, Istio CRD schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
