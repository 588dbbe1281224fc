"""The S3 API of the server's artifact store, driven by boto3 (path-style addressing, region us-east-1):
buckets, objects with metadata, ranges, listings with delimiters and pages, copies, checksums, multipart
uploads (by hand and through ``upload_file``), access keys from the tokens, roles and project scopes."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import anyio
import boto3
import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from cairn_client import AsyncClient, Client, NotFound

from .conftest import ADMIN, READER, VISION, WRITER
from .server import Server, hash_token

MIB = 1 << 20


def s3_client(server: Server, access_key: str = "anyone", secret_key: str = "anything") -> Any:
    """A boto3 client of the server's S3 listener, as docs/python.md shows."""
    return boto3.client(
        "s3",
        endpoint_url=server.s3_url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def keyed(server: Server, binary: str, name: str, token: str) -> Any:
    """A client signing with a token's key pair: its name, and its SHA-256 as the secret."""
    return s3_client(server, name, hash_token(binary, token))


def code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


@pytest.fixture
def s3(server: Server) -> Any:
    return s3_client(server)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def test_buckets_are_created_listed_and_deleted(s3: Any) -> None:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    with pytest.raises(ClientError) as err:
        s3.create_bucket(Bucket=name)
    assert code(err) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as err:
        s3.delete_bucket(Bucket=name)
    assert code(err) == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as err:
        s3.head_bucket(Bucket=name)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as err:
        s3.create_bucket(Bucket="Not_A_Bucket")
    assert code(err) == "InvalidBucketName"


def test_objects_keep_type_and_metadata_and_serve_ranges(s3: Any, bucket: str) -> None:
    body = os.urandom(100_000)
    key = "runs/1/metrics.json"
    put = s3.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json", Metadata={"run": "1"}
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="runs/1/metrics.json")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/json"
    assert got["Metadata"] == {"run": "1"}
    head = s3.head_object(Bucket=bucket, Key="runs/1/metrics.json")
    assert (head["ContentLength"], head["ETag"]) == (100_000, put["ETag"])
    for rng, want in [("bytes=0-9", body[:10]), ("bytes=99990-", body[99_990:]), ("bytes=-5", body[-5:])]:
        part = s3.get_object(Bucket=bucket, Key=key, Range=rng)
        assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert part["Body"].read() == want
    assert part["ContentRange"] == "bytes 99995-99999/100000"
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="runs/1/metrics.json", Range="bytes=100000-")
    assert code(err) == "InvalidRange"
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="absent")
    assert code(err) == "NoSuchKey"

    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "runs/1/metrics.json"})
    assert s3.head_object(Bucket=bucket, Key="copy")["Metadata"] == {"run": "1"}
    s3.copy_object(
        Bucket=bucket,
        Key="copy",
        CopySource={"Bucket": bucket, "Key": "runs/1/metrics.json"},
        MetadataDirective="REPLACE",
        Metadata={"stage": "eval"},
        ContentType="text/plain",
    )
    head = s3.head_object(Bucket=bucket, Key="copy")
    assert (head["Metadata"], head["ContentType"]) == ({"stage": "eval"}, "text/plain")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy"}, {"Key": key}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["copy", "runs/1/metrics.json"]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_checksums_are_verified_and_returned(s3: Any, bucket: str) -> None:
    body = b"checkpoint bytes" * 1000
    s3.put_object(Bucket=bucket, Key="ok", Body=body, ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=bucket, Key="ok", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == s3_b64(hashlib.sha256(body).digest())
    wrong = s3_b64(hashlib.sha256(b"other").digest())
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="bad", Body=body, ChecksumSHA256=wrong)
    assert code(err) == "BadDigest"
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="bad")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def s3_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_listings_page_with_delimiters(s3: Any, bucket: str) -> None:
    for i in range(25):
        s3.put_object(Bucket=bucket, Key=f"logs/{i:02}.txt", Body=b"l")
    for d in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=f"data/{d}/part-0", Body=b"d")
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["data/", "logs/"]
    assert top["KeyCount"] == 2
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix="logs/", PaginationConfig={"PageSize": 10})
    seen = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert seen == [f"logs/{i:02}.txt" for i in range(25)]
    under = s3.list_objects_v2(Bucket=bucket, Prefix="data/", Delimiter="/")
    assert [p["Prefix"] for p in under["CommonPrefixes"]] == ["data/a/", "data/b/", "data/c/"]
    after = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", StartAfter="logs/22.txt")
    assert [o["Key"] for o in after["Contents"]] == ["logs/23.txt", "logs/24.txt"]
    v1 = s3.list_objects(Bucket=bucket, Prefix="logs/", MaxKeys=5)
    assert v1["IsTruncated"]
    assert len(v1["Contents"]) == 5


def test_multipart_by_hand_lists_parts_and_aborts(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big", ContentType="application/x-tar")["UploadId"]
    first = os.urandom(5 * MIB)
    e1 = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=first)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=2, Body=b"tail")["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="big", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MIB), (2, 4)]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["UploadId"] for u in uploads] == [upload]
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert done["ETag"].endswith('-2"')
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["ContentType"] == "application/x-tar"
    assert got["Body"].read() == first + b"tail"

    other = s3.create_multipart_upload(Bucket=bucket, Key="dropped")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="dropped", UploadId=other, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="dropped", UploadId=other)
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=bucket, Key="dropped", UploadId=other)
    assert code(err) == "NoSuchUpload"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_upload_file_of_20_mib_goes_multipart_and_reads_back(s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(20 * MIB))
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    s3.upload_file(str(src), bucket, "models/model.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="models/model.bin")
    assert head["ContentLength"] == 20 * MIB
    assert head["ETag"].endswith('-3"'), "three parts of 8, 8 and 4 MiB"
    dst = tmp_path / "back.bin"
    s3.download_file(bucket, "models/model.bin", str(dst), Config=config)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_access_keys_roles_and_project_scopes(auth_server: Server, binary: str) -> None:
    writer = keyed(auth_server, binary, "writer", WRITER)
    reader = keyed(auth_server, binary, "reader", READER)
    vision = keyed(auth_server, binary, "vision", VISION)
    shared = f"shared-{uuid.uuid4().hex[:8]}"
    writer.create_bucket(Bucket=shared)
    writer.put_object(Bucket=shared, Key="a", Body=b"1")

    assert reader.get_object(Bucket=shared, Key="a")["Body"].read() == b"1"
    with pytest.raises(ClientError) as err:
        reader.put_object(Bucket=shared, Key="b", Body=b"2")
    assert code(err) == "AccessDenied"

    # A scoped key's bucket is its project's; other buckets are closed to it.
    own = f"vision-{uuid.uuid4().hex[:8]}"
    vision.create_bucket(Bucket=own)
    vision.put_object(Bucket=own, Key="img", Body=b"v")
    admin = httpx.get(
        f"{auth_server.url}/v1/artifacts/buckets/{own}", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    assert (admin["project"], admin["objects"], admin["bytes"]) == ("vision", 1, 1)
    assert own in [b["Name"] for b in vision.list_buckets()["Buckets"]]
    assert shared not in [b["Name"] for b in vision.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as err:
        vision.get_object(Bucket=shared, Key="a")
    assert code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:
        vision.create_bucket(Bucket=shared)
    assert code(err) == "BucketAlreadyExists"

    with pytest.raises(ClientError) as err:
        keyed(auth_server, binary, "writer", "not-the-token").list_buckets()
    assert code(err) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as err:
        s3_client(auth_server, "nobody", "x").list_buckets()
    assert code(err) == "InvalidAccessKeyId"


def test_buckets_statistics_retention_and_garbage_collection_from_the_client(
    s3: Any, bucket: str, client: Client
) -> None:
    """The native operations beside the S3 API: buckets with their figures, retention, totals, and
    garbage collection on demand."""
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"run/{i}.log", Body=b"x" * (100 * (i + 1)))
    b = client.bucket(bucket)
    assert (b.name, b.objects, b.bytes, b.retention_days) == (bucket, 3, 600, None)
    assert bucket in [x.name for x in client.buckets()]
    assert client.set_retention(bucket, 30).retention_days == 30
    assert client.bucket(bucket).retention_days == 30
    assert client.set_retention(bucket, None).retention_days is None
    with pytest.raises(ValueError, match="at least 1"):
        client.set_retention(bucket, 0)
    with pytest.raises(NotFound):
        client.bucket("no-such-bucket-here")
    totals = client.artifact_stats()
    assert totals["objects"] >= 3
    assert totals["blobs"]["healthy"] is True
    s3.delete_object(Bucket=bucket, Key="run/0.log")
    gc = client.collect_garbage()
    assert gc["expired"] == 0
    assert gc["blobs"]["last_gc_ms"] is not None
    assert client.bucket(bucket).bytes == 500


def test_the_async_client_reads_buckets_too(s3: Any, bucket: str, server: Server) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc")

    async def run() -> None:
        async with AsyncClient(server.url) as c:
            b = await c.bucket(bucket)
            assert (b.objects, b.bytes) == (1, 3)
            assert (await c.set_retention(bucket, 7)).retention_days == 7
            assert bucket in [x.name for x in await c.buckets()]
            assert (await c.artifact_stats())["blobs"]["healthy"] is True

    anyio.run(run)


def test_a_signed_body_that_differs_from_its_signature_stores_nothing(
    auth_server: Server, binary: str
) -> None:
    # The server takes a SigV4-signed payload's x-amz-content-sha256 as the object's SHA-256 once the body
    # matched it: a body that does not match is refused, and nothing is stored.
    writer = keyed(auth_server, binary, "writer", WRITER)
    bucket = f"signed-{uuid.uuid4().hex[:8]}"
    writer.create_bucket(Bucket=bucket)
    url = f"{auth_server.s3_url}/{bucket}/model.bin"
    signed_body, sent_body = b"a" * 100_000, b"b" * 100_000
    request = AWSRequest(method="PUT", url=url, data=signed_body)
    S3SigV4Auth(Credentials("writer", hash_token(binary, WRITER)), "s3", "us-east-1").add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(signed_body).hexdigest()
    refused = httpx.put(url, content=sent_body, headers=headers)
    assert 400 <= refused.status_code < 500, refused.text
    with pytest.raises(ClientError) as err:
        writer.head_object(Bucket=bucket, Key="model.bin")
    assert code(err) == "404"
    # The same request with the body it signed is stored, with that body's SHA-256.
    stored = httpx.put(url, content=signed_body, headers=headers)
    assert stored.status_code == 200, stored.text
    head = writer.head_object(Bucket=bucket, Key="model.bin", ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]) == hashlib.sha256(signed_body).digest()
