# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small S3 client (standard library only) for the per-file commands.

``drkit wal-push`` and ``drkit wal-fetch`` run as a new process for every WAL
file; ``import boto3`` plus creating its client costs about a quarter of a
second each time, several times what fetching a segment from a nearby S3
takes. ``LiteS3Client`` speaks the few S3 calls those commands make
(GetObject, HeadObject, PutObject with If-None-Match, HeadBucket, DeleteObjects,
ListObjectsV2) itself, over ``http.client`` with AWS Signature Version 4,
and looks like the boto3 client to ``storage.S3Storage``. Anything else
(multipart uploads of big objects, ...) goes to a real boto3 client made on
first use with the same settings.

``lite_client_for`` says when this client may be used at all: static
credentials (options or AWS_* variables), no profile, no proxy, and not
``DRKIT_S3_CLIENT=boto3``; otherwise it returns None and boto3 does the work.

Over 600 lines, and moved here whole and unchanged on purpose: the storage
issue replaces hand-written signing with a maintained object-store library,
and this file goes then.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import email.utils
import hashlib
import hmac
import http.client
import os
import random
import re
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

from .s3_boto import boto3_client

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120
MAX_ATTEMPTS = 5
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRY_CODES = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
               "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests")
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")
MAX_IDLE = 8

_UNRESERVED = "-_.~"  # with A-Z a-z 0-9, which quote() never encodes
_BUCKET_DNS_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
_ISO_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$")


# --------------------------------------------------------------------------
# errors: shaped like botocore's, because storage.S3Storage._error reads
# ``exc.response["Error"]["Code"]`` and the exception's class name


class LiteS3Error(Exception):
    """An S3 error response (or, in the subclasses, a transport failure)."""

    retryable = False

    def __init__(self, message, code="", status=None, operation=None):
        super(LiteS3Error, self).__init__(message)
        self.operation = operation
        self.response = {"Error": {"Code": code, "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": status}}


class ClientError(LiteS3Error):
    """The server answered with an error status."""

    def __init__(self, code, message, status, operation):
        text = "An error occurred (%s) when calling the %s operation: %s" % (code, operation, message)
        super(ClientError, self).__init__(text, code=code, status=status, operation=operation)
        self.response["Error"]["Message"] = message


class EndpointConnectionError(LiteS3Error):
    """Could not connect (refused, unreachable, name not resolved)."""

    retryable = True


class ConnectTimeoutError(EndpointConnectionError):
    """Connecting took longer than CONNECT_TIMEOUT."""


class ConnectionClosedError(LiteS3Error):
    """The connection broke while a request or its answer was on the way."""

    retryable = True


class ReadTimeoutError(LiteS3Error):
    """No data from the server for READ_TIMEOUT seconds."""

    retryable = True


class IncompleteReadError(LiteS3Error):
    """The body ended before Content-Length bytes had arrived."""


class SSLError(LiteS3Error):
    """TLS failed (certificate not trusted, handshake error...); retried
    unless the certificate was refused."""

    def __init__(self, message, retryable=True):
        super(SSLError, self).__init__(message)
        self.retryable = retryable


# --------------------------------------------------------------------------
# AWS Signature Version 4 (header based)


def uri_encode(text, keep_slash=False):
    """RFC 3986 percent-encoding of UTF-8: A-Za-z0-9-_.~ stay, '/' too when
    ``keep_slash`` (path segments), everything else becomes %XX."""
    return quote(text, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_query(params):
    """Canonical query string of a list of (name, value) pairs or a dict:
    names and values encoded, sorted, ``name=`` for an empty value. Also
    the query string sent, so that what is signed is what is sent."""
    if isinstance(params, dict):
        params = params.items()
    pairs = sorted((uri_encode(str(k)), uri_encode("" if v is None else str(v))) for k, v in params or ())
    return "&".join("%s=%s" % kv for kv in pairs)


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key, datestamp, region, service="s3"):
    k_date = _hmac(("AWS4" + secret_key).encode("utf-8"), datestamp)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def sign_v4(method, path, query, headers, payload_hash, access_key, secret_key, region,
            session_token=None, amz_date=None, service="s3"):
    """Sign a request in place and return ``headers``.

    ``path`` is the encoded path as sent, ``query`` the canonical query
    string (also as sent), ``headers`` a dict with lower-case names that
    holds ``host`` and any other header to sign. Adds x-amz-date,
    x-amz-content-sha256, x-amz-security-token (with a session token) and
    Authorization. Signed: host, content-md5 and every x-amz-* header."""
    amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    if session_token:
        headers["x-amz-security-token"] = session_token
    names = sorted(n for n in headers if n in ("host", "content-md5") or n.startswith("x-amz-"))
    canonical_headers = "".join("%s:%s\n" % (n, " ".join(str(headers[n]).split())) for n in names)
    signed = ";".join(names)
    creq = "\n".join([method, path or "/", query, canonical_headers, signed, payload_hash])
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode("utf-8")).hexdigest()])
    signature = hmac.new(signing_key(secret_key, amz_date[:8], region, service), to_sign.encode("utf-8"),
                         hashlib.sha256).hexdigest()
    headers["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        access_key, scope, signed, signature)
    return headers


# --------------------------------------------------------------------------
# XML and header parsing


def _local(tag):
    return tag.rsplit("}", 1)[-1]


def _kids(elem, name):
    return [c for c in elem if _local(c.tag) == name]


def _text(elem, name, default=None):
    for c in elem:
        if _local(c.tag) == name:
            return c.text or ""
    return default


def parse_iso8601(text):
    """``2024-05-01T12:00:00.000Z`` -> aware datetime (UTC), None if unparsable."""
    m = _ISO_RE.match((text or "").strip())
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    off = m.group(8)
    tz = timezone.utc
    if off and off != "Z":
        digits = off[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        tz = timezone(timedelta(minutes=-minutes if off[0] == "-" else minutes))
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(timezone.utc)


def parse_http_date(text):
    """Last-Modified header -> aware datetime, None if missing/unparsable."""
    if not text:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _error_from_body(status, body, reason):
    """(code, message, region hint) of an S3 XML error body."""
    code, message, region = str(status), reason or http.client.responses.get(status, ""), None
    if body:
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            return code, message, region
        if _local(root.tag) == "Error":
            code = _text(root, "Code") or code
            message = _text(root, "Message") or message
            region = _text(root, "Region")
    return code, message, region


def xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md5_b64(data):
    try:
        h = hashlib.md5(data, usedforsecurity=False)
    except TypeError:  # pragma: no cover - Python < 3.9
        h = hashlib.md5(data)  # nosec - Content-MD5 is what S3 asks for here
    return base64.b64encode(h.digest()).decode("ascii")


# --------------------------------------------------------------------------
# response bodies


class _Body(object):
    """The streamed body of a GetObject; holds the connection until the end."""

    def __init__(self, client, conn, resp, length, key):
        self._client = client
        self._conn = conn
        self._resp = resp
        self._length = length
        self._key = key
        self._got = 0
        self._eof = False
        self._broken = False

    def read(self, amt=None):
        if self._eof:
            return b""
        try:
            data = self._resp.read() if amt is None else self._resp.read(amt)
        except socket.timeout:
            self._broken = True
            self.close()
            raise ReadTimeoutError("Read timeout on endpoint %s while reading %s" % (self._client.where, self._key))
        except (OSError, http.client.HTTPException) as e:
            self._broken = True
            self.close()
            raise ConnectionClosedError("Connection to %s was closed while reading %s: %s" % (
                self._client.where, self._key, _brief(e)))
        self._got += len(data)
        if not data or amt is None:
            self._eof = True
            if self._length is not None and self._got != self._length:
                self._broken = True
                self.close()
                raise IncompleteReadError("Read %d of %d bytes of %s from %s: the connection ended early" % (
                    self._got, self._length, self._key, self._client.where))
            self.close()
        return data

    def iter_chunks(self, chunk_size=1 << 20):
        while True:
            data = self.read(chunk_size)
            if not data:
                return
            yield data

    def close(self):
        conn, self._conn = self._conn, None
        if conn is None:
            return
        complete = self._resp.isclosed() and (self._length is None or self._got == self._length)
        if complete and not self._broken and not self._resp.will_close:
            self._client._release(conn)
        else:
            conn.close()  # unread data on it, or broken: not reusable
            self._resp.close()


def _brief(exc):
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


# --------------------------------------------------------------------------
# the client


class _Paginator(object):
    def __init__(self, client):
        self._client = client

    def paginate(self, Bucket, Prefix="", Delimiter=None, **kwargs):
        if kwargs:  # PaginationConfig, StartAfter...: boto3's paginator
            args = dict(kwargs, Bucket=Bucket, Prefix=Prefix)
            if Delimiter:
                args["Delimiter"] = Delimiter
            yield from self._client._boto3().get_paginator("list_objects_v2").paginate(**args)
            return
        token = None
        while True:
            page = self._client.list_objects_v2(Bucket=Bucket, Prefix=Prefix, Delimiter=Delimiter,
                                                ContinuationToken=token)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return


class LiteS3Client(object):
    """The subset of boto3's S3 client that storage.S3Storage uses; any
    other attribute is delegated to a real boto3 client made on first use."""

    def __init__(self, access_key, secret_key, session_token=None, region="us-east-1", endpoint_url=None,
                 ca_bundle=None, validate_certs=True, profile=None):
        self._access_key = access_key
        self._secret_key = secret_key
        self._session_token = session_token or None
        self._region = region or "us-east-1"
        self._endpoint_url = endpoint_url or None
        self._ca_bundle = ca_bundle or None
        self._validate_certs = validate_certs
        self._profile = profile
        self._lock = threading.Lock()
        self._idle = {}
        self._ssl_context = None
        self._delegate = None
        if self._endpoint_url:
            parts = urlsplit(self._endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("endpoint_url must be http(s)://host[:port]")
            self._scheme = parts.scheme
            self._fixed_host = parts.hostname
            self._port = parts.port
        else:
            self._scheme = "https"
            self._fixed_host = None
            self._port = None
        self._sleep = time.sleep

    # ---- delegation to boto3

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._boto3(), name)

    def _boto3(self):
        with self._lock:
            if self._delegate is None:
                self._delegate = boto3_client(
                    endpoint_url=self._endpoint_url, region=self._region, access_key=self._access_key,
                    secret_key=self._secret_key, session_token=self._session_token, profile=self._profile,
                    ca_bundle=self._ca_bundle, validate_certs=self._validate_certs)
            return self._delegate

    def get_paginator(self, name):
        if name == "list_objects_v2":
            return _Paginator(self)
        return self._boto3().get_paginator(name)

    # ---- addressing

    @property
    def region(self):
        return self._region

    @property
    def where(self):
        """The endpoint, for messages (never credentials)."""
        if self._endpoint_url:
            return self._endpoint_url
        return "https://s3.%s.amazonaws.com" % self._region

    def _address(self, bucket, key):
        """(connect host, Host header, encoded path)."""
        tail = "/" + uri_encode(key, keep_slash=True) if key is not None else ""
        if self._fixed_host is not None:
            host = self._fixed_host
            path = "/" + uri_encode(bucket) + tail
        elif _BUCKET_DNS_RE.match(bucket) and not _IP_RE.match(bucket):
            host = "%s.s3.%s.amazonaws.com" % (bucket, self._region)
            path = tail or "/"
        else:
            host = "s3.%s.amazonaws.com" % self._region
            path = "/" + uri_encode(bucket) + tail
        header = "[%s]" % host if ":" in host else host
        default = 443 if self._scheme == "https" else 80
        if self._port is not None and self._port != default:
            header = "%s:%d" % (header, self._port)
        return host, header, path

    # ---- connections

    def _context(self):
        if self._ssl_context is None:
            verify = self._validate_certs is not False
            try:
                ctx = ssl.create_default_context(cafile=self._ca_bundle if verify else None)
            except (OSError, ssl.SSLError) as e:
                raise SSLError("Cannot use the CA bundle %s: %s" % (self._ca_bundle, _brief(e)), retryable=False)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl_context = ctx
        return self._ssl_context

    def _acquire(self, host):
        """(connection, reused): an idle one for host, or a new connected one."""
        with self._lock:
            idle = self._idle.get(host)
            if idle:
                return idle.pop(), True
            ctx = self._context() if self._scheme == "https" else None
        port = self._port or (443 if self._scheme == "https" else 80)
        if ctx is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as e:
            conn.close()
            raise SSLError("SSL validation failed for %s: %s" % (self.where, _brief(e)), retryable=False)
        except ssl.SSLError as e:
            conn.close()
            raise SSLError("SSL handshake with %s failed: %s" % (self.where, _brief(e)))
        except socket.timeout:
            conn.close()
            raise ConnectTimeoutError('Connect timeout on endpoint URL: "%s"' % self.where)
        except OSError as e:
            conn.close()
            raise EndpointConnectionError('Could not connect to the endpoint URL: "%s" (%s)' % (
                self.where, _brief(e)))
        conn.sock.settimeout(READ_TIMEOUT)
        return conn, False

    def _release(self, conn):
        if conn.sock is None:
            return
        with self._lock:
            idle = self._idle.setdefault(conn.host, [])
            if len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def close(self):
        """Close the idle connections."""
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle = {}
        for c in conns:
            c.close()

    # ---- one request, with retries

    def _request(self, operation, method, bucket, key=None, query=None, body=b"", headers=None, stream=False):
        """Send a request; return (response, connection, body bytes).

        With ``stream`` and a 2xx answer the body is left unread on the
        response and the connection is the caller's; otherwise the body is
        read and the connection back in the pool. Error answers raise
        ClientError; transport failures their own classes. Retried (all
        calls here are idempotent): connection failures, timeouts, 429/5xx
        and throttling codes, up to MAX_ATTEMPTS with exponential backoff."""
        body = bytes(body or b"")
        attempt = 0
        redirected = False
        while True:
            attempt += 1
            host, url, hdrs = self._prepare(method, bucket, key, query, body, headers)
            try:
                resp, conn, data = self._exchange(host, method, url, body, hdrs, stream)
            except LiteS3Error as e:
                e.operation = operation
                if not e.retryable or attempt >= MAX_ATTEMPTS:
                    raise
                self._backoff(attempt)
                continue
            status = resp.status
            if 200 <= status < 300:
                return resp, conn, data
            code, message, region_hint = _error_from_body(status, data, resp.reason)
            new_region = resp.getheader("x-amz-bucket-region") or region_hint
            if (not redirected and new_region and new_region != self._region and status in (301, 307, 400)
                    and _REGION_RE.match(new_region)):
                # The bucket lives in another region than we signed for (boto3 follows that too).
                redirected = True
                with self._lock:
                    self._region = new_region
                attempt -= 1
                continue
            if (status in RETRY_STATUS or code in RETRY_CODES) and attempt < MAX_ATTEMPTS:
                self._backoff(attempt)
                continue
            raise ClientError(code, message, status, operation)

    def _prepare(self, method, bucket, key=None, query=None, body=b"", headers=None, amz_date=None):
        """(connect host, path?query, signed headers) of one request."""
        host, host_header, path = self._address(bucket, key)
        qs = canonical_query(query)
        hdrs = {"host": host_header}
        for k, v in (headers or {}).items():
            hdrs[k.lower()] = v
        if method in ("PUT", "POST"):
            hdrs["content-length"] = str(len(body))
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        sign_v4(method, path, qs, hdrs, payload_hash, self._access_key, self._secret_key, self._region,
                session_token=self._session_token, amz_date=amz_date)
        return host, path + ("?" + qs if qs else ""), hdrs

    def _backoff(self, attempt):
        self._sleep(0.1 * (2 ** (attempt - 1)) + random.uniform(0, 0.05))

    def _exchange(self, host, method, url, body, hdrs, stream):
        """One request on one connection. A reused (keep-alive) connection
        that the server closed in the meantime is replaced once, at once."""
        for fresh_try in (False, True):
            conn, reused = self._acquire(host)
            try:
                conn.request(method, url, body=body if body or method in ("PUT", "POST") else None, headers=hdrs)
                resp = conn.getresponse()
                if stream and 200 <= resp.status < 300:
                    return resp, conn, None
                data = resp.read()
            except socket.timeout:
                conn.close()
                raise ReadTimeoutError('Read timeout on endpoint URL: "%s"' % self.where)
            except ssl.SSLError as e:
                conn.close()
                raise SSLError("SSL error talking to %s: %s" % (self.where, _brief(e)))
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and not fresh_try:
                    continue
                raise ConnectionClosedError('Connection was closed before we received a valid response from '
                                            'endpoint URL: "%s" (%s)' % (self.where, _brief(e)))
            if resp.will_close:
                conn.close()
            else:
                self._release(conn)
            return resp, None, data
        raise ConnectionClosedError("unreachable")  # pragma: no cover

    # ---- the S3 calls

    def get_object(self, Bucket, Key, **kwargs):
        if kwargs:
            return self._boto3().get_object(Bucket=Bucket, Key=Key, **kwargs)
        resp, conn, dummy = self._request("GetObject", "GET", Bucket, Key, stream=True)
        length = resp.getheader("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        return {"Body": _Body(self, conn, resp, length, Key), "ContentLength": length,
                "LastModified": parse_http_date(resp.getheader("Last-Modified")),
                "ETag": resp.getheader("ETag"), "ResponseMetadata": {"HTTPStatusCode": resp.status}}

    def head_object(self, Bucket, Key, **kwargs):
        if kwargs:
            return self._boto3().head_object(Bucket=Bucket, Key=Key, **kwargs)
        resp, dummy, dummy2 = self._request("HeadObject", "HEAD", Bucket, Key)
        length = resp.getheader("Content-Length")
        return {"ContentLength": int(length) if length is not None and length.isdigit() else 0,
                "LastModified": parse_http_date(resp.getheader("Last-Modified")),
                "ETag": resp.getheader("ETag"), "ResponseMetadata": {"HTTPStatusCode": resp.status}}

    def put_object(self, Bucket, Key, Body=b"", ChecksumAlgorithm=None, ChecksumSHA256=None,
                   IfNoneMatch=None, **kwargs):
        if kwargs or not isinstance(Body, (bytes, bytearray, memoryview)) or (
                ChecksumAlgorithm not in (None, "SHA256")):
            if IfNoneMatch is not None:
                kwargs["IfNoneMatch"] = IfNoneMatch
            return self._boto3().put_object(Bucket=Bucket, Key=Key, Body=Body, ChecksumAlgorithm=ChecksumAlgorithm,
                                            ChecksumSHA256=ChecksumSHA256, **kwargs)
        body = bytes(Body)
        headers = {}
        if IfNoneMatch is not None:
            headers["if-none-match"] = IfNoneMatch  # create-only: 412 when the key exists
        if ChecksumAlgorithm or ChecksumSHA256:
            headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
            headers["x-amz-checksum-sha256"] = ChecksumSHA256 or base64.b64encode(
                hashlib.sha256(body).digest()).decode("ascii")
        resp, dummy, dummy2 = self._request("PutObject", "PUT", Bucket, Key, body=body, headers=headers)
        out = {"ETag": resp.getheader("ETag"), "ResponseMetadata": {"HTTPStatusCode": resp.status}}
        if resp.getheader("x-amz-checksum-sha256"):
            out["ChecksumSHA256"] = resp.getheader("x-amz-checksum-sha256")
        return out

    def head_bucket(self, Bucket, **kwargs):
        if kwargs:
            return self._boto3().head_bucket(Bucket=Bucket, **kwargs)
        resp, dummy, dummy2 = self._request("HeadBucket", "HEAD", Bucket)
        return {"BucketRegion": resp.getheader("x-amz-bucket-region"),
                "ResponseMetadata": {"HTTPStatusCode": resp.status}}

    def delete_objects(self, Bucket, Delete, **kwargs):
        if kwargs:
            return self._boto3().delete_objects(Bucket=Bucket, Delete=Delete, **kwargs)
        items = []
        for obj in Delete.get("Objects", ()):
            items.append("<Object><Key>%s</Key></Object>" % xml_escape(obj["Key"]))
        body = ('<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="%s">%s<Quiet>%s</Quiet></Delete>' % (
            S3_NS, "".join(items), "true" if Delete.get("Quiet") else "false")).encode("utf-8")
        resp, dummy, data = self._request("DeleteObjects", "POST", Bucket, query=[("delete", "")], body=body,
                                          headers={"content-md5": _md5_b64(body),
                                                   "content-type": "application/xml"})
        out = {"ResponseMetadata": {"HTTPStatusCode": resp.status}}
        root = ElementTree.fromstring(data) if data else None
        if root is not None:
            deleted = [{"Key": _text(d, "Key")} for d in _kids(root, "Deleted")]
            errors = [{"Key": _text(e, "Key"), "Code": _text(e, "Code"), "Message": _text(e, "Message")}
                      for e in _kids(root, "Error")]
            if deleted:
                out["Deleted"] = deleted
            if errors:
                out["Errors"] = errors
        return out

    def list_objects_v2(self, Bucket, Prefix="", Delimiter=None, ContinuationToken=None,
                        **kwargs):
        if kwargs:
            args = dict(kwargs, Bucket=Bucket, Prefix=Prefix)
            if Delimiter:
                args["Delimiter"] = Delimiter
            if ContinuationToken:
                args["ContinuationToken"] = ContinuationToken
            return self._boto3().list_objects_v2(**args)
        query = [("list-type", "2"), ("encoding-type", "url"), ("prefix", Prefix or "")]
        if Delimiter:
            query.append(("delimiter", Delimiter))
        if ContinuationToken:
            query.append(("continuation-token", ContinuationToken))
        resp, dummy, data = self._request("ListObjectsV2", "GET", Bucket, query=query)
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError as e:
            raise LiteS3Error("ListObjectsV2 at %s answered something that is not XML: %s" % (self.where, e))
        encoded = (_text(root, "EncodingType") or "").lower() == "url"

        def dec(value):
            return unquote(value.replace("+", " ")) if encoded and value is not None else value

        page = {"IsTruncated": (_text(root, "IsTruncated") or "").lower() == "true",
                "Prefix": dec(_text(root, "Prefix", "")),
                "ResponseMetadata": {"HTTPStatusCode": resp.status}}
        contents = []
        for c in _kids(root, "Contents"):
            contents.append({"Key": dec(_text(c, "Key")), "Size": int(_text(c, "Size") or 0),
                             "LastModified": parse_iso8601(_text(c, "LastModified")),
                             "ETag": _text(c, "ETag")})
        if contents:
            page["Contents"] = contents
        prefixes = [{"Prefix": dec(_text(p, "Prefix"))} for p in _kids(root, "CommonPrefixes")]
        if prefixes:
            page["CommonPrefixes"] = prefixes
        token = _text(root, "NextContinuationToken")
        if token:
            page["NextContinuationToken"] = token
        count = _text(root, "KeyCount")
        if count is not None and count.isdigit():
            page["KeyCount"] = int(count)
        return page


# --------------------------------------------------------------------------
# when to use it


def _truthy(value):
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _plain_endpoint(url):
    """True for scheme://host[:port][/] (the only endpoint_url form handled here)."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0  # .port raises ValueError when malformed
    except ValueError:
        return False
    return bool(port_ok and parts.scheme in ("http", "https") and parts.hostname and parts.path in ("", "/")
                and not parts.query and not parts.fragment and "@" not in parts.netloc)


def lite_client_for(endpoint_url=None, region=None, access_key=None, secret_key=None, session_token=None,
                    profile=None, ca_bundle=None, validate_certs=True):
    """A LiteS3Client for these storage options, or None when boto3 must do
    the work: DRKIT_S3_CLIENT=boto3, a profile, no static credentials, a
    proxy in the environment, an endpoint_url with a path or query, or
    settings only boto3 understands (FIPS/dual-stack, region from a config
    file, other partitions)."""
    env = os.environ
    if env.get("DRKIT_S3_CLIENT", "").strip().lower() == "boto3":
        return None
    if profile:
        return None
    if any(env.get(v) for v in PROXY_VARS):
        return None
    if access_key or secret_key:
        if not (access_key and secret_key):
            return None  # boto3's path reports the half-given pair
        token = session_token
    else:
        access_key = env.get("AWS_ACCESS_KEY_ID")
        secret_key = env.get("AWS_SECRET_ACCESS_KEY")
        token = session_token or env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN")
        if not (access_key and secret_key):
            return None  # profile files, SSO, instance roles...: boto3's credential chain
    if endpoint_url:
        if not _plain_endpoint(endpoint_url):
            return None
    elif _truthy(env.get("AWS_USE_FIPS_ENDPOINT")) or _truthy(env.get("AWS_USE_DUALSTACK_ENDPOINT")):
        return None
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        config_file = env.get("AWS_CONFIG_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "config")
        if env.get("AWS_PROFILE") or os.path.exists(config_file):
            return None  # boto3 may find the region there
        region = "us-east-1"
    if not _REGION_RE.match(region):
        return None
    if not endpoint_url and (region.startswith("cn-") or region.startswith("us-iso")):
        return None  # other partitions, other host names: boto3 knows them
    ca_bundle = ca_bundle or env.get("AWS_CA_BUNDLE") or None
    return LiteS3Client(access_key, secret_key, session_token=token, region=region,
                        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
                        ca_bundle=ca_bundle, validate_certs=validate_certs)
