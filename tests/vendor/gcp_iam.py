"""Google's own Python client (google-api-python-client, its bundled discovery documents for
iam.v1 and logging.v2) and Google's auth library (google-auth: the service-account JWT bearer
flow) against rekey's GCP simulator.

Input: argv[1] is the simulator's base URL; stdin is JSON {"key_file": {...}, "project": P,
"account": EMAIL} (the admin key file arrives on stdin, never in argv or the environment).
Output: one JSON document on stdout — what each call answered, and `schema_violations`: every
field of every answer that the discovery document's schema does not describe (unknown
property, wrong JSON type, value outside an enum). Exit 0 when every call ran; any exception
is printed and exits non-zero.
"""

import base64
import json
import sys

from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from googleapiclient import discovery_cache
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class Schemas:
    """Checks answers against the schemas of a discovery document."""

    def __init__(self, api, version):
        self.doc = json.loads(discovery_cache.get_static_doc(api, version))
        self.violations = []

    def check(self, value, ref, where):
        self._check(value, {"$ref": ref}, where)

    def _check(self, value, schema, where):
        if "$ref" in schema:
            schema = self.doc["schemas"][schema["$ref"]]
        kind = schema.get("type")
        bad = lambda why: self.violations.append(f"{where}: {why}")
        if kind == "object":
            if not isinstance(value, dict):
                return bad(f"expected an object, got {type(value).__name__}")
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for k, v in value.items():
                if k in props:
                    self._check(v, props[k], f"{where}.{k}")
                elif extra is not None:
                    self._check(v, extra, f"{where}.{k}")
                else:
                    bad(f"unknown property `{k}`")
        elif kind == "array":
            if not isinstance(value, list):
                return bad(f"expected an array, got {type(value).__name__}")
            for i, v in enumerate(value):
                self._check(v, schema.get("items", {}), f"{where}[{i}]")
        elif kind == "string":
            if not isinstance(value, str):
                return bad(f"expected a string, got {type(value).__name__}")
            if "enum" in schema and value not in schema["enum"]:
                bad(f"`{value}` is not one of the enum's values")
        elif kind == "boolean":
            if not isinstance(value, bool):
                bad(f"expected a boolean, got {type(value).__name__}")
        elif kind in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad(f"expected a number, got {type(value).__name__}")
        # "any" and untyped schemas accept anything.


def http_error(e):
    """What a caller of the client sees of a refusal: status, Google's status and message."""
    body = json.loads(e.content.decode() or "{}")
    error = body.get("error", {})
    return {
        "http_status": e.resp.status,
        "status": error.get("status"),
        "code": error.get("code"),
        "has_message": bool(error.get("message")),
        "reason": e.reason,
    }


def main():
    url = sys.argv[1].rstrip("/")
    given = json.load(sys.stdin)
    project, account = given["project"], given["account"]
    creds = service_account.Credentials.from_service_account_info(given["key_file"], scopes=SCOPES)
    options = {"api_endpoint": url}
    iam = build("iam", "v1", credentials=creds, static_discovery=True, client_options=options)
    logging = build("logging", "v2", credentials=creds, static_discovery=True, client_options=options)
    iam_schemas = Schemas("iam", "v1")
    log_schemas = Schemas("logging", "v2")
    keys = iam.projects().serviceAccounts().keys()
    sa = f"projects/{project}/serviceAccounts/{account}"
    out = {}

    created = keys.create(name=sa, body={}).execute()
    iam_schemas.check(created, "ServiceAccountKey", "create")
    key_file = json.loads(base64.b64decode(created["privateKeyData"]))
    out["create"] = {
        "fields": sorted(created),
        "keyAlgorithm": created.get("keyAlgorithm"),
        "keyOrigin": created.get("keyOrigin"),
        "keyType": created.get("keyType"),
        "privateKeyType": created.get("privateKeyType"),
        "validBeforeTime": created.get("validBeforeTime"),
        "validAfterTime": created.get("validAfterTime"),
        "name_prefix_ok": created["name"].startswith(f"{sa}/keys/"),
        "key_file_fields": sorted(key_file),
        "key_file_id_matches": created["name"].rsplit("/", 1)[1] == key_file["private_key_id"],
    }
    name = created["name"]
    # The new key signs in through google-auth's JWT flow, as a CI job would.
    new_creds = service_account.Credentials.from_service_account_info(key_file, scopes=SCOPES)
    as_new = build("iam", "v1", credentials=new_creds, static_discovery=True, client_options=options)
    listed_by_new = as_new.projects().serviceAccounts().keys().list(name=sa).execute()
    out["new_key_signs_in"] = any(k["name"] == name for k in listed_by_new.get("keys", []))

    listed = keys.list(name=sa, keyTypes=["USER_MANAGED"]).execute()
    iam_schemas.check(listed, "ListServiceAccountKeysResponse", "list")
    out["list"] = {
        "fields": sorted(listed),
        "names": [k["name"] for k in listed.get("keys", [])],
        "key_fields": sorted({f for k in listed.get("keys", []) for f in k}),
    }

    disabled = keys.disable(name=name, body={}).execute()
    out["disable"] = disabled
    got = keys.get(name=name).execute()
    iam_schemas.check(got, "ServiceAccountKey", "get")
    out["get_after_disable"] = {"disabled": got.get("disabled"), "fields": sorted(got)}
    try:
        new_creds.refresh(Request())
        out["disabled_key_token"] = "granted"
    except RefreshError as e:
        out["disabled_key_token"] = {"refused": True, "error": e.args[1].get("error") if len(e.args) > 1 and isinstance(e.args[1], dict) else None}
    out["enable"] = keys.enable(name=name, body={}).execute()
    got = keys.get(name=name).execute()
    out["get_after_enable"] = {"disabled": got.get("disabled", False), "fields": sorted(got)}

    out["delete"] = keys.delete(name=name).execute()
    try:
        keys.get(name=name).execute()
        out["get_after_delete"] = "found"
    except HttpError as e:
        out["get_after_delete"] = http_error(e)
    try:
        keys.list(name=f"projects/{project}/serviceAccounts/nobody@{project}.iam.gserviceaccount.com").execute()
        out["list_unknown_account"] = "listed"
    except HttpError as e:
        out["list_unknown_account"] = http_error(e)

    # Cloud Logging: every page through the client's own paging.
    entries = logging.entries()
    body = {
        "resourceNames": [f"projects/{project}"],
        "filter": 'protoPayload.methodName="google.iam.admin.v1.CreateServiceAccountKey"',
        "pageSize": 2,
    }
    request = entries.list(body=body)
    pages, seen = 0, []
    while request is not None:
        page = request.execute()
        log_schemas.check(page, "ListLogEntriesResponse", f"entries.list page {pages + 1}")
        pages += 1
        seen += [e.get("insertId") for e in page.get("entries", [])]
        request = entries.list_next(request, page)
    out["log_entries"] = {"pages": pages, "insert_ids": seen}
    try:
        entries.list(body={"resourceNames": [f"projects/{project}"], "filter": "severity>=ERROR"}).execute()
        out["log_unsupported_filter"] = "listed"
    except HttpError as e:
        out["log_unsupported_filter"] = http_error(e)

    out["schema_violations"] = iam_schemas.violations + log_schemas.violations
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
