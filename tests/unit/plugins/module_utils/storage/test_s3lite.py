# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3lite.py without a real S3: the Signature V4 signer checked against
botocore's own signer (same credentials, same timestamp, exact
Authorization header), request paths against the URLs boto3 builds,
lite_client_for's "boto3 instead" cases, and retries, connection reuse,
errors and response parsing against a small HTTP server on 127.0.0.1."""

import base64
import datetime
import hashlib
import http.server
import socket
import ssl
import subprocess
import threading
from unittest import mock

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import NotFoundError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3 import S3Storage
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3lite import (
    EMPTY_SHA256,
    ClientError,
    EndpointConnectionError,
    IncompleteReadError,
    LiteS3Client,
    SSLError,
    _Paginator,
    canonical_query,
    lite_client_for,
    parse_http_date,
    parse_iso8601,
    sign_v4,
    uri_encode,
)
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FQoGZXIvYXdzEXAMPLE//token+with/odd=chars"
AMZ_DATE = "20240131T235959Z"
WHEN = datetime.datetime(2024, 1, 31, 23, 59, 59)
ODD_KEY = "wal/dir with space/ü€ file~name+plus=eq&amp;(1).zst"


# --------------------------------------------------------------------------
# signing, cross-checked with botocore


def botocore_authorization(method, url, headers, body, token, region, params=None):
    """Authorization header botocore computes for the same request (the
    query given as parameters: botocore encodes and sorts them itself)."""
    req = AWSRequest(method=method, url=url, headers=dict(headers), data=body, params=params or {})
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        S3SigV4Auth(Credentials(ACCESS, SECRET, token), "s3", region).add_auth(req)
    return req.headers["Authorization"], req


def ours(client, method, bucket, key=None, query=None, body=b"", headers=None):
    host, path_qs, hdrs = client._prepare(method, bucket, key, query, body, headers, amz_date=AMZ_DATE)
    return host, path_qs, hdrs


def signed_subset(hdrs):
    """What we sign (and botocore signs whatever it is given)."""
    return dict((k, v) for k, v in hdrs.items()
                if k in ("host", "content-md5") or (k.startswith("x-amz-") and k not in (
                    "x-amz-date", "x-amz-content-sha256", "x-amz-security-token")))


CASES = [
    ("GET", ODD_KEY, None, b"", {}),
    ("HEAD", "a/b~c+d", None, b"", {}),
    ("GET", None, [("list-type", "2"), ("encoding-type", "url"), ("prefix", "wal/00000001/ ü+"),
                   ("delimiter", "/"), ("continuation-token", "1/ab+cd==x y")], b"", {}),
    ("PUT", "wal/00000001/000000010000000000000001.zst", None, b"payload \x00\xff" * 100,
     {"x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(b"payload \x00\xff" * 100).digest()).decode(),
      "x-amz-sdk-checksum-algorithm": "SHA256"}),
    ("POST", None, [("delete", "")], b"<Delete/>", {"content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}),
]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["static", "session-token"])
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8333", None], ids=["path-style", "virtual-host"])
@pytest.mark.parametrize("method,key,query,body,headers", CASES,
                         ids=["get-odd-key", "head", "list-v2", "put-payload", "post-delete"])
def test_signature_matches_botocore(token, endpoint, method, key, query, body, headers):
    client = LiteS3Client(ACCESS, SECRET, session_token=token, region="eu-central-1",
                          endpoint_url=endpoint)
    dummy, path_qs, hdrs = ours(client, method, "my-bucket", key, query, body, headers)
    scheme = "http" if endpoint else "https"
    url = "%s://%s%s" % (scheme, hdrs["host"], path_qs.split("?")[0])
    auth, req = botocore_authorization(method, url, signed_subset(hdrs), body, token, "eu-central-1",
                                       params=query)
    assert hdrs["authorization"] == auth
    assert hdrs["x-amz-date"] == req.headers["X-Amz-Date"] == AMZ_DATE
    assert hdrs["x-amz-content-sha256"] == req.headers["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    if token:
        assert hdrs["x-amz-security-token"] == TOKEN
        assert "x-amz-security-token" in auth
    else:
        assert "x-amz-security-token" not in hdrs
    if endpoint:
        assert hdrs["host"] == "127.0.0.1:8333"
        assert path_qs.startswith("/my-bucket")
    else:
        assert hdrs["host"] == "my-bucket.s3.eu-central-1.amazonaws.com"


@pytest.mark.parametrize("query,signature", [
    ([("lifecycle", "")], "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ([("max-keys", "2"), ("prefix", "J")], "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
], ids=["get-bucket-lifecycle", "list-objects"])
def test_signature_known_answers(query, signature):
    """The examples of AWS's Signature V4 documentation for S3 ("Signature
    calculations for the Authorization header", GET examples without a
    Range header)."""
    headers = sign_v4("GET", "/", canonical_query(query), {"host": "examplebucket.s3.amazonaws.com"},
                             EMPTY_SHA256, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                             "us-east-1", amz_date="20130524T000000Z")
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + signature)


class _Sent(Exception):
    pass


def boto3_request(op, **kwargs):
    """The request a real boto3 client would send (captured, never sent)."""
    import boto3

    client = boto3.session.Session().client(
        "s3", endpoint_url="http://127.0.0.1:8333", region_name="eu-central-1", aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET, config=__import__("botocore.config").config.Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    seen = []

    def capture(request, **kw):
        seen.append(request)
        raise _Sent()

    client.meta.events.register("before-send.s3", capture)
    with pytest.raises(_Sent):
        getattr(client, op)(**kwargs)
    return seen[0]


@pytest.mark.parametrize("key", [ODD_KEY, "a/b~c+d", "x:y@z!$'()*,;=", "100%/p?q#r"])
def test_object_paths_are_encoded_like_boto3(key):
    client = LiteS3Client(ACCESS, SECRET, region="eu-central-1", endpoint_url="http://127.0.0.1:8333")
    dummy, path_qs, dummy2 = ours(client, "GET", "my-bucket", key)
    req = boto3_request("get_object", Bucket="my-bucket", Key=key)
    assert "http://127.0.0.1:8333" + path_qs == req.url


def test_uri_encode_and_canonical_query():
    assert uri_encode("a b/ü~-_.+*", keep_slash=True) == "a%20b/%C3%BC~-_.%2B%2A"
    assert uri_encode("a/b") == "a%2Fb"
    assert canonical_query([("prefix", "a b"), ("delete", ""), ("list-type", 2), ("a", None)]) == \
        "a=&delete=&list-type=2&prefix=a%20b"
    assert canonical_query({}) == ""


def test_virtual_host_only_for_dns_buckets():
    c = LiteS3Client(ACCESS, SECRET, region="eu-west-1")
    assert c._address("good-bucket", "k") == ("good-bucket.s3.eu-west-1.amazonaws.com",
                                              "good-bucket.s3.eu-west-1.amazonaws.com", "/k")
    assert c._address("dotted.bucket", "k") == ("s3.eu-west-1.amazonaws.com", "s3.eu-west-1.amazonaws.com",
                                                "/dotted.bucket/k")
    assert c._address("Upper_Case", None)[2] == "/Upper_Case"
    assert c._address("good-bucket", None)[2] == "/"
    ep = LiteS3Client(ACCESS, SECRET, endpoint_url="https://minio.example:443")
    assert ep._address("b", "k") == ("minio.example", "minio.example", "/b/k")
    v6 = LiteS3Client(ACCESS, SECRET, endpoint_url="http://[::1]:9000")
    assert v6._address("b", "k") == ("::1", "[::1]:9000", "/b/k")


def test_date_parsing():
    utc = datetime.timezone.utc
    assert parse_iso8601("2024-05-01T12:00:01.250Z") == datetime.datetime(2024, 5, 1, 12, 0, 1, 250000, utc)
    assert parse_iso8601("2024-05-01T12:00:01Z") == datetime.datetime(2024, 5, 1, 12, 0, 1, tzinfo=utc)
    assert parse_iso8601("2024-05-01T14:00:01+02:00") == datetime.datetime(
        2024, 5, 1, 12, 0, 1, tzinfo=utc)
    assert parse_iso8601("garbage") is None
    assert parse_http_date("Wed, 01 May 2024 12:00:01 GMT") == datetime.datetime(
        2024, 5, 1, 12, 0, 1, tzinfo=utc)
    assert parse_http_date(None) is None


# --------------------------------------------------------------------------
# lite_client_for: s3lite or boto3


def test_factory_uses_lite_with_static_credentials(clean_env):
    c = lite_client_for(endpoint_url="http://127.0.0.1:9000", access_key="a", secret_key="b")
    assert isinstance(c, LiteS3Client) and c.region == "us-east-1"
    clean_env.setenv("AWS_ACCESS_KEY_ID", "envkey")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    clean_env.setenv("AWS_SESSION_TOKEN", "envtoken")
    clean_env.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    c = lite_client_for()
    assert (c._access_key, c._secret_key, c._session_token, c.region) == ("envkey", "envsecret", "envtoken",
                                                                          "eu-west-3")
    clean_env.setenv("AWS_REGION", "ap-south-1")
    assert lite_client_for().region == "ap-south-1"
    assert lite_client_for(region="sa-east-1").region == "sa-east-1"
    # explicit keys: the environment's session token belongs to other keys
    assert lite_client_for(access_key="a", secret_key="b")._session_token is None
    clean_env.setenv("AWS_CA_BUNDLE", "/some/ca.pem")
    assert lite_client_for()._ca_bundle == "/some/ca.pem"
    assert lite_client_for(ca_bundle="/mine.pem")._ca_bundle == "/mine.pem"


@pytest.mark.parametrize("case", ["profile", "no-creds", "half-creds", "boto3-env", "HTTPS_PROXY", "http_proxy",
                                  "ALL_PROXY", "endpoint-path", "endpoint-query", "endpoint-userinfo",
                                  "endpoint-scheme", "fips", "config-file-region", "aws-profile-region",
                                  "china"])
def test_factory_leaves_it_to_boto3(clean_env, tmp_path, case):
    kw = {"access_key": "a", "secret_key": "b", "region": "eu-west-1"}
    if case == "profile":
        kw["profile"] = "prod"
    elif case == "no-creds":
        kw = {}
    elif case == "half-creds":
        kw = {"access_key": "a"}
    elif case == "boto3-env":
        clean_env.setenv("DRKIT_S3_CLIENT", "boto3")
    elif case in ("HTTPS_PROXY", "http_proxy", "ALL_PROXY"):
        clean_env.setenv(case, "http://proxy.example:3128")
    elif case == "endpoint-path":
        kw["endpoint_url"] = "http://127.0.0.1:9000/s3"
    elif case == "endpoint-query":
        kw["endpoint_url"] = "http://127.0.0.1:9000?x=1"
    elif case == "endpoint-userinfo":
        kw["endpoint_url"] = "http://u:p@127.0.0.1:9000"
    elif case == "endpoint-scheme":
        kw["endpoint_url"] = "ftp://127.0.0.1"
    elif case == "fips":
        clean_env.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    elif case == "config-file-region":
        del kw["region"]
        (tmp_path / ".aws").mkdir()
        (tmp_path / ".aws" / "config").write_text("[default]\nregion = eu-north-1\n")
    elif case == "aws-profile-region":
        del kw["region"]
        clean_env.setenv("AWS_PROFILE", "prod")
    elif case == "china":
        kw["region"] = "cn-north-1"
    assert lite_client_for(**kw) is None


def test_other_calls_go_to_a_lazily_made_boto3_client(clean_env):
    c = LiteS3Client("a", "b", region="us-east-1", endpoint_url="http://127.0.0.1:9")
    assert c._delegate is None
    upload = c.create_multipart_upload
    assert c._delegate is not None and upload.__self__ is c._delegate
    assert c._delegate.meta.endpoint_url == "http://127.0.0.1:9"
    assert c._delegate.meta.region_name == "us-east-1"
    assert type(c.get_paginator("list_multipart_uploads")).__module__.startswith("botocore")
    assert isinstance(c.get_paginator("list_objects_v2"), _Paginator)
    with pytest.raises(AttributeError):
        c._no_such_private_thing  # noqa: B018


# --------------------------------------------------------------------------
# a fake S3 on loopback


class FakeS3(object):
    """ThreadingHTTPServer on 127.0.0.1; ``app(request)`` answers
    (status, headers dict, body bytes). Requests are recorded."""

    def __init__(self, tls=None):
        self.requests = []
        self.app = always(200, {}, b"")
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = {"method": self.command, "path": self.path, "headers": self.headers, "body": body,
                       "port": self.client_address[1]}
                fake.requests.append(req)
                status, headers, data = fake.app(req)
                if status is None:  # drop the connection without an answer
                    self.close_connection = True
                    return
                self.send_response(status)
                headers = dict(headers)
                headers.setdefault("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                if headers.get("Connection") == "close":
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that hangs up mid-answer is part of some tests

        self.server = Server(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:  # (certificate, key) files
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = "%s://127.0.0.1:%d" % (scheme, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def client(self, **kw):
        c = LiteS3Client(ACCESS, SECRET, region="us-east-1", endpoint_url=self.url, **kw)
        c.sleeps = []
        c._sleep = c.sleeps.append
        return c

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakeS3()
    try:
        yield f
    finally:
        f.close()


def always(status, headers, body):
    def app(req):
        return status, headers, body
    return app


def sequence(answers):
    def app(req):
        return answers.pop(0)
    return app


def xml_error(code, message="msg"):
    return ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>%s</Message>"
            "<RequestId>1</RequestId></Error>" % (code, message)).encode()


def test_retries_503_then_succeeds_on_one_connection(fake):
    answers = [(503, {}, xml_error("SlowDown", "Please reduce your request rate.")),
               (503, {}, xml_error("SlowDown")), (200, {"Last-Modified": "Wed, 01 May 2024 12:00:01 GMT"},
                                                  b"hello world")]
    fake.app = sequence(answers)
    c = fake.client()
    resp = c.get_object(Bucket="bkt", Key="dir/a b")
    assert b"".join(resp["Body"].iter_chunks(4)) == b"hello world"
    resp["Body"].close()
    assert resp["ContentLength"] == 11
    assert len(fake.requests) == 3 and {r["path"] for r in fake.requests} == {"/bkt/dir/a%20b"}
    assert len(c.sleeps) == 2 and 0.1 <= c.sleeps[0] < 0.16 and 0.2 <= c.sleeps[1] < 0.26
    assert len({r["port"] for r in fake.requests}) == 1  # keep-alive: one connection throughout
    # every attempt is signed afresh
    assert all(r["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=%s/" % ACCESS)
               for r in fake.requests)
    fake.app = always(200, {"Content-Length": "5", "Last-Modified": "Wed, 01 May 2024 12:00:01 GMT"}, b"")
    head = c.head_object(Bucket="bkt", Key="k")
    assert head["ContentLength"] == 5 and head["LastModified"].year == 2024
    assert len({r["port"] for r in fake.requests}) == 1


def test_gives_up_after_five_attempts(fake):
    fake.app = always(500, {}, xml_error("InternalError", "We encountered an internal error."))
    c = fake.client()
    with pytest.raises(ClientError) as e:
        c.head_bucket(Bucket="bkt")
    assert len(fake.requests) == 5
    assert [round(s, 1) for s in c.sleeps] == [0.1, 0.2, 0.4, 0.8]
    assert e.value.response["Error"]["Code"] == "500"  # HEAD: no body, the status as boto3 gives it
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_429_and_connection_drops_are_retried(fake):
    answers = [(429, {}, b""), (None, {}, b""), (200, {}, b"<ok/>")]
    fake.app = sequence(answers)
    c = fake.client()
    assert c.put_object(Bucket="bkt", Key="k", Body=b"data")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(fake.requests) == 3 and all(r["body"] == b"data" for r in fake.requests)


def test_client_errors_are_not_retried_and_carry_the_code(fake):
    fake.app = always(404, {}, xml_error("NoSuchKey", "The specified key does not exist."))
    c = fake.client()
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="bkt", Key="missing")
    assert len(fake.requests) == 1
    assert e.value.response["Error"] == {"Code": "NoSuchKey", "Message": "The specified key does not exist."}
    assert "(NoSuchKey)" in str(e.value) and "GetObject" in str(e.value)
    fake.app = always(404, {}, b"")
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket="bkt", Key="missing")
    assert e.value.response["Error"]["Code"] == "404"
    s = S3Storage("bkt", "pre", client=c)
    assert s.stat("missing") is None
    fake.app = always(404, {}, xml_error("NoSuchKey"))
    with pytest.raises(NotFoundError):
        s.iter_read("missing")


def test_put_sends_signed_payload_hash_and_checksum(fake):
    fake.app = always(200, {"ETag": '"abc"', "x-amz-checksum-sha256": "c3VtCg=="}, b"")
    c = fake.client()
    body = b"x" * 1000
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    out = c.put_object(Bucket="bkt", Key="k", Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=digest)
    assert out["ETag"] == '"abc"' and out["ChecksumSHA256"] == "c3VtCg=="
    h = fake.requests[0]["headers"]
    assert h["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert h["x-amz-checksum-sha256"] == digest
    assert h["Content-Length"] == "1000"
    assert "x-amz-checksum-sha256" in h["Authorization"]


def test_create_only_put_sends_if_none_match_and_a_taken_key_is_object_exists(fake):
    c = fake.client()
    c.put_object(Bucket="bkt", Key="k", Body=b"data", IfNoneMatch="*")
    assert fake.requests[0]["headers"]["If-None-Match"] == "*"
    fake.app = always(412, {}, xml_error("PreconditionFailed", "At least one of the pre-conditions you "
                                                               "specified did not hold"))
    s = S3Storage("bkt", "pre", client=c)
    with pytest.raises(ObjectExists):
        s.put_bytes("wal/00000001/seg.zst", b"other", create=True)
    assert len(fake.requests) == 2  # a 412 is an answer, not retried
    assert fake.requests[1]["headers"]["If-None-Match"] == "*"
    fake.app = always(200, {}, b"")
    s.put_bytes("backups/x/data", b"plain")
    assert "If-None-Match" not in fake.requests[2]["headers"]  # plain writes stay unconditional


def test_region_redirect_is_followed_once(fake):
    def app(req):
        if "/eu-west-3/s3/" in req["headers"]["Authorization"]:
            return 200, {}, b""
        return 400, {"x-amz-bucket-region": "eu-west-3"}, xml_error("AuthorizationHeaderMalformed")
    fake.app = app
    c = fake.client()
    c.head_bucket(Bucket="bkt")
    assert c.region == "eu-west-3" and len(fake.requests) == 2 and c.sleeps == []


def test_truncated_body_is_an_error(fake):
    fake.app = always(200, {"Content-Length": "100", "Connection": "close"}, b"only ten b")
    c = fake.client()
    body = c.get_object(Bucket="bkt", Key="k")["Body"]
    with pytest.raises(IncompleteReadError) as e:
        list(body.iter_chunks(1024))
    assert "10 of 100" in str(e.value)


def test_an_unfinished_body_does_not_poison_the_connection(fake):
    fake.app = always(200, {}, b"a" * 100000)
    c = fake.client()
    body = c.get_object(Bucket="bkt", Key="k")["Body"]
    assert body.read(10) == b"a" * 10
    body.close()
    fake.app = always(200, {}, b"second")
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"second"
    assert len({r["port"] for r in fake.requests}) == 2


def test_threads_share_one_client(fake):
    def app(req):
        return 200, {}, req["path"].encode() * 1000

    fake.app = app
    c = fake.client()
    out, errors = {}, []

    def work(i):
        try:
            for j in range(20):
                key = "t%d/k%d" % (i, j)
                out[key] = b"".join(c.get_object(Bucket="bkt", Key=key)["Body"].iter_chunks(777))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(out) == 80 and all(v == ("/bkt/" + k).encode() * 1000 for k, v in out.items())
    assert len({r["port"] for r in fake.requests}) <= 4


def test_delete_objects_xml_and_content_md5(fake):
    def app(req):
        assert req["path"] == "/bkt?delete="
        assert req["headers"]["Content-MD5"] == base64.b64encode(hashlib.md5(req["body"]).digest()).decode()
        assert b"<Key>a &amp; b</Key>" in req["body"] and b"<Quiet>false</Quiet>" in req["body"]
        return 200, {}, (b'<?xml version="1.0" encoding="UTF-8"?>'
                         b'<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                         b'<Deleted><Key>a &amp; b</Key></Deleted>'
                         b'<Error><Key>c</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
                         b'</DeleteResult>')
    fake.app = app
    c = fake.client()
    resp = c.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": "a & b"}, {"Key": "c"}], "Quiet": False})
    assert resp["Deleted"] == [{"Key": "a & b"}]
    assert resp["Errors"] == [{"Key": "c", "Code": "AccessDenied", "Message": "Access Denied"}]


def test_list_pages_with_continuation_and_url_encoding(fake):
    ns = b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    page1 = (b'<ListBucketResult ' + ns + b'><Name>bkt</Name><Prefix>p%20q/</Prefix><KeyCount>2</KeyCount>'
             b'<IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>'
             b'<NextContinuationToken>tok/1+=</NextContinuationToken>'
             b'<Contents><Key>p%20q/a%2Bb</Key><LastModified>2024-05-01T12:00:01.000Z</LastModified>'
             b'<ETag>"e"</ETag><Size>12</Size></Contents>'
             b'<CommonPrefixes><Prefix>p%20q/dir/</Prefix></CommonPrefixes></ListBucketResult>')
    page2 = (b'<ListBucketResult ' + ns + b'><IsTruncated>false</IsTruncated><EncodingType>url</EncodingType>'
             b'<Contents><Key>p%20q/%C3%BC</Key><LastModified>2024-05-01T12:00:02Z</LastModified>'
             b'<Size>3</Size></Contents></ListBucketResult>')
    answers = [(200, {}, page1), (200, {}, page2)]
    fake.app = sequence(answers)
    c = fake.client()
    pages = list(c.get_paginator("list_objects_v2").paginate(Bucket="bkt", Prefix="p q/", Delimiter="/"))
    assert [o["Key"] for p in pages for o in p.get("Contents", ())] == ["p q/a+b", "p q/ü"]
    assert [o["Size"] for p in pages for o in p["Contents"]] == [12, 3]
    assert pages[0]["Contents"][0]["LastModified"] == datetime.datetime(2024, 5, 1, 12, 0, 1,
                                                                        tzinfo=datetime.timezone.utc)
    assert pages[0]["CommonPrefixes"] == [{"Prefix": "p q/dir/"}]
    assert "continuation-token" not in fake.requests[0]["path"]
    assert "continuation-token=tok%2F1%2B%3D" in fake.requests[1]["path"]
    assert "prefix=p%20q%2F" in fake.requests[0]["path"] and "encoding-type=url" in fake.requests[0]["path"]


# --------------------------------------------------------------------------
# transport failures and secrets


def test_connection_refused_maps_to_cannot_connect_without_secrets():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = LiteS3Client(ACCESS, SECRET, session_token=TOKEN, endpoint_url="http://127.0.0.1:%d" % port)
    c._sleep = [].append
    with pytest.raises(EndpointConnectionError) as e:
        c.head_bucket(Bucket="bkt")
    assert type(e.value).__name__ == "EndpointConnectionError"
    s = S3Storage("bkt", "", endpoint_url=c.where, client=c)
    with pytest.raises(StorageError) as e2:
        s.check_writable()
    assert "cannot connect" in str(e2.value)
    for text in (str(e.value), repr(e.value), str(e.value.response), str(e2.value)):
        assert SECRET not in text and TOKEN not in text and "Signature=" not in text


def test_error_answers_never_echo_secrets(fake):
    fake.app = always(403, {}, xml_error("SignatureDoesNotMatch", "The request signature we calculated does not "
                                                                  "match the signature you provided."))
    c = fake.client(session_token=TOKEN)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="bkt", Key="k")
    s = S3Storage("bkt", "", endpoint_url=fake.url, client=c)
    with pytest.raises(StorageError) as e2:
        list(s.list(""))
    assert "access denied" in str(e2.value)
    for text in (str(e.value), repr(e.value), str(e.value.response), str(e2.value), repr(e2.value),
                 str(vars(e.value))):
        assert SECRET not in text and TOKEN not in text and "Signature=" not in text


def test_tls_failure_is_an_ssl_error(fake):
    """An https:// endpoint that speaks plain HTTP: a TLS error, named so."""
    c = LiteS3Client(ACCESS, SECRET, endpoint_url=fake.url.replace("http:", "https:"))
    c._sleep = [].append
    with pytest.raises(SSLError) as e:
        c.head_bucket(Bucket="bkt")
    s = S3Storage("bkt", "", endpoint_url=c.where, client=c)
    assert "TLS error" in str(s._error("reach bucket", e.value))


@pytest.fixture
def tls_fake(tmp_path):
    """FakeS3 over HTTPS with a self-signed certificate for 127.0.0.1."""
    cert, key = str(tmp_path / "s3.crt"), str(tmp_path / "s3.key")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("openssl cannot make a test certificate here")
    f = FakeS3(tls=(cert, key))
    f.cert = cert
    try:
        yield f
    finally:
        f.close()


def test_https_with_ca_bundle_and_without_verification(tls_fake, tmp_path):
    tls_fake.app = always(200, {}, b"over tls")
    c = LiteS3Client(ACCESS, SECRET, endpoint_url=tls_fake.url, ca_bundle=tls_fake.cert)
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"over tls"
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"over tls"
    assert len({r["port"] for r in tls_fake.requests}) == 1  # kept alive over TLS too
    c = LiteS3Client(ACCESS, SECRET, endpoint_url=tls_fake.url, validate_certs=False)
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"over tls"
    # not trusted: an SSLError at once (no retries), reported as a TLS error
    n = len(tls_fake.requests)
    c = LiteS3Client(ACCESS, SECRET, endpoint_url=tls_fake.url, ca_bundle=None)
    c.sleeps = []
    c._sleep = c.sleeps.append
    with pytest.raises(SSLError) as e:
        c.get_object(Bucket="bkt", Key="k")
    assert c.sleeps == [] and len(tls_fake.requests) == n
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
    s = S3Storage("bkt", "", endpoint_url=tls_fake.url, client=c)
    with pytest.raises(StorageError) as e2:
        s.get_bytes("k")
    assert "TLS error" in str(e2.value) and "ca_bundle" in str(e2.value)
    # a CA bundle that cannot be read
    c = LiteS3Client(ACCESS, SECRET, endpoint_url=tls_fake.url, ca_bundle=str(tmp_path / "missing.pem"))
    with pytest.raises(SSLError) as e:
        c.head_bucket(Bucket="bkt")
    assert "missing.pem" in str(e.value)
