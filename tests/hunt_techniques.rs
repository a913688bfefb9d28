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
