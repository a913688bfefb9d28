"""DuckDB standing in for Athena in rekey's tests (tests/athena.rs).

Loads rows shaped as the CloudTrail table's SerDe presents a record (struct columns as objects
with lowercase keys, requestparameters and the other JSON columns as their JSON text, the
`timestamp` and `region` partitions) into a table with the documented column types, then runs
the SQL rekey generates for Athena (Trino's dialect) through a thin dialect layer: three macros
giving DuckDB Trino's names and meanings.

    python3 duckdb_athena.py ROWS.jsonl QUERIES.json DATABASE.TABLE  > results.json

QUERIES.json is a list of SQL texts; the output a list of {"rows": [[text or null, ...], ...]}
or {"error": "..."}, one per query, every value as text (as GetQueryResults gives it).
"""

import json
import sys

import duckdb

# Trino's functions the generated SQL uses, in DuckDB.
DIALECT = [
    # json_extract_scalar: the scalar as text; NULL for an object, an array, null or no value.
    "CREATE MACRO json_extract_scalar(j, p) AS (CASE WHEN json_type(j, p) IN "
    "('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE', 'BOOLEAN') THEN json_extract_string(j, p) END)",
    # regexp_like: a match anywhere in the text (Java regex there, RE2 here).
    "CREATE MACRO regexp_like(s, p) AS regexp_matches(s, p)",
    # json_format(CAST(x AS JSON)): the JSON text.
    "CREATE MACRO json_format(j) AS CAST(j AS VARCHAR)",
]

V = "VARCHAR"
SESSION = (
    "STRUCT(attributes STRUCT(mfaauthenticated VARCHAR, creationdate VARCHAR), "
    "sessionissuer STRUCT(type VARCHAR, principalid VARCHAR, arn VARCHAR, accountid VARCHAR, "
    "username VARCHAR), ec2roledelivery VARCHAR, "
    "webidfederationdata STRUCT(federatedprovider VARCHAR))"
)
COLUMNS = {
    "eventversion": V,
    "useridentity": "STRUCT(type VARCHAR, principalid VARCHAR, arn VARCHAR, accountid VARCHAR, "
    "invokedby VARCHAR, accesskeyid VARCHAR, username VARCHAR, "
    "onbehalfof STRUCT(userid VARCHAR, identitystorearn VARCHAR), sessioncontext " + SESSION + ")",
    "eventtime": V,
    "eventsource": V,
    "eventname": V,
    "awsregion": V,
    "sourceipaddress": V,
    "useragent": V,
    "errorcode": V,
    "errormessage": V,
    "requestparameters": V,
    "responseelements": V,
    "additionaleventdata": V,
    "requestid": V,
    "eventid": V,
    "readonly": V,
    "resources": "STRUCT(arn VARCHAR, accountid VARCHAR, type VARCHAR)[]",
    "eventtype": V,
    "apiversion": V,
    "recipientaccountid": V,
    "serviceeventdetails": V,
    "sharedeventid": V,
    "vpcendpointid": V,
    "eventcategory": V,
    "tlsdetails": "STRUCT(tlsversion VARCHAR, ciphersuite VARCHAR, clientprovidedhostheader VARCHAR)",
    "timestamp": V,
    "region": V,
}


def text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def main():
    rows_path, queries_path, name = sys.argv[1], sys.argv[2], sys.argv[3]
    database, table = name.split(".", 1)
    con = duckdb.connect()
    for m in DIALECT:
        con.execute(m)
    con.execute(f'CREATE SCHEMA "{database}"')
    con.execute(
        f'CREATE TABLE "{database}"."{table}" AS SELECT * FROM '
        "read_json(?, format = 'newline_delimited', columns = ?)",
        [rows_path, COLUMNS],
    )
    with open(queries_path, encoding="utf-8") as f:
        queries = json.load(f)
    out = []
    for q in queries:
        try:
            rows = con.execute(q).fetchall()
            out.append({"rows": [[text(v) for v in r] for r in rows]})
        except Exception as e:  # reported per query; the test decides
            out.append({"error": str(e)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
