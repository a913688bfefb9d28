// Octokit (npm @octokit/rest, installed by scripts/test into .npm-octokit) against rekey's GitHub
// simulator: deploy keys created, listed (every page, through Octokit's Link-header paging),
// read and deleted, and the organization audit log paged through its cursors.
//
// Input: argv[2] is the simulator's base URL; stdin is JSON {"token", "repo": "owner/name",
// "org", "keys": [two OpenSSH public keys]} (the token on stdin only).
// Output: one JSON document on stdout: what each call answered, and `schema_violations`:
// every answer checked against GitHub's published OpenAPI description (npm @octokit/openapi,
// the GitHub Enterprise Cloud document, which has the audit log; installed with Prism into
// .npm-prism): types, required properties, and properties the description does not know.

import { readFileSync } from "node:fs";

const root = new URL("../../", import.meta.url);
const { Octokit } = await import(
  new URL(".npm-octokit/node_modules/@octokit/rest/dist-src/index.js", root).href
);
const spec = JSON.parse(
  readFileSync(
    new URL(".npm-prism/node_modules/@octokit/openapi/generated/ghec.deref.json", root),
    "utf8",
  ),
);

const violations = [];

/** Checks `value` against an OpenAPI 3.0 schema (the dereferenced description). */
function check(value, schema, where, { unknownProps = true } = {}) {
  if (value === null) {
    if (!schema.nullable) violations.push(`${where}: null where the description has no null`);
    return;
  }
  const type = schema.type;
  const kind = Array.isArray(value) ? "array" : typeof value;
  if (type === "integer" && !Number.isInteger(value)) return violations.push(`${where}: expected an integer, got ${kind}`);
  if (type === "number" && kind !== "number") return violations.push(`${where}: expected a number, got ${kind}`);
  if (type === "string" && kind !== "string") return violations.push(`${where}: expected a string, got ${kind}`);
  if (type === "boolean" && kind !== "boolean") return violations.push(`${where}: expected a boolean, got ${kind}`);
  if (type === "array") {
    if (kind !== "array") return violations.push(`${where}: expected an array, got ${kind}`);
    value.forEach((v, i) => check(v, schema.items ?? {}, `${where}[${i}]`, { unknownProps }));
  }
  if (type === "object") {
    if (kind !== "object") return violations.push(`${where}: expected an object, got ${kind}`);
    const props = schema.properties ?? {};
    for (const r of schema.required ?? []) if (!(r in value)) violations.push(`${where}: required \`${r}\` missing`);
    for (const [k, v] of Object.entries(value)) {
      if (k in props) check(v, props[k], `${where}.${k}`, { unknownProps });
      else if (unknownProps && schema.properties) violations.push(`${where}: unknown property \`${k}\``);
    }
  }
  if (type === "string" && schema.format === "date-time" && !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value))
    violations.push(`${where}: \`${value}\` is not a date-time`);
}

/** The schema of an operation's answer with `status`. */
function answerSchema(path, method, status) {
  return spec.paths[path][method].responses[String(status)].content["application/json"].schema;
}

const refusal = (e) => ({ status: e.status, message: e.response?.data?.message, errors: e.response?.data?.errors });

const base = process.argv[2];
const input = JSON.parse(readFileSync(0, "utf8"));
const [owner, repo] = input.repo.split("/");
const octokit = new Octokit({ auth: input.token, baseUrl: base, request: { retries: 0 } });
const out = {};

const created = [];
for (const [i, key] of input.keys.entries()) {
  const r = await octokit.rest.repos.createDeployKey({ owner, repo, title: `vendor-${i}`, key, read_only: i === 0 });
  check(r.data, answerSchema("/repos/{owner}/{repo}/keys", "post", 201), `createDeployKey[${i}]`);
  created.push(r);
}
out.create = created.map((r) => ({ status: r.status, data: r.data }));

const listed = await octokit.paginate(octokit.rest.repos.listDeployKeys, { owner, repo, per_page: 1 });
check(listed, answerSchema("/repos/{owner}/{repo}/keys", "get", 200), "listDeployKeys");
const firstPage = await octokit.rest.repos.listDeployKeys({ owner, repo, per_page: 1 });
out.list = { ids: listed.map((k) => k.id), first_page_link: firstPage.headers.link ?? null };

const id = created[0].data.id;
const got = await octokit.rest.repos.getDeployKey({ owner, repo, key_id: id });
check(got.data, answerSchema("/repos/{owner}/{repo}/keys/{key_id}", "get", 200), "getDeployKey");
out.get = { status: got.status, same_as_created: JSON.stringify(got.data) === JSON.stringify(created[0].data) };

try {
  await octokit.rest.repos.createDeployKey({ owner, repo, title: "again", key: input.keys[0] });
  out.create_again = "created";
} catch (e) {
  out.create_again = refusal(e);
}

const deleted = await octokit.rest.repos.deleteDeployKey({ owner, repo, key_id: id });
out.delete = { status: deleted.status, data: deleted.data ?? null };
try {
  await octokit.rest.repos.getDeployKey({ owner, repo, key_id: id });
  out.get_after_delete = "found";
} catch (e) {
  out.get_after_delete = refusal(e);
}
try {
  await octokit.rest.repos.listDeployKeys({ owner, repo: "no-such-repo" });
  out.list_unknown_repo = "listed";
} catch (e) {
  out.list_unknown_repo = refusal(e);
}

// The audit log through Octokit's own paging (cursor links), two events a page.
const auditSchema = answerSchema("/orgs/{org}/audit-log", "get", 200);
const events = await octokit.paginate("GET /orgs/{org}/audit-log", {
  org: input.org,
  phrase: "action:repo",
  per_page: 2,
});
// GitHub documents only some of an event's properties: unknown ones are not violations here.
check(events, auditSchema, "audit-log", { unknownProps: false });
out.audit = { ids: events.map((e) => e._document_id) };
for (const [name, params] of [
  ["audit_order_asc", { order: "asc" }],
  ["audit_unsupported_phrase", { phrase: "repo:acme/app" }],
]) {
  try {
    const r = await octokit.request("GET /orgs/{org}/audit-log", { org: input.org, ...params });
    out[name] = { status: r.status };
  } catch (e) {
    out[name] = refusal(e);
  }
}

out.schema_violations = violations;
process.stdout.write(JSON.stringify(out, null, 1));
