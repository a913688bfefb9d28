//! The standard CloudTrail table's columns (the DDL AWS documents for Athena, with partition
//! projection) and how each maps to a path of the CloudTrail record: which SQL expression a
//! rule's field becomes, what the query selects, and how a result row becomes the record the
//! streaming engine would have read.
//!
//! Three kinds of column: plain strings (`eventname`, struct fields such as
//! `useridentity.accesskeyid`), JSON text (`requestparameters`: the record's object as text,
//! read with `json_extract_scalar`), and `resources`, an array of structs selected as JSON.

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string value (or a struct field that is one).
    Text,
    /// The JSON text of an object (`requestparameters`, `responseelements`, …).
    Json,
    /// `"true"`/`"false"`, a JSON boolean in the record.
    Bool,
    /// `resources`: ARRAY<STRUCT<arn, accountid, type>>, selected as JSON.
    Resources,
}

/// One selected column: its SQL expression, the record path it fills, its kind.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub sql: &'static str,
    pub path: &'static str,
    pub kind: Kind,
}

const fn c(sql: &'static str, path: &'static str, kind: Kind) -> Column {
    Column { sql, path, kind }
}

/// Every column rekey reads, in select order. `useridentity.sessioncontext.webidfederationdata.
/// attributes` (a map) and `addendum`/`edgedevicedetails` (absent from older tables) are not
/// read: a rule naming them cannot be compiled and says so.
pub const COLUMNS: &[Column] = &[
    c("eventversion", "eventVersion", Kind::Text),
    c("useridentity.type", "userIdentity.type", Kind::Text),
    c(
        "useridentity.principalid",
        "userIdentity.principalId",
        Kind::Text,
    ),
    c("useridentity.arn", "userIdentity.arn", Kind::Text),
    c(
        "useridentity.accountid",
        "userIdentity.accountId",
        Kind::Text,
    ),
    c(
        "useridentity.invokedby",
        "userIdentity.invokedBy",
        Kind::Text,
    ),
    c(
        "useridentity.accesskeyid",
        "userIdentity.accessKeyId",
        Kind::Text,
    ),
    c("useridentity.username", "userIdentity.userName", Kind::Text),
    c(
        "useridentity.onbehalfof.userid",
        "userIdentity.onBehalfOf.userId",
        Kind::Text,
    ),
    c(
        "useridentity.onbehalfof.identitystorearn",
        "userIdentity.onBehalfOf.identityStoreArn",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.attributes.mfaauthenticated",
        "userIdentity.sessionContext.attributes.mfaAuthenticated",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.attributes.creationdate",
        "userIdentity.sessionContext.attributes.creationDate",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.sessionissuer.type",
        "userIdentity.sessionContext.sessionIssuer.type",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.sessionissuer.principalid",
        "userIdentity.sessionContext.sessionIssuer.principalId",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.sessionissuer.arn",
        "userIdentity.sessionContext.sessionIssuer.arn",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.sessionissuer.accountid",
        "userIdentity.sessionContext.sessionIssuer.accountId",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.sessionissuer.username",
        "userIdentity.sessionContext.sessionIssuer.userName",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.ec2roledelivery",
        "userIdentity.sessionContext.ec2RoleDelivery",
        Kind::Text,
    ),
    c(
        "useridentity.sessioncontext.webidfederationdata.federatedprovider",
        "userIdentity.sessionContext.webIdFederationData.federatedProvider",
        Kind::Text,
    ),
    c("eventtime", "eventTime", Kind::Text),
    c("eventsource", "eventSource", Kind::Text),
    c("eventname", "eventName", Kind::Text),
    c("awsregion", "awsRegion", Kind::Text),
    c("sourceipaddress", "sourceIPAddress", Kind::Text),
    c("useragent", "userAgent", Kind::Text),
    c("errorcode", "errorCode", Kind::Text),
    c("errormessage", "errorMessage", Kind::Text),
    c("requestparameters", "requestParameters", Kind::Json),
    c("responseelements", "responseElements", Kind::Json),
    c("additionaleventdata", "additionalEventData", Kind::Json),
    c("requestid", "requestID", Kind::Text),
    c("eventid", "eventID", Kind::Text),
    c("readonly", "readOnly", Kind::Bool),
    c(
        "json_format(CAST(resources AS JSON))",
        "resources",
        Kind::Resources,
    ),
    c("eventtype", "eventType", Kind::Text),
    c("apiversion", "apiVersion", Kind::Text),
    c("recipientaccountid", "recipientAccountId", Kind::Text),
    c("serviceeventdetails", "serviceEventDetails", Kind::Json),
    c("sharedeventid", "sharedEventID", Kind::Text),
    c("vpcendpointid", "vpcEndpointId", Kind::Text),
    c("eventcategory", "eventCategory", Kind::Text),
    c("tlsdetails.tlsversion", "tlsDetails.tlsVersion", Kind::Text),
    c(
        "tlsdetails.ciphersuite",
        "tlsDetails.cipherSuite",
        Kind::Text,
    ),
    c(
        "tlsdetails.clientprovidedhostheader",
        "tlsDetails.clientProvidedHostHeader",
        Kind::Text,
    ),
];

/// What a rule's field path reads in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSql {
    /// A string column (exact: the record's value, NULL when absent).
    Column(&'static str),
    /// A JSON-text column whole: its text is what the record's object reads as.
    JsonWhole(&'static str),
    /// A path inside a JSON-text column: `json_extract_scalar(column, '$.a.b')` — exact for
    /// scalars; objects, arrays and paths through arrays read as NULL there, while the
    /// evaluator sees their JSON text (so the compiler treats it as not exact).
    JsonPath {
        column: &'static str,
        path: String,
        /// The path's last key, searched in the column's text as `"key"` to over-approximate.
        last_key: String,
    },
}

/// The SQL a record path reads, or why there is none.
pub fn field_sql(path: &str) -> Result<FieldSql, String> {
    for col in COLUMNS {
        if col.path == path {
            return Ok(match col.kind {
                Kind::Text | Kind::Bool => FieldSql::Column(col.sql),
                Kind::Json => FieldSql::JsonWhole(col.sql),
                Kind::Resources => {
                    return Err("`resources` is an array of structs; no SQL compares it".into());
                }
            });
        }
        if col.kind == Kind::Json
            && let Some(rest) = path
                .strip_prefix(col.path)
                .and_then(|r| r.strip_prefix('.'))
        {
            let keys: Vec<&str> = rest.split('.').collect();
            let plain = |k: &&str| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            if !keys.iter().all(plain) {
                return Err(format!(
                    "`{path}`: a key with characters outside [A-Za-z0-9_] has no portable JSON path"
                ));
            }
            return Ok(FieldSql::JsonPath {
                column: col.sql,
                path: format!("$.{rest}"),
                last_key: keys.last().copied().unwrap_or_default().to_string(),
            });
        }
    }
    Err(format!(
        "`{path}` is not a column of the CloudTrail table (or a struct, which no SQL compares)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_map_to_columns_and_json_paths() {
        assert_eq!(
            field_sql("userIdentity.accessKeyId"),
            Ok(FieldSql::Column("useridentity.accesskeyid"))
        );
        assert_eq!(
            field_sql("requestParameters"),
            Ok(FieldSql::JsonWhole("requestparameters"))
        );
        assert_eq!(
            field_sql("requestParameters.policyArn"),
            Ok(FieldSql::JsonPath {
                column: "requestparameters",
                path: "$.policyArn".into(),
                last_key: "policyArn".into()
            })
        );
        assert!(field_sql("requestParameters.a b").is_err());
        assert!(field_sql("userIdentity").is_err());
        assert!(field_sql("resources").is_err());
        assert!(field_sql("somethingElse").is_err());
    }
}
