//! The post-compromise techniques of the built-in pack: for each, a record shaped like the real
//! one (CloudTrail's record of that API, Cloud Logging's audit entry, the Activity Log event,
//! GitHub's audit event) fires its rule, and a look-alike a CI credential produces does not.
//! Then severity from the baseline, correlations (bursts, third-party correlation files), the
//! grouped report, and a CI deployer's benign weeks that must stay quiet.

use rekey::hunt::Severity;
use rekey::hunt::engine::{self, HuntOptions};
use rekey::hunt::findings::HuntReport;
use rekey::hunt::pack::RuleSet;
use rekey::hunt::source::Source;
use serde_json::{Value, json};
use std::path::Path;

const KEY: &str = "AKIAEXAMPLECI0000001";
const ACCOUNT: &str = "111122223333";

/// A CloudTrail record of `event_name` by the CI key's IAM user, from its usual address.
fn ct(source: &str, event_name: &str, params: Value) -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": format!("arn:aws:iam::{ACCOUNT}:user/ci-deployer"),
            "accountId": ACCOUNT,
            "accessKeyId": KEY,
            "userName": "ci-deployer"
        },
        "eventTime": "2023-03-01T10:00:00Z",
        "eventSource": source,
        "eventName": event_name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.13.0",
        "requestParameters": params,
        "responseElements": null,
        "eventID": uuid(event_name, &params_text(&params)),
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management"
    })
}

fn params_text(v: &Value) -> String {
    v.to_string()
}

/// A stable record id from its content.
fn uuid(a: &str, b: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (a, b).hash(&mut h);
    format!("{:016x}", h.finish())
}

fn with(mut v: Value, path: &str, x: Value) -> Value {
    let mut cur = &mut v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur[*p] = x;
            break;
        }
        cur = &mut cur[*p];
    }
    v
}

fn at(v: Value, time: &str) -> Value {
    let id = uuid(time, &v.to_string());
    with(with(v, "eventTime", json!(time)), "eventID", json!(id))
}

fn gcp(method: &str, status: Option<i64>) -> Value {
    let mut v = json!({
        "insertId": uuid(method, "gcp"),
        "logName": "projects/acme/logs/cloudaudit.googleapis.com%2Factivity",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {
                "principalEmail": "ci@acme.iam.gserviceaccount.com",
                "serviceAccountKeyName": "//iam.googleapis.com/projects/acme/serviceAccounts/ci@acme.iam.gserviceaccount.com/keys/0123456789abcdef"
            },
            "requestMetadata": {"callerIp": "198.51.100.23", "callerSuppliedUserAgent": "google-cloud-sdk gcloud/412.0.0"},
            "serviceName": method.split('.').take(3).collect::<Vec<_>>().join("."),
            "methodName": method,
            "resourceName": "projects/acme",
            "status": {}
        },
        "resource": {"type": "project"},
        "severity": "NOTICE",
        "timestamp": "2023-03-01T10:00:00.123456Z"
    });
    if let Some(code) = status {
        v["protoPayload"]["status"] = json!({"code": code, "message": "PERMISSION_DENIED"});
    }
    v
}

fn azure(operation: &str) -> Value {
    json!({
        "caller": "7d1c4b8e-1111-4a2b-9c3d-5e6f7a8b9c0d",
        "claims": {"appid": "11111111-2222-3333-4444-555555555555", "ipaddr": "203.0.113.77"},
        "eventDataId": uuid(operation, "azure"),
        "category": {"value": "Administrative", "localizedValue": "Administrative"},
        "eventTimestamp": "2023-03-01T10:00:00.1234567Z",
        "httpRequest": {"clientIpAddress": "203.0.113.77", "method": "PUT"},
        "level": "Informational",
        "operationName": {"value": operation, "localizedValue": operation},
        "resourceId": "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg/providers/x",
        "status": {"value": "Succeeded", "localizedValue": "Succeeded"},
        "subscriptionId": "00000000-0000-0000-0000-0000000000aa"
    })
}

fn github(action: &str, repo: &str, ms: i64) -> Value {
    json!({
        "@timestamp": ms,
        "_document_id": uuid(action, &format!("{repo}{ms}")),
        "action": action,
        "actor": "ci-bot",
        "actor_ip": "192.0.2.10",
        "org": "acme",
        "repo": repo,
        "hashed_token": "4b1d2b0c3f1e5a6c7d8e9f00112233445566778899aabbccddeeff0011223344",
        "created_at": ms
    })
}

/// Writes `records` as one input of `source` and hunts it with the built-in pack.
fn hunt_records(source: Source, records: &[Value], since: &str) -> HuntReport {
    hunt_with(&RuleSet::builtin(), source, records, since)
}

fn hunt_with(rules: &RuleSet, source: Source, records: &[Value], since: &str) -> HuntReport {
    let dir = tempfile::tempdir().unwrap();
    let path = write_input(dir.path(), source, records);
    let opts = HuntOptions {
        inputs: vec![(source, path)],
        since: since.parse().unwrap(),
        ..Default::default()
    };
    engine::run(rules, &opts)
}

fn write_input(dir: &Path, source: Source, records: &[Value]) -> std::path::PathBuf {
    let (name, text) = match source {
        Source::Cloudtrail => ("ct.json", json!({ "Records": records }).to_string()),
        Source::GcpLogging => (
            "gcp.jsonl",
            records
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Source::AzureActivity => ("azure.json", json!({ "value": records }).to_string()),
        Source::GithubAudit => ("github.json", Value::Array(records.to_vec()).to_string()),
        _ => unreachable!("not used here"),
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn fired(r: &HuntReport, title: &str) -> usize {
    r.findings.iter().filter(|f| &*f.rule == title).count()
}

/// One technique: its rule's title, a true record and a look-alike.
struct Case {
    title: &'static str,
    source: Source,
    hit: Vec<Value>,
    miss: Vec<Value>,
}

fn aws_cases() -> Vec<Case> {
    let iam = "iam.amazonaws.com";
    let ec2 = "ec2.amazonaws.com";
    let lambda = "lambda.amazonaws.com";
    let c = |title, hit: Value, miss: Value| Case {
        title,
        source: Source::Cloudtrail,
        hit: vec![hit],
        miss: vec![miss],
    };
    let outside_trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::193672423079:root"},"Action":"sts:AssumeRole"}]}"#;
    let own_trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let console = |mfa: &str, kind: &str| {
        let mut v = ct("signin.amazonaws.com", "ConsoleLogin", Value::Null);
        v["userIdentity"]["type"] = json!(kind);
        v["additionalEventData"] = json!({"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No", "MFAUsed": mfa});
        v["responseElements"] = json!({"ConsoleLogin": "Success"});
        v
    };
    vec![
        c(
            "IAM user created",
            ct(
                iam,
                "CreateUser",
                json!({"path": "/", "userName": "backup-admin"}),
            ),
            ct(iam, "GetUser", json!({"userName": "backup-admin"})),
        ),
        c(
            "Access key created for another IAM user",
            ct(iam, "CreateAccessKey", json!({"userName": "admin"})),
            ct(iam, "CreateAccessKey", json!({"userName": "ci-deployer"})),
        ),
        c(
            "Console password created or changed for an IAM user",
            ct(
                iam,
                "CreateLoginProfile",
                json!({"passwordResetRequired": false, "userName": "admin"}),
            ),
            ct(iam, "GetLoginProfile", json!({"userName": "admin"})),
        ),
        c(
            "Administrator policy attached to a user, group or role",
            ct(
                iam,
                "AttachUserPolicy",
                json!({"userName": "ci-deployer", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
            ),
            ct(
                iam,
                "AttachRolePolicy",
                json!({"roleName": "app", "policyArn": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}),
            ),
        ),
        c(
            "Role trust policy trusts an outside account or anyone",
            ct(
                iam,
                "UpdateAssumeRolePolicy",
                json!({"roleName": "app", "policyDocument": outside_trust}),
            ),
            ct(
                iam,
                "UpdateAssumeRolePolicy",
                json!({"roleName": "app", "policyDocument": own_trust}),
            ),
        ),
        c(
            "Role trust policy trusts an outside account or anyone",
            ct(
                iam,
                "CreateRole",
                json!({"roleName": "x", "assumeRolePolicyDocument": outside_trust}),
            ),
            ct(
                iam,
                "CreateRole",
                json!({"roleName": "x", "assumeRolePolicyDocument": r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#}),
            ),
        ),
        c(
            "Role trust policy changed",
            ct(
                iam,
                "UpdateAssumeRolePolicy",
                json!({"roleName": "app", "policyDocument": own_trust}),
            ),
            ct(iam, "GetRole", json!({"roleName": "app"})),
        ),
        c(
            "Lambda function code, configuration or layers changed",
            ct(
                lambda,
                "UpdateFunctionCode20150331v2",
                json!({"functionName": "arn:aws:lambda:us-east-1:111122223333:function:api", "publish": true, "dryRun": false}),
            ),
            ct(
                lambda,
                "UpdateFunctionConfiguration20150331v2",
                json!({"functionName": "api", "timeout": 30}),
            ),
        ),
        c(
            "Lambda function code, configuration or layers changed",
            ct(
                lambda,
                "UpdateFunctionConfiguration20150331v2",
                json!({"functionName": "api", "layers": ["arn:aws:lambda:us-east-1:193672423079:layer:x:1"]}),
            ),
            ct(
                lambda,
                "GetFunction20150331v2",
                json!({"functionName": "api"}),
            ),
        ),
        c(
            "Lambda function or layer opened to anyone",
            ct(
                lambda,
                "AddPermission20150331v2",
                json!({"functionName": "api", "statementId": "backdoor", "action": "lambda:InvokeFunction", "principal": "*"}),
            ),
            ct(
                lambda,
                "AddPermission20150331v2",
                json!({"functionName": "api", "statementId": "s3", "action": "lambda:InvokeFunction", "principal": "s3.amazonaws.com"}),
            ),
        ),
        c(
            "Lambda function or layer opened to anyone",
            ct(
                lambda,
                "CreateFunctionUrlConfig20211031",
                json!({"functionName": "api", "authType": "NONE"}),
            ),
            ct(
                lambda,
                "CreateFunctionUrlConfig20211031",
                json!({"functionName": "api", "authType": "AWS_IAM"}),
            ),
        ),
        c(
            "IAM Roles Anywhere trust anchor created",
            ct(
                "rolesanywhere.amazonaws.com",
                "CreateTrustAnchor",
                json!({"enabled": true, "name": "anchor", "source": {"sourceType": "CERTIFICATE_BUNDLE"}}),
            ),
            ct(
                "rolesanywhere.amazonaws.com",
                "ListTrustAnchors",
                Value::Null,
            ),
        ),
        c(
            "STS federation token issued",
            ct(
                "sts.amazonaws.com",
                "GetFederationToken",
                json!({"name": "x", "durationSeconds": 129600}),
            ),
            ct("sts.amazonaws.com", "GetSessionToken", json!({})),
        ),
        c(
            "CloudTrail trail stopped or deleted",
            ct(
                "cloudtrail.amazonaws.com",
                "StopLogging",
                json!({"name": "org-trail"}),
            ),
            ct(
                "cloudtrail.amazonaws.com",
                "StartLogging",
                json!({"name": "org-trail"}),
            ),
        ),
        c(
            "CloudTrail trail or event selectors changed",
            ct(
                "cloudtrail.amazonaws.com",
                "PutEventSelectors",
                json!({"trailName": "org-trail", "eventSelectors": [{"readWriteType": "ReadOnly", "includeManagementEvents": false}]}),
            ),
            ct(
                "cloudtrail.amazonaws.com",
                "GetEventSelectors",
                json!({"trailName": "org-trail"}),
            ),
        ),
        c(
            "VPC flow logs deleted",
            ct(
                ec2,
                "DeleteFlowLogs",
                json!({"DeleteFlowLogsRequest": {"FlowLogId": {"tag": 1, "content": "fl-064ed3a785e4a37ef"}}}),
            ),
            ct(ec2, "CreateFlowLogs", json!({"CreateFlowLogsRequest": {}})),
        ),
        c(
            "DNS query logging deleted or detached",
            ct(
                "route53resolver.amazonaws.com",
                "DeleteResolverQueryLogConfig",
                json!({"resolverQueryLogConfigId": "rqlc-1"}),
            ),
            ct(
                "route53resolver.amazonaws.com",
                "ListResolverQueryLogConfigs",
                json!({}),
            ),
        ),
        c(
            "GuardDuty detector or findings tampered with",
            ct(
                "guardduty.amazonaws.com",
                "DeleteDetector",
                json!({"detectorId": "d1"}),
            ),
            ct(
                "guardduty.amazonaws.com",
                "GetDetector",
                json!({"detectorId": "d1"}),
            ),
        ),
        c(
            "Account leaves its AWS organization",
            ct(
                "organizations.amazonaws.com",
                "LeaveOrganization",
                Value::Null,
            ),
            ct(
                "organizations.amazonaws.com",
                "DescribeOrganization",
                Value::Null,
            ),
        ),
        c(
            "Secrets Manager secret values read",
            ct(
                "secretsmanager.amazonaws.com",
                "GetSecretValue",
                json!({"secretId": "prod/db"}),
            ),
            ct(
                "secretsmanager.amazonaws.com",
                "DescribeSecret",
                json!({"secretId": "prod/db"}),
            ),
        ),
        c(
            "Secrets Manager secret values read",
            ct(
                "secretsmanager.amazonaws.com",
                "BatchGetSecretValue",
                json!({"filters": [{"key": "name", "values": ["prod"]}]}),
            ),
            ct("secretsmanager.amazonaws.com", "ListSecrets", json!({})),
        ),
        c(
            "SSM parameters read with decryption",
            ct(
                "ssm.amazonaws.com",
                "GetParameters",
                json!({"names": ["/ci/token"], "withDecryption": true}),
            ),
            ct(
                "ssm.amazonaws.com",
                "GetParameter",
                json!({"name": "/ci/ami-id", "withDecryption": false}),
            ),
        ),
        c(
            "EC2 Windows password data requested",
            ct(ec2, "GetPasswordData", json!({"instanceId": "i-0123"})),
            ct(ec2, "DescribeInstances", json!({})),
        ),
        c(
            "EC2 instance user data read",
            ct(
                ec2,
                "DescribeInstanceAttribute",
                json!({"instanceId": "i-0123", "attribute": "userData"}),
            ),
            ct(
                ec2,
                "DescribeInstanceAttribute",
                json!({"instanceId": "i-0123", "attribute": "instanceType"}),
            ),
        ),
        c(
            "SSM command sent or session started on instances",
            ct(
                "ssm.amazonaws.com",
                "SendCommand",
                json!({"instanceIds": ["i-0123"], "documentName": "AWS-RunShellScript", "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS"}),
            ),
            ct(
                "ssm.amazonaws.com",
                "GetCommandInvocation",
                json!({"commandId": "c", "instanceId": "i-0123"}),
            ),
        ),
        c(
            "EC2 instances launched of GPU/large types or in numbers",
            ct(
                ec2,
                "RunInstances",
                json!({"instancesSet": {"items": [{"imageId": "ami-1", "minCount": 1, "maxCount": 1}]}, "instanceType": "p4d.24xlarge"}),
            ),
            ct(
                ec2,
                "RunInstances",
                json!({"instancesSet": {"items": [{"imageId": "ami-1", "minCount": 1, "maxCount": 2}]}, "instanceType": "t3.micro"}),
            ),
        ),
        c(
            "EC2 instances launched of GPU/large types or in numbers",
            ct(
                ec2,
                "RunInstances",
                json!({"instancesSet": {"items": [{"imageId": "ami-1", "minCount": 1, "maxCount": 40}]}, "instanceType": "c5.large"}),
            ),
            ct(
                ec2,
                "DescribeInstances",
                json!({"instanceType": "p4d.24xlarge"}),
            ),
        ),
        c(
            "EC2 instance user data changed",
            ct(
                ec2,
                "ModifyInstanceAttribute",
                json!({"instanceId": "i-0123", "userData": "<sensitiveDataRemoved>"}),
            ),
            ct(
                ec2,
                "ModifyInstanceAttribute",
                json!({"instanceId": "i-0123", "disableApiTermination": {"value": false}}),
            ),
        ),
        c(
            "SSH key pushed with EC2 Instance Connect or serial console",
            ct(
                "ec2-instance-connect.amazonaws.com",
                "SendSSHPublicKey",
                json!({"instanceId": "i-0123", "instanceOSUser": "ec2-user", "sSHPublicKey": "ssh-ed25519 AAAA"}),
            ),
            ct(ec2, "ImportKeyPair", json!({"keyName": "deploy"})),
        ),
        c(
            "EBS snapshot, AMI or RDS snapshot shared with another account or made public",
            ct(
                ec2,
                "ModifySnapshotAttribute",
                json!({"snapshotId": "snap-1", "createVolumePermission": {"add": {"items": [{"userId": "193672423079"}]}}, "attributeType": "CREATE_VOLUME_PERMISSION"}),
            ),
            ct(
                ec2,
                "ModifySnapshotAttribute",
                json!({"snapshotId": "snap-1", "createVolumePermission": {"remove": {"items": [{"userId": "193672423079"}]}}, "attributeType": "CREATE_VOLUME_PERMISSION"}),
            ),
        ),
        c(
            "EBS snapshot, AMI or RDS snapshot shared with another account or made public",
            ct(
                ec2,
                "ModifyImageAttribute",
                json!({"imageId": "ami-1", "launchPermission": {"add": {"items": [{"group": "all"}]}}, "attributeType": "launchPermission"}),
            ),
            ct(
                ec2,
                "DescribeImageAttribute",
                json!({"imageId": "ami-1", "attribute": "launchPermission"}),
            ),
        ),
        c(
            "EBS snapshot, AMI or RDS snapshot shared with another account or made public",
            ct(
                "rds.amazonaws.com",
                "ModifyDBSnapshotAttribute",
                json!({"dBSnapshotIdentifier": "exfiltration", "attributeName": "restore", "valuesToAdd": ["193672423079"]}),
            ),
            ct(
                "rds.amazonaws.com",
                "ModifyDBSnapshotAttribute",
                json!({"dBSnapshotIdentifier": "x", "attributeName": "restore", "valuesToRemove": ["193672423079"]}),
            ),
        ),
        c(
            "Security group opened to the world on an administration port",
            ct(
                ec2,
                "AuthorizeSecurityGroupIngress",
                json!({"groupId": "sg-1", "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "groups": {}, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}, "ipv6Ranges": {}, "prefixListIds": {}}]}}),
            ),
            // The real Invictus record: HTTPS from anywhere is what a web server needs.
            ct(
                ec2,
                "AuthorizeSecurityGroupIngress",
                json!({"groupId": "sg-1", "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "groups": {}, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0", "description": "TLS from Internet"}]}, "ipv6Ranges": {}, "prefixListIds": {}}]}}),
            ),
        ),
        c(
            "S3 bucket policy or ACL opened to everyone",
            ct(
                "s3.amazonaws.com",
                "PutBucketPolicy",
                json!({"bucketName": "b", "bucketPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}, "policy": ""}),
            ),
            ct(
                "s3.amazonaws.com",
                "PutBucketPolicy",
                json!({"bucketName": "b", "bucketPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "s3:GetBucketAcl", "Resource": "arn:aws:s3:::b"}]}}),
            ),
        ),
        c(
            "S3 bucket policy or ACL opened to everyone",
            ct(
                "s3.amazonaws.com",
                "PutBucketAcl",
                json!({"bucketName": "b", "acl": "", "x-amz-acl": ["public-read"]}),
            ),
            ct(
                "s3.amazonaws.com",
                "PutBucketAcl",
                json!({"bucketName": "b", "acl": "", "x-amz-acl": ["private"]}),
            ),
        ),
        c(
            "Bedrock model invoked",
            ct(
                "bedrock.amazonaws.com",
                "InvokeModel",
                json!({"modelId": "anthropic.claude-3-sonnet-20240229-v1:0"}),
            ),
            ct("bedrock.amazonaws.com", "ListFoundationModels", json!({})),
        ),
        c(
            "Console sign-in without MFA",
            console("No", "IAMUser"),
            // A federated (SSO) sign-in: MFA happened at the identity provider.
            console("No", "AssumedRole"),
        ),
        c(
            "Console sign-in without MFA",
            console("No", "Root"),
            console("Yes", "IAMUser"),
        ),
    ]
}

fn other_cases() -> Vec<Case> {
    let c = |title, source, hit: Value, miss: Value| Case {
        title,
        source,
        hit: vec![hit],
        miss: vec![miss],
    };
    let g = Source::GcpLogging;
    let a = Source::AzureActivity;
    let h = Source::GithubAudit;
    let t = 1_677_664_800_000; // 2023-03-01T10:00:00Z
    vec![
        c(
            "GCP reconnaissance of IAM policies, assets, service accounts and buckets",
            g,
            gcp(
                "google.cloud.asset.v1.AssetService.SearchAllIamPolicies",
                None,
            ),
            gcp("google.cloud.asset.v1.AssetService.ExportAssets", None),
        ),
        c(
            "GCP reconnaissance of IAM policies, assets, service accounts and buckets",
            g,
            gcp(
                "google.cloud.asset.v1.AssetService.SearchAllResources",
                None,
            ),
            gcp("google.iam.admin.v1.GetServiceAccount", None),
        ),
        c(
            "GCP reconnaissance of IAM policies, assets, service accounts and buckets",
            g,
            gcp("google.cloudresourcemanager.v1.Projects.GetIamPolicy", None),
            gcp("google.cloudresourcemanager.v1.Projects.Get", None),
        ),
        c(
            "GCP reconnaissance of IAM policies, assets, service accounts and buckets",
            g,
            gcp("google.iam.admin.v1.ListServiceAccounts", None),
            gcp("google.iam.admin.v1.ListServiceAccountKeys", None),
        ),
        c(
            "GCP reconnaissance of IAM policies, assets, service accounts and buckets",
            g,
            gcp("storage.buckets.list", None),
            gcp("storage.objects.list", None),
        ),
        c(
            "GCP IAM policy bindings changed",
            g,
            gcp("google.cloudresourcemanager.v1.Projects.SetIamPolicy", None),
            gcp(
                "google.cloudresourcemanager.v1.Projects.SetIamPolicy",
                Some(7),
            ),
        ),
        c(
            "GCP logging sink deleted or changed",
            g,
            gcp("google.logging.v2.ConfigServiceV2.DeleteSink", None),
            gcp("google.logging.v2.ConfigServiceV2.ListSinks", None),
        ),
        c(
            "GCP Secret Manager secret version accessed",
            g,
            gcp(
                "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion",
                None,
            ),
            gcp(
                "google.cloud.secretmanager.v1.SecretManagerService.GetSecret",
                None,
            ),
        ),
        c(
            "GCP compute instance created",
            g,
            gcp("v1.compute.instances.insert", None),
            gcp("v1.compute.instances.insert", Some(7)),
        ),
        c(
            "Azure diagnostic settings deleted",
            a,
            azure("microsoft.insights/diagnosticSettings/delete"),
            azure("microsoft.insights/diagnosticSettings/write"),
        ),
        c(
            "Azure Key Vault access policy or secret written",
            a,
            azure("Microsoft.KeyVault/vaults/accessPolicies/write"),
            azure("Microsoft.KeyVault/vaults/read"),
        ),
        c(
            "Azure managed identity or application credential created",
            a,
            azure(
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            ),
            azure("Microsoft.ManagedIdentity/userAssignedIdentities/read"),
        ),
        c(
            "GitHub deploy key or personal access token created",
            h,
            github("public_key.create", "acme/api", t),
            github("public_key.delete", "acme/api", t),
        ),
        c(
            "GitHub deploy key or personal access token created",
            h,
            github("personal_access_token.access_granted", "", t),
            github("personal_access_token.access_revoked", "", t),
        ),
        c(
            "GitHub repository made public or branch protection removed",
            h,
            github("repo.access", "acme/api", t),
            github("repo.create", "acme/api", t),
        ),
        c(
            "GitHub repository made public or branch protection removed",
            h,
            github("protected_branch.destroy", "acme/api", t),
            github("protected_branch.create", "acme/api", t),
        ),
        c(
            "GitHub secrets or webhooks changed",
            h,
            github("repository_secret.update", "acme/api", t),
            github("repo.rename", "acme/api", t),
        ),
        c(
            "GitHub secrets or webhooks changed",
            h,
            github("hook.create", "acme/api", t),
            github("hook.destroy", "acme/api", t),
        ),
    ]
}

#[test]
fn every_technique_fires_on_its_record_and_not_on_its_look_alike() {
    let rules = RuleSet::builtin();
    assert!(rules.errors.is_empty(), "{:?}", rules.errors);
    let mut checked = std::collections::BTreeSet::new();
    for case in aws_cases().into_iter().chain(other_cases()) {
        assert!(
            rules.rules.iter().any(|r| &*r.title == case.title),
            "no rule titled {}",
            case.title
        );
        let r = hunt_with(&rules, case.source, &case.hit, "2023-01-01T00:00:00Z");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            fired(&r, case.title),
            1,
            "{} did not fire on {}",
            case.title,
            case.hit[0]
        );
        let f = r.findings.iter().find(|f| &*f.rule == case.title).unwrap();
        assert!(
            f.attack.as_deref().is_some_and(|a| a.contains("attack.t")),
            "{} has no ATT&CK technique",
            case.title
        );
        assert!(!f.severity_reason.is_empty());
        let r = hunt_with(&rules, case.source, &case.miss, "2023-01-01T00:00:00Z");
        assert_eq!(
            fired(&r, case.title),
            0,
            "{} fired on the look-alike {}",
            case.title,
            case.miss[0]
        );
        checked.insert(case.title);
    }
    // Every post-compromise rule of the pack that is not a correlation is covered here.
    for r in &rules.rules {
        let post = r
            .hunt
            .as_deref()
            .is_some_and(|h| h.ends_with("-post-compromise"));
        if post && !r.correlation_only {
            assert!(checked.contains(&*r.title), "no fixture for {}", r.title);
        }
    }
}

fn ts(day: i64, secs: i64) -> String {
    let t = chrono::DateTime::from_timestamp(1_676_000_000 + day * 86_400 + secs, 0).unwrap();
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[test]
fn the_baseline_lowers_usual_actions_and_raises_first_seen_ones() {
    let since = ts(20, 0);
    let mut records = Vec::new();
    // Before the incident start: the deployer reads its secret and updates its Lambda daily.
    for day in 0..20 {
        records.push(at(
            ct(
                "secretsmanager.amazonaws.com",
                "GetSecretValue",
                json!({"secretId": "ci/npm"}),
            ),
            &ts(day, 3600),
        ));
        records.push(at(
            ct(
                "lambda.amazonaws.com",
                "UpdateFunctionCode20150331v2",
                json!({"functionName": "api"}),
            ),
            &ts(day, 3700),
        ));
    }
    // After: the same two, and two actions it never made.
    records.push(at(
        ct(
            "secretsmanager.amazonaws.com",
            "GetSecretValue",
            json!({"secretId": "ci/npm"}),
        ),
        &ts(21, 3600),
    ));
    records.push(at(
        ct(
            "lambda.amazonaws.com",
            "UpdateFunctionCode20150331v2",
            json!({"functionName": "api"}),
        ),
        &ts(21, 3700),
    ));
    records.push(at(
        ct(
            "ssm.amazonaws.com",
            "GetParametersByPath",
            json!({"path": "/", "recursive": true, "withDecryption": true}),
        ),
        &ts(21, 3800),
    ));
    records.push(at(
        ct("iam.amazonaws.com", "CreateUser", json!({"userName": "x"})),
        &ts(21, 3900),
    ));
    let r = hunt_records(Source::Cloudtrail, &records, &since);
    let sev = |action: &str| {
        let f = r
            .findings
            .iter()
            .find(|f| f.action.as_deref() == Some(action) && f.detail.is_none())
            .unwrap_or_else(|| panic!("no finding for {action}: {:?}", r.findings));
        (f.severity, f.severity_reason.to_string())
    };
    let (s, why) = sev("GetSecretValue");
    assert_eq!(s, Severity::Informational, "{why}");
    assert!(
        why.contains("baseline") && why.contains("20 time(s)"),
        "{why}"
    );
    let (s, why) = sev("UpdateFunctionCode20150331v2");
    assert_eq!(s, Severity::Informational, "{why}");
    let (s, why) = sev("GetParametersByPath");
    assert_eq!(s, Severity::High, "{why}");
    assert!(
        why.contains("raised from medium") && why.contains("first seen"),
        "{why}"
    );
    let (s, why) = sev("CreateUser");
    assert_eq!(s, Severity::High, "{why}");
    // Every finding says why it has its severity.
    assert!(r.findings.iter().all(|f| !f.severity_reason.is_empty()));
    // Without records before the incident start there is nothing to compare with: rule level.
    let after: Vec<Value> = records[40..].to_vec();
    let r = hunt_records(Source::Cloudtrail, &after, &since);
    let f = r
        .findings
        .iter()
        .find(|f| f.action.as_deref() == Some("GetSecretValue"))
        .unwrap();
    assert_eq!(f.severity, Severity::Medium);
    assert!(
        f.severity_reason
            .contains("no records of the credential before")
    );
}

/// `n` discovery calls of distinct names, `gap` seconds apart, from `start` on day 30.
fn discovery(n: usize, start: i64, gap: i64) -> Vec<Value> {
    discovery_on(30, n, start, gap)
}

fn discovery_on(day: i64, n: usize, start: i64, gap: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            at(
                ct(
                    "ec2.amazonaws.com",
                    &format!("Describe{i}Things"),
                    json!({}),
                ),
                &ts(day, start + i as i64 * gap),
            )
        })
        .collect()
}

#[test]
fn correlations_fire_on_bursts_not_on_spread_calls() {
    let since = ts(0, 0);
    let title = "Burst of distinct List/Describe/Get calls by one credential";
    // 25 distinct Describe calls in 4 minutes: one burst, one finding.
    let r = hunt_records(Source::Cloudtrail, &discovery(25, 0, 10), &since);
    let b: Vec<_> = r.findings.iter().filter(|f| &*f.rule == title).collect();
    assert_eq!(b.len(), 1, "{:?}", r.findings);
    assert_eq!(b[0].severity, Severity::Medium);
    assert!(
        b[0].severity_reason
            .contains("25 distinct eventName ≥ 20 within 10m")
    );
    assert!(b[0].detail.as_deref().unwrap().contains("25 record(s)"));
    assert_eq!(b[0].credential.as_deref(), Some(KEY));
    // The same 25 calls spread over four hours: never 20 within ten minutes.
    let r = hunt_records(Source::Cloudtrail, &discovery(25, 0, 600), &since);
    assert_eq!(fired(&r, title), 0);
    // 19 distinct calls in a burst: under the threshold; the base rule reports nothing alone.
    let r = hunt_records(Source::Cloudtrail, &discovery(19, 0, 5), &since);
    assert_eq!(fired(&r, title), 0);
    assert_eq!(
        fired(&r, "List, Describe or Get call"),
        0,
        "generate: false"
    );
    // The same burst before the incident start too: the later one is inside the baseline.
    let mut both = discovery(25, 0, 10);
    both.extend(discovery_on(10, 25, 0, 10));
    let r = hunt_records(Source::Cloudtrail, &both, &ts(20, 0));
    let b: Vec<_> = r.findings.iter().filter(|f| &*f.rule == title).collect();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].severity, Severity::Informational, "{:?}", b[0]);
    assert!(b[0].severity_reason.contains("1 such burst(s) before"));

    // Deletions: ten within ten minutes fire, failed ones do not count.
    let del = |n: usize, error: Option<&str>| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let mut v = ct(
                    "s3.amazonaws.com",
                    "DeleteBucket",
                    json!({"bucketName": format!("b{i}")}),
                );
                if let Some(e) = error {
                    v["errorCode"] = json!(e);
                }
                at(v, &ts(30, i as i64 * 30))
            })
            .collect()
    };
    let title = "Burst of deletions by one credential";
    assert_eq!(
        fired(
            &hunt_records(Source::Cloudtrail, &del(12, None), &since),
            title
        ),
        1
    );
    assert_eq!(
        fired(
            &hunt_records(Source::Cloudtrail, &del(12, Some("AccessDenied")), &since),
            title
        ),
        0
    );
    // Denials across services: three services within ten minutes.
    let denied = |sources: &[&str]| -> Vec<Value> {
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = ct(s, "Whatever", json!({}));
                v["errorCode"] = json!("AccessDenied");
                at(v, &ts(30, i as i64 * 60))
            })
            .collect()
    };
    let title = "Denials across many services by one credential";
    let three = denied(&["iam.amazonaws.com", "s3.amazonaws.com", "ec2.amazonaws.com"]);
    let r = hunt_records(Source::Cloudtrail, &three, &since);
    assert_eq!(fired(&r, title), 1);
    assert_eq!(
        r.findings
            .iter()
            .find(|f| &*f.rule == title)
            .unwrap()
            .severity,
        Severity::High
    );
    let one = denied(&["s3.amazonaws.com", "s3.amazonaws.com", "s3.amazonaws.com"]);
    assert_eq!(
        fired(&hunt_records(Source::Cloudtrail, &one, &since), title),
        0
    );
    // GitHub: ten distinct repositories cloned with one token in ten minutes.
    let clones = |n: usize, repo_of: &dyn Fn(usize) -> String| -> Vec<Value> {
        (0..n)
            .map(|i| {
                github(
                    "git.clone",
                    &repo_of(i),
                    1_677_664_800_000 + i as i64 * 20_000,
                )
            })
            .collect()
    };
    let title = "Many repositories cloned by one token";
    let many = clones(12, &|i| format!("acme/repo{i}"));
    assert_eq!(
        fired(&hunt_records(Source::GithubAudit, &many, &since), title),
        1
    );
    let same = clones(12, &|_| "acme/api".to_string());
    assert_eq!(
        fired(&hunt_records(Source::GithubAudit, &same, &since), title),
        0
    );
}

#[test]
fn third_party_correlation_files_load_unchanged() {
    // The Sigma 2 specification's shape: the correlation first, its rules after, in one
    // multi-document file; an alias groups two rules' different fields.
    let text = r#"
title: Failed console logins then a success, same user
id: 0e95725d-7320-415d-80f7-004da920fc11
correlation:
    type: temporal_ordered
    rules:
        - many_failed
        - console_success
    group-by:
        - user
    timespan: 10m
    aliases:
        user:
            many_failed: userIdentity.userName
            console_success: userIdentity.userName
level: high
---
title: Many failed logins
name: many_failed
correlation:
    type: event_count
    rules:
        - console_failure
    group-by:
        - userIdentity.userName
    timespan: 10m
    condition:
        gte: 3
---
title: Console login failure
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: console_failure
logsource:
    product: aws
    service: cloudtrail
detection:
    selection:
        eventName: ConsoleLogin
        responseElements.ConsoleLogin: Failure
    condition: selection
---
title: Console login success
name: console_success
logsource:
    product: aws
    service: cloudtrail
detection:
    selection:
        eventName: ConsoleLogin
        responseElements.ConsoleLogin: Success
    condition: selection
"#;
    let mut rules = RuleSet::builtin();
    rules.add_text("third-party.yml", text);
    // Chains are refused with the reason; the rest of the file loads.
    let errors = rules.all_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .reason
            .contains("chained correlations are not supported")
    );
    assert!(rules.get("53ba33fd-3a50-4468-a5ef-c583635cfa92").is_some());
    assert!(
        rules
            .correlations
            .iter()
            .any(|c| &*c.spec.title == "Many failed logins")
    );

    // An ordered temporal correlation over two plain rules, with an alias.
    let text = r#"
title: Trail stopped after a new user
correlation:
    type: temporal_ordered
    rules:
        - new_user
        - trail_off
    group-by:
        - who
    timespan: 1h
    aliases:
        who:
            new_user: userIdentity.accessKeyId
            trail_off: userIdentity.accessKeyId
level: critical
---
title: New user
name: new_user
logsource: {product: aws, service: cloudtrail}
detection:
    selection: {eventName: CreateUser}
    condition: selection
---
title: Trail off
name: trail_off
logsource: {product: aws, service: cloudtrail}
detection:
    selection: {eventName: StopLogging}
    condition: selection
"#;
    let mut rules = RuleSet::builtin();
    rules.add_text("ordered.yml", text);
    assert!(rules.all_errors().is_empty(), "{:?}", rules.all_errors());
    let user = ct("iam.amazonaws.com", "CreateUser", json!({"userName": "x"}));
    let stop = ct(
        "cloudtrail.amazonaws.com",
        "StopLogging",
        json!({"name": "t"}),
    );
    let title = "Trail stopped after a new user";
    let in_order = [at(user.clone(), &ts(30, 0)), at(stop.clone(), &ts(30, 600))];
    let r = hunt_with(&rules, Source::Cloudtrail, &in_order, &ts(0, 0));
    let f: Vec<_> = r.findings.iter().filter(|f| &*f.rule == title).collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Critical);
    let reversed = [at(stop, &ts(30, 0)), at(user, &ts(30, 600))];
    let r = hunt_with(&rules, Source::Cloudtrail, &reversed, &ts(0, 0));
    assert_eq!(fired(&r, title), 0);
    // Without `generate`, the named rules report nothing on their own.
    assert_eq!(fired(&r, "New user"), 0);
    // A correlation naming a rule no file brings is reported, not fatal.
    let mut rules = RuleSet::builtin();
    rules.add_text(
        "lonely.yml",
        "title: Lonely\ncorrelation:\n  type: event_count\n  rules: [nowhere]\n  group-by: [x]\n  timespan: 5m\n  condition: {gte: 2}\n",
    );
    let e = rules.all_errors();
    assert!(e.len() == 1 && e[0].reason.contains("nowhere"), "{e:?}");
    for bad in [
        "title: B\ncorrelation:\n  type: value_sum\n  rules: [a]\n  timespan: 5m\n",
        "title: B\ncorrelation:\n  type: event_count\n  rules: [a]\n  timespan: 5 minutes\n  condition: {gte: 1}\n",
        "title: B\ncorrelation:\n  type: value_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: 1}\n",
        "title: B\ncorrelation:\n  type: event_count\n  rules: [a]\n  timespan: 5m\n",
        "title: B\ncorrelation: [1, 2]\n",
    ] {
        let mut rules = RuleSet::default();
        rules.add_text("bad.yml", bad);
        assert_eq!(rules.all_errors().len(), 1, "{bad}");
    }
}

/// Weeks of a CI deployer's normal work, from its two usual egress addresses.
fn deployer_weeks(days: std::ops::Range<i64>) -> Vec<Value> {
    let mut out = Vec::new();
    for day in days {
        for run in 0..6 {
            let base = run * 3600 + 8 * 3600;
            let ip = if run % 2 == 0 {
                "198.51.100.7"
            } else {
                "198.51.100.8"
            };
            let calls: Vec<(&str, &str, Value)> = vec![
                (
                    "sts.amazonaws.com",
                    "AssumeRole",
                    json!({"roleArn": format!("arn:aws:iam::{ACCOUNT}:role/deploy"), "roleSessionName": "ci"}),
                ),
                (
                    "s3.amazonaws.com",
                    "PutObject",
                    json!({"bucketName": "artifacts", "key": format!("build/{day}-{run}.zip")}),
                ),
                (
                    "lambda.amazonaws.com",
                    "UpdateFunctionCode20150331v2",
                    json!({"functionName": "api", "publish": true}),
                ),
                (
                    "lambda.amazonaws.com",
                    "GetFunction20150331v2",
                    json!({"functionName": "api"}),
                ),
                (
                    "ecs.amazonaws.com",
                    "RegisterTaskDefinition",
                    json!({"family": "web"}),
                ),
                (
                    "ecs.amazonaws.com",
                    "UpdateService",
                    json!({"cluster": "prod", "service": "web"}),
                ),
                (
                    "ecs.amazonaws.com",
                    "DescribeServices",
                    json!({"cluster": "prod", "services": ["web"]}),
                ),
                (
                    "cloudformation.amazonaws.com",
                    "DescribeStacks",
                    json!({"stackName": "app"}),
                ),
                (
                    "secretsmanager.amazonaws.com",
                    "GetSecretValue",
                    json!({"secretId": "ci/npm"}),
                ),
            ];
            for (i, (src, name, params)) in calls.into_iter().enumerate() {
                let mut v = ct(src, name, params);
                v["sourceIPAddress"] = json!(ip);
                out.push(at(v, &ts(day, base + i as i64 * 20)));
            }
        }
    }
    out
}

#[test]
fn a_ci_deployers_benign_weeks_give_no_high_finding_and_say_so() {
    // Three weeks before the incident start, one week after: the same work.
    let records = deployer_weeks(0..28);
    let since = ts(21, 0);
    let r = hunt_records(Source::Cloudtrail, &records, &since);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.stats.records, 28 * 6 * 9);
    let high: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::High)
        .collect();
    assert!(high.is_empty(), "{high:?}");
    // Its Lambda updates and secret reads are seen, and lowered with the reason.
    assert!(
        r.findings
            .iter()
            .filter(|f| f.hunt.as_deref() == Some("aws-post-compromise"))
            .all(
                |f| f.severity == Severity::Informational && f.severity_reason.contains("baseline")
            ),
        "{:?}",
        r.findings
    );
    let table = r.to_table();
    let first_line = table.lines().next().unwrap();
    assert!(
        first_line.starts_with("No high findings"),
        "the report says so in its first line: {table}"
    );
    // Grouped: one row per (credential, rule, action, address), not one per record.
    let groups = r.groups();
    let lambda: Vec<_> = groups
        .iter()
        .filter(|g| g.action == Some("UpdateFunctionCode20150331v2"))
        .collect();
    assert_eq!(lambda.len(), 2, "one per address: {lambda:?}");
    assert_eq!(lambda.iter().map(|g| g.count).sum::<usize>(), 7 * 6);

    // The same credential then does what an attacker does: it shows, high, at the top.
    let mut attacked = records;
    attacked.push(at(
        ct(
            "iam.amazonaws.com",
            "CreateAccessKey",
            json!({"userName": "admin"}),
        ),
        &ts(22, 100),
    ));
    let r = hunt_records(Source::Cloudtrail, &attacked, &since);
    let table = r.to_table();
    assert!(
        table.starts_with(&format!("High findings for: {KEY}")),
        "{table}"
    );
    assert!(table.contains("persistence: Access key created for another IAM user (T1098.001)"));
    let g = &r.groups()[0];
    assert_eq!(g.rule, "Access key created for another IAM user");
}
