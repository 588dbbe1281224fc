"""The AWS CLI (``aws s3`` and ``aws s3api``, installed from PyPI into the test environment) against the S3
API of the real server, signing with a token's key pair: buckets, copies up and down (one large enough to
go multipart), listings, sync, metadata and removal."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from .conftest import WRITER
from .server import Server, hash_token

MIB = 1 << 20


def aws_binary() -> str:
    """The ``aws`` of the virtual environment the tests run in."""
    beside = Path(sys.executable).parent / "aws"
    found = str(beside) if beside.exists() else shutil.which("aws")
    if found is None:
        raise RuntimeError("the AWS CLI is not installed (pip install awscli; scripts/test-python.sh does)")
    return found


class Aws:
    """Runs ``aws`` against one server with one key pair and no other configuration."""

    def __init__(self, server: Server, access_key: str, secret_key: str, home: Path) -> None:
        self.endpoint = server.s3_url
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [aws_binary(), "--endpoint-url", self.endpoint, *args]
        out = subprocess.run(cmd, check=False, env=self.env, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--output", "json").stdout)


def test_the_aws_cli_copies_lists_syncs_and_removes(auth_server: Server, binary: str, tmp_path: Path) -> None:
    aws = Aws(auth_server, "writer", hash_token(binary, WRITER), tmp_path)
    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    aws.run("s3", "mb", f"s3://{bucket}")
    assert bucket in aws.run("s3", "ls").stdout

    # One object large enough for the CLI to upload in parts (its threshold is 8 MiB), one small one.
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(20 * MIB))
    aws.run("s3", "cp", str(big), f"s3://{bucket}/models/model.bin")
    head = aws.json("s3api", "head-object", "--bucket", bucket, "--key", "models/model.bin")
    assert head["ContentLength"] == 20 * MIB
    assert head["ETag"].endswith('-3"'), "the CLI uploaded 8 + 8 + 4 MiB parts"
    note = tmp_path / "note.txt"
    note.write_text("hello from the cli\n")
    aws.run(
        "s3",
        "cp",
        str(note),
        f"s3://{bucket}/notes/note.txt",
        "--content-type",
        "text/plain",
        "--metadata",
        "run=42",
    )
    head = aws.json("s3api", "head-object", "--bucket", bucket, "--key", "notes/note.txt")
    assert (head["ContentType"], head["Metadata"]) == ("text/plain", {"run": "42"})

    back = tmp_path / "back.bin"
    aws.run("s3", "cp", f"s3://{bucket}/models/model.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert aws.run("s3", "cp", f"s3://{bucket}/notes/note.txt", "-").stdout == "hello from the cli\n"

    # sync uploads what is new or changed, and nothing the second time.
    tree = tmp_path / "logs"
    for i in range(12):
        (tree / f"day{i % 3}").mkdir(parents=True, exist_ok=True)
        (tree / f"day{i % 3}" / f"{i}.log").write_text(f"line {i}\n")
    first = aws.run("s3", "sync", str(tree), f"s3://{bucket}/logs").stdout
    assert first.count("upload:") == 12
    assert aws.run("s3", "sync", str(tree), f"s3://{bucket}/logs").stdout.count("upload:") == 0
    top = aws.run("s3", "ls", f"s3://{bucket}/").stdout
    for prefix in ("logs/", "models/", "notes/"):
        assert f"PRE {prefix}" in top
    listed = aws.json("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "logs/day1/")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(f"logs/day1/{i}.log" for i in (1, 4, 7, 10))
    down = tmp_path / "down"
    aws.run("s3", "sync", f"s3://{bucket}/logs", str(down))
    assert (down / "day2" / "5.log").read_text() == "line 5\n"

    # A server-side copy, then removal of everything; the bucket goes once empty.
    aws.run("s3", "cp", f"s3://{bucket}/notes/note.txt", f"s3://{bucket}/notes/copy.txt")
    assert aws.run("s3", "cp", f"s3://{bucket}/notes/copy.txt", "-").stdout == "hello from the cli\n"
    refused = aws.run("s3", "rb", f"s3://{bucket}", check=False)
    assert refused.returncode != 0
    assert "BucketNotEmpty" in refused.stderr
    aws.run("s3", "rm", f"s3://{bucket}", "--recursive")
    assert aws.json("s3api", "list-objects-v2", "--bucket", bucket).get("KeyCount", 0) == 0
    aws.run("s3", "rb", f"s3://{bucket}")
    assert bucket not in aws.run("s3", "ls").stdout


def test_the_aws_cli_is_refused_with_a_wrong_secret(auth_server: Server, tmp_path: Path) -> None:
    aws = Aws(auth_server, "writer", "0" * 64, tmp_path)
    out = aws.run("s3", "ls", check=False)
    assert out.returncode != 0
    assert "SignatureDoesNotMatch" in out.stderr
