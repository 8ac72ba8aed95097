#!/usr/bin/env bash
# create-bucket.sh BUCKET [ENDPOINT] - creates a bucket on a local S3 server, e.g. to try
# `s3nbd serve --store s3://BUCKET/PREFIX` against it. The integration tests do not need
# this: they create their own bucket. Credentials come from the usual AWS_* variables.
#
#   AWS_ACCESS_KEY_ID=s3nbdtest AWS_SECRET_ACCESS_KEY=s3nbdtestsecret \
#     localstack/create-bucket.sh my-volumes http://127.0.0.1:9000
set -euo pipefail

bucket="${1:?usage: create-bucket.sh BUCKET [ENDPOINT] (default endpoint: http://127.0.0.1:9000)}"
endpoint="${2:-${S3NBD_TEST_S3_ENDPOINT:-http://127.0.0.1:9000}}"
command -v aws >/dev/null 2>&1 || { echo "create-bucket.sh: the AWS CLI (aws) is not installed" >&2; exit 1; }
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID (MinIO: s3nbdtest, LocalStack: test)}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY (MinIO: s3nbdtestsecret, LocalStack: test)}"
export AWS_REGION="${AWS_REGION:-us-east-1}"

aws --endpoint-url "$endpoint" s3 mb "s3://${bucket}"
