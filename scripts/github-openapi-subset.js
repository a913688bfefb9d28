#!/usr/bin/env node
// Extracts from GitHub's published OpenAPI description (npm @octokit/openapi, dereferenced) the
// operations rekey's GitHub providers call, so that Prism starts in seconds instead of loading
// all of api.github.com. The operations are kept whole, exactly as GitHub publishes them.
//
// usage: github-openapi-subset.js api.github.com.deref.json OUT.json
'use strict';
const fs = require('fs');
const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: github-openapi-subset.js api.github.com.deref.json OUT.json');
  process.exit(2);
}
const used = {
  '/repos/{owner}/{repo}/keys': ['get', 'post'],
  '/repos/{owner}/{repo}/keys/{key_id}': ['get', 'delete'],
  '/user': ['get'],
  '/credentials/revoke': ['post'],
};
const spec = JSON.parse(fs.readFileSync(input, 'utf8'));
const paths = {};
for (const [path, methods] of Object.entries(used)) {
  const item = spec.paths[path];
  if (!item) {
    console.error(`${path} is not in ${input}`);
    process.exit(1);
  }
  paths[path] = {};
  for (const m of methods) {
    if (!item[m]) {
      console.error(`${m.toUpperCase()} ${path} is not in ${input}`);
      process.exit(1);
    }
    paths[path][m] = item[m];
  }
  if (item.parameters) paths[path].parameters = item.parameters;
}
const subset = { openapi: spec.openapi, info: spec.info, servers: spec.servers, paths };
fs.writeFileSync(output, JSON.stringify(subset));
console.error(`${output}: ${Object.keys(paths).length} paths from ${spec.info.title} ${spec.info.version}`);
