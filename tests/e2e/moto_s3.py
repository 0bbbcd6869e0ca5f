#!/usr/bin/env python3
"""A real S3-compatible server that verifies SigV4 signatures, for the VOD
remote-store e2e test (tests/e2e/vod_remote.rs, `s3_real`): moto's server
(PyPI `moto[server]`, installed into .venv by scripts/install-test-deps.sh).

moto checks signatures and IAM policies only once its first
INITIAL_NO_AUTH_ACTION_COUNT actions are done. This script sets that count to
the number of set-up actions it makes unauthenticated, through boto3: an IAM
user, an access key, a policy allowing s3:GetObject on the bucket's objects
(attached to the user), the bucket, and one object per `--put key=file`.
From then on every request must be signed by that user's key.

It prints one JSON line on stdout, {"endpoint", "bucket", "access_key_id",
"secret_access_key", "region"}, then serves until its stdin closes. Every
answer that is not 2xx is logged on stderr as
`moto: GET /bucket/key -> 403 SignatureDoesNotMatch` (the error code from
moto's XML body), so the test can prove a refusal was the signature's.
Exit status 2 when moto or boto3 is missing.
"""

import argparse
import json
import os
import re
import sys
import threading

SETUP_ACTIONS = 5  # user, access key, policy, attach, bucket; + one per object


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", default="strata-vod")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--put", action="append", default=[], metavar="KEY=FILE")
    args = parser.parse_args()
    puts = [p.split("=", 1) for p in args.put]
    # Read by moto.settings at import: set it first.
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS + len(puts))
    try:
        import boto3
        from botocore.config import Config
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )
        from werkzeug.serving import make_server
    except ImportError as e:
        print(f"moto_s3.py: {e}: run scripts/install-test-deps.sh", file=sys.stderr)
        return 2

    app = DomainDispatcherApplication(create_backend_app)

    def logged(environ, start_response):
        seen = {}

        def start(status, headers, exc_info=None):
            seen["status"] = status
            return start_response(status, headers, exc_info)

        body = b"".join(app(environ, start))
        status = seen.get("status", "")
        if not status.startswith("2"):
            code = re.search(rb"<Code>([^<]+)</Code>", body)
            print(
                f"moto: {environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')} -> "
                f"{status.split(' ')[0]} {code.group(1).decode() if code else '-'}",
                file=sys.stderr,
                flush=True,
            )
        return [body]

    server = make_server("127.0.0.1", 0, logged, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"

    admin = dict(
        endpoint_url=endpoint,
        region_name=args.region,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="strata-origin")
    key = iam.create_access_key(UserName="strata-origin")["AccessKey"]
    policy = iam.create_policy(
        PolicyName="strata-vod-read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{args.bucket}/*",
                    }
                ],
            }
        ),
    )["Policy"]
    iam.attach_user_policy(UserName="strata-origin", PolicyArn=policy["Arn"])
    s3 = boto3.client(
        "s3", config=Config(s3={"addressing_style": "path"}), **admin
    )
    s3.create_bucket(Bucket=args.bucket)
    for name, path in puts:
        with open(path, "rb") as f:
            s3.put_object(Bucket=args.bucket, Key=name, Body=f.read())
    count = ActionAuthenticatorMixin.request_count
    if count != SETUP_ACTIONS + len(puts):
        print(
            f"moto_s3.py: {count} unauthenticated actions, expected {SETUP_ACTIONS + len(puts)}",
            file=sys.stderr,
        )
        return 1

    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "bucket": args.bucket,
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
                "region": args.region,
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
