"""boto3 (AWS's own Python SDK, whose botocore models parse every answer) drives every IAM and
STS call rekey makes — and the error answers rekey depends on — against rekey's AWS simulator
and against moto, then compares the two answers field by field. CloudTrail LookupEvents, which
moto does not implement, runs against the simulator alone.

Input: stdin is JSON {"sim": TARGET, "moto": TARGET}, TARGET = {"url", "admin": {"id",
"secret"}, "user": NAME, "user_key": {"id", "secret"}} (secrets on stdin only).
Output: one JSON document on stdout: `sim` and `moto`, each call's normalized answer, and
`differences`: every path where they differ. Values random by nature (key ids, secrets, user
ids, dates, request ids, markers) are replaced by their shape before comparing: `<AKIA…>`,
`<secret 40>`, `<datetime>`, … Secrets never appear in the output.
"""

import datetime
import json
import re
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

REGION = "us-east-1"
CONFIG = botocore.config.Config(retries={"total_max_attempts": 1}, region_name=REGION)


def shape(key, value):
    """The shape of a value that is random by nature; the value itself otherwise."""
    if isinstance(value, datetime.datetime):
        return "<datetime utc>" if value.utcoffset() == datetime.timedelta(0) else "<datetime naive>"
    if not isinstance(value, str):
        return value
    if key == "SecretAccessKey":
        return f"<secret {len(value)}>"
    for prefix, name in (("AKIA", "AccessKeyId"), ("AIDA", "UserId")):
        if re.fullmatch(prefix + r"[A-Z0-9]{16,17}", value):
            return f"<{prefix}... {len(value)}>"
    if key in ("Marker", "NextToken", "RequestId", "EventId"):
        return "<token>"
    return value


def ids_in(text):
    """`text` with the random ids it quotes replaced by their shape."""
    return re.sub(r"\b(AKIA|AIDA)[A-Z0-9]{16,17}\b", lambda m: f"<{m.group(1)}...>", text)


def normalize(value, key=None):
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in sorted(value.items()) if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [normalize(v, key) for v in value]
    return shape(key, value)


def call(fn, **kwargs):
    """The answer as boto3 parsed it, or the error as botocore parsed it."""
    try:
        answer = fn(**kwargs)
        return {"status": answer["ResponseMetadata"]["HTTPStatusCode"], "answer": normalize(answer)}
    except ClientError as e:
        error = e.response.get("Error", {})
        return {
            "status": e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            "error": error.get("Code"),
            "error_type": error.get("Type"),
            "message": ids_in(error.get("Message") or ""),
        }


def client(service, target, key):
    return boto3.client(
        service, endpoint_url=target["url"], aws_access_key_id=key["id"],
        aws_secret_access_key=key["secret"], config=CONFIG)


def scenario(target):
    """Every call of rekey's AWS provider and hunt, in the order a rotation makes them."""
    iam = client("iam", target, target["admin"])
    user, old = target["user"], target["user_key"]
    out = {}
    out["GetCallerIdentity admin"] = call(client("sts", target, target["admin"]).get_caller_identity)
    out["ListUsers MaxItems=1"] = call(iam.list_users, MaxItems=1)
    pages = iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 1})
    out["ListUsers every page"] = sorted(u["UserName"] for p in pages for u in p["Users"])
    out["GetUser"] = call(iam.get_user, UserName=user)
    out["GetUser unknown"] = call(iam.get_user, UserName="nobody")
    out["ListAccessKeys"] = call(iam.list_access_keys, UserName=user)
    out["ListAccessKeys unknown user"] = call(iam.list_access_keys, UserName="nobody")
    out["GetAccessKeyLastUsed never used"] = call(iam.get_access_key_last_used, AccessKeyId=old["id"])
    created = iam.create_access_key(UserName=user)["AccessKey"]
    out["CreateAccessKey"] = {"answer": normalize({"AccessKey": created})}
    new = {"id": created["AccessKeyId"], "secret": created["SecretAccessKey"]}
    out["GetCallerIdentity new key"] = call(client("sts", target, new).get_caller_identity)
    out["GetAccessKeyLastUsed after use"] = call(iam.get_access_key_last_used, AccessKeyId=new["id"])
    out["CreateAccessKey third"] = call(iam.create_access_key, UserName=user)
    out["UpdateAccessKey Inactive"] = call(iam.update_access_key, UserName=user, AccessKeyId=old["id"], Status="Inactive")
    out["ListAccessKeys after update"] = call(iam.list_access_keys, UserName=user)
    out["GetCallerIdentity inactive key"] = call(client("sts", target, old).get_caller_identity)
    out["UpdateAccessKey bad status"] = call(iam.update_access_key, UserName=user, AccessKeyId=old["id"], Status="Paused")
    out["UpdateAccessKey Active"] = call(iam.update_access_key, UserName=user, AccessKeyId=old["id"], Status="Active")
    out["DeleteAccessKey"] = call(iam.delete_access_key, UserName=user, AccessKeyId=old["id"])
    out["DeleteAccessKey again"] = call(iam.delete_access_key, UserName=user, AccessKeyId=old["id"])
    out["GetCallerIdentity deleted key"] = call(client("sts", target, old).get_caller_identity)
    out["ListAccessKeys at the end"] = call(iam.list_access_keys, UserName=user)
    out["LookupEvents"] = lookup_events(client("cloudtrail", target, target["admin"]))
    return out


def lookup_events(trail):
    """Every page of one access key's events, as rekey's hunt asks for them."""
    try:
        pages = trail.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": "AKIAHUNTEDHUNTEDKEY1"}],
            StartTime=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
            EndTime=datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc),
            PaginationConfig={"PageSize": 2},
        )
        events = [e for p in pages for e in p["Events"]]
    except ClientError as e:
        return {"error": e.response.get("Error", {}).get("Code"),
                "status": e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")}
    return {
        "names": [e["EventName"] for e in events],
        "fields": sorted({k for e in events for k in e}),
        "types": sorted({f"{k}:{type(v).__name__}" for e in events for k, v in e.items()}),
        "record_is_json": all(isinstance(json.loads(e["CloudTrailEvent"]), dict) for e in events),
    }


def differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            where = f"{path}.{k}" if path else k
            if k not in a:
                out.append(f"{where}: only moto answers {json.dumps(b[k], default=str)}")
            elif k not in b:
                out.append(f"{where}: only the simulator answers {json.dumps(a[k], default=str)}")
            else:
                out += differences(a[k], b[k], where)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: simulator {json.dumps(a, default=str)} / moto {json.dumps(b, default=str)}"]
    return []


def main():
    given = json.load(sys.stdin)
    sim, moto = scenario(given["sim"]), scenario(given["moto"])
    json.dump({"sim": sim, "moto": moto, "differences": differences(sim, moto)},
              sys.stdout, indent=1, sort_keys=True, default=str)


if __name__ == "__main__":
    main()
