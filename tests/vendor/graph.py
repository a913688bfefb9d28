"""Microsoft's authentication library (msal) and Microsoft Graph SDK for Python (msgraph-sdk, on
Kiota) against rekey's Azure simulator.

Input: argv[1] is the simulator's base URL, argv[2] the tenant; stdin is JSON {"client_id",
"client_secret", "object_id": the admin app's object id} (secrets on stdin only).
Output: one JSON document on stdout: what each call answered as the SDK parsed it, and
`unknown_fields`: every property of an answer that the SDK's model did not know (Kiota keeps
those in `additional_data`).

msal accepts only an https authority (its `canonicalize` refuses any other scheme, and so does
the token endpoint its OIDC discovery returns): the script records that refusal, then gives
msal an `http_client` (msal's documented extension point) that carries the fake host
https://login.rekey-sim.test to the loopback simulator and back — a stand-in for TLS only;
msal's discovery, token request and answer parsing are its own.
"""

import asyncio
import json
import sys
import uuid

import msal
import requests
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.applications.item.add_password.add_password_post_request_body import (
    AddPasswordPostRequestBody,
)
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
    RemovePasswordPostRequestBody,
)
from msgraph.generated.audit_logs.sign_ins.sign_ins_request_builder import SignInsRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_credential import PasswordCredential

FAKE_HOST = "https://login.rekey-sim.test"


class LoopbackHttp(requests.Session):
    """Requests to FAKE_HOST go to the simulator; the simulator's URLs in answers come back
    as FAKE_HOST ones (what a TLS-terminating proxy in front of it would look like)."""

    def __init__(self, sim):
        super().__init__()
        self.sim = sim

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url.replace(FAKE_HOST, self.sim), *args, **kwargs)
        response._content = response.content.replace(self.sim.encode(), FAKE_HOST.encode())
        return response


class StaticToken(AccessTokenProvider):
    """The token msal got, for every Graph request (Kiota's bearer-token contract)."""

    def __init__(self, token):
        self.token = token

    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return self.token

    def get_allowed_hosts_validator(self):
        return AllowedHostsValidator([])


def unknown(where, model, out):
    extra = sorted(k for k in (getattr(model, "additional_data", None) or {}) if not k.startswith("@odata."))
    if extra:
        out.append(f"{where}: {extra}")


def odata_error(e):
    return {
        "http_status": e.response_status_code,
        "code": e.error.code if e.error else None,
        "has_message": bool(e.error and e.error.message),
    }


def graph_client(base, token):
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken(token)))
    adapter.base_url = base
    return GraphServiceClient(request_adapter=adapter)


async def graph_calls(url, token, object_id, out):
    unknown_fields = out.setdefault("unknown_fields", [])
    v1 = graph_client(f"{url}/v1.0", token)
    app = v1.applications.by_application_id(object_id)

    body = AddPasswordPostRequestBody(password_credential=PasswordCredential(display_name="vendor-test"))
    added = await app.add_password.post(body)
    unknown("addPassword", added, unknown_fields)
    out["add_password"] = {
        "key_id_is_uuid": isinstance(added.key_id, uuid.UUID),
        "has_secret_text": bool(added.secret_text),
        "hint_is_prefix": bool(added.secret_text) and added.secret_text.startswith(added.hint or "\0"),
        "display_name": added.display_name,
        "dates_parsed": added.start_date_time is not None and added.end_date_time is not None,
        "end_after_start": added.end_date_time > added.start_date_time,
        "start_tz_aware": added.start_date_time.tzinfo is not None,
    }

    got = await app.get()
    unknown("application", got, unknown_fields)
    for i, p in enumerate(got.password_credentials or []):
        unknown(f"application.passwordCredentials[{i}]", p, unknown_fields)
    listed = [p.key_id for p in got.password_credentials or []]
    out["get_application"] = {
        "credentials": len(listed),
        "new_key_listed": added.key_id in listed,
        "secret_text_hidden": all(p.secret_text is None for p in got.password_credentials or []),
    }

    removed = await app.remove_password.post(RemovePasswordPostRequestBody(key_id=added.key_id))
    out["remove_password"] = {"returned": removed}
    got = await app.get()
    out["after_remove"] = {"new_key_listed": added.key_id in [p.key_id for p in got.password_credentials or []]}
    try:
        await app.remove_password.post(RemovePasswordPostRequestBody(key_id=added.key_id))
        out["remove_again"] = "removed"
    except ODataError as e:
        out["remove_again"] = odata_error(e)
    try:
        await v1.applications.by_application_id(str(uuid.uuid4())).get()
        out["get_unknown_app"] = "found"
    except ODataError as e:
        out["get_unknown_app"] = odata_error(e)

    # Service-principal sign-ins are Graph beta; the v1.0 SDK's builder on the beta base URL.
    beta = graph_client(f"{url}/beta", token)
    query = SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters(
        filter="createdDateTime ge 2026-01-01T00:00:00Z and createdDateTime le 2026-02-01T00:00:00Z"
        " and signInEventTypes/any(t: t eq 'servicePrincipal')",
        top=2,
    )
    page = await beta.audit_logs.sign_ins.get(request_configuration=RequestConfiguration(query_parameters=query))
    pages, ids = 0, []
    while page is not None:
        pages += 1
        for s in page.value or []:
            ids.append(s.id)
            unknown(f"signIn {s.id}", s, unknown_fields)
        unknown(f"signIns page {pages}", page, unknown_fields)
        link = page.odata_next_link
        page = await beta.audit_logs.sign_ins.with_url(link).get() if link else None
    out["sign_ins"] = {"pages": pages, "ids": ids}
    try:
        bad = SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters(filter="status/errorCode eq 0")
        await beta.audit_logs.sign_ins.get(request_configuration=RequestConfiguration(query_parameters=bad))
        out["sign_ins_unsupported_filter"] = "listed"
    except ODataError as e:
        out["sign_ins_unsupported_filter"] = odata_error(e)


def main():
    url, tenant = sys.argv[1].rstrip("/"), sys.argv[2]
    given = json.load(sys.stdin)
    out = {}
    try:
        msal.ConfidentialClientApplication(
            given["client_id"], client_credential=given["client_secret"],
            authority=f"{url}/{tenant}", instance_discovery=False, validate_authority=False)
        out["msal_http_authority"] = "accepted"
    except ValueError as e:
        out["msal_http_authority"] = "refused: " + str(e).split(" e.g.")[0]

    scope = f"{url}/.default"

    def app(secret):
        return msal.ConfidentialClientApplication(
            given["client_id"], client_credential=secret, authority=f"{FAKE_HOST}/{tenant}",
            instance_discovery=False, http_client=LoopbackHttp(url))

    result = app(given["client_secret"]).acquire_token_for_client(scopes=[scope])
    out["token"] = {
        "has_access_token": bool(result.get("access_token")),
        "token_type": result.get("token_type"),
        "expires_in_positive": (result.get("expires_in") or 0) > 0,
        "error": result.get("error"),
    }
    wrong = app("not-the-secret").acquire_token_for_client(scopes=[scope])
    out["wrong_secret"] = {"error": wrong.get("error"), "error_codes": wrong.get("error_codes")}
    no_scope = app(given["client_secret"]).acquire_token_for_client(scopes=[f"{url}/arm/nothing"])
    out["scope_without_default"] = {"error": no_scope.get("error"), "error_codes": no_scope.get("error_codes")}
    try:
        msal.ConfidentialClientApplication(
            given["client_id"], client_credential=given["client_secret"],
            authority=f"{FAKE_HOST}/no-such-tenant", instance_discovery=False,
            http_client=LoopbackHttp(url))
        out["unknown_tenant"] = "accepted"
    except ValueError as e:
        out["unknown_tenant"] = "refused" if "Unable to get authority configuration" in str(e) else str(e)

    asyncio.run(graph_calls(url, result["access_token"], given["object_id"], out))
    json.dump(out, sys.stdout, indent=1, sort_keys=True, default=str)


if __name__ == "__main__":
    main()
