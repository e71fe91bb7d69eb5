"""A real BottleCRM (PyPI ``django-crm``) as a throwaway server for tests and the quickstart.

BottleCRM needs Python >= 3.12 while the replicator runs on 3.11, so it lives in its own
virtualenv under the cache directory. Its 253 migrations take ~2 minutes; the migrated
database is cached as a ``pg_dump -Fc`` (keyed by the django-crm version) and restored
in about a second on every later start.

    venv = ensure_installed()
    crm = start_bottlecrm(cluster, workdir)   # crm.url, crm.token, crm.org_id
    ...
    crm.clear_data()                          # per-test isolation
    crm.stop()

With ``celery=True`` webhook deliveries and other tasks go through Redis to a real
Celery worker, and Celery beat sweeps due retries every minute, as in production:

    crm = start_bottlecrm(cluster, workdir, celery=True)    # starts its own Redis
    endpoint_id, secret = crm.create_webhook(url, ["account.created", ...])
    crm.deliveries(endpoint_id)                              # the delivery log, newest first

``python -m replicator.devstack.bottlecrm [--celery]`` starts PostgreSQL + BottleCRM, prints
``{"url": ..., "token": ...}`` as JSON and stays in the foreground until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from replicator.devstack.cache import cache_root, file_lock, log_tail, pid_alive, stop_pid
from replicator.devstack.postgres import PgCluster, free_port, pg_bin, start_cluster
from replicator.devstack.redis import Redis, start_redis

DJANGO_CRM_VERSION = "1.35.0"
# `packaging` is imported by kombu's transport loading but not declared by django-crm.
EXTRA_PACKAGES = ("packaging", "gunicorn")
SETTINGS_MODULE = "replicator_bottlecrm_settings"
TEST_APP = "replicator_bottlecrm_testapp"
# Business tables emptied by clear_data(); TRUNCATE ... CASCADE also empties every
# table pointing at them (links, line items, comments, tasks, invoices), but never
# org, profile, tokens, custom-field definitions or pipelines.
BUSINESS_TABLES = ("accounts", "contacts", "opportunity", "product", "lead")
# BottleCRM's Celery app (crm/celery.py); its beat schedule runs
# webhooks.tasks.dispatch_due_deliveries every minute, which sends due retries.
CELERY_APP = "crm"


def _version_dir(cache_dir: Path | None) -> Path:
    return cache_root(cache_dir) / "bottlecrm" / DJANGO_CRM_VERSION


def find_python312() -> Path:
    """A Python 3.12 interpreter: pyenv's first, then PATH."""
    candidates = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"), reverse=True)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("python3.12")
    if found:
        return Path(found)
    raise RuntimeError(
        "BottleCRM (django-crm) needs Python 3.12, and none was found in ~/.pyenv/versions/3.12*/ "
        "or on PATH. Install one, e.g. `pyenv install 3.12` or `apt-get install python3.12 python3.12-venv`."
    )


def ensure_installed(cache_dir: Path | None = None) -> Path:
    """Create (once) a venv with django-crm, gunicorn and packaging; return its path."""
    vdir = _version_dir(cache_dir)
    venv = vdir / "venv"
    marker = venv / ".replicator-installed"
    wanted = f"django-crm=={DJANGO_CRM_VERSION}\n"
    if marker.exists() and marker.read_text() == wanted and (venv / "bin" / "gunicorn").exists():
        return venv
    with file_lock(vdir / "install.lock"):
        if marker.exists() and marker.read_text() == wanted and (venv / "bin" / "gunicorn").exists():
            return venv
        python = find_python312()
        shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from an interrupted install
        packages = [f"django-crm=={DJANGO_CRM_VERSION}", *EXTRA_PACKAGES]
        uv = shutil.which("uv")
        if uv:
            _run([uv, "venv", "--quiet", "--python", str(python), str(venv)], "create the BottleCRM venv")
            _run(
                [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *packages],
                "install django-crm",
            )
        else:
            _run([str(python), "-m", "venv", str(venv)], "create the BottleCRM venv")
            _run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages],
                "install django-crm",
            )
        marker.write_text(wanted)
    return venv


def _run(cmd: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"could not {what}: `{' '.join(cmd)}` exited {proc.returncode}:\n" + (proc.stdout + proc.stderr)[-3000:]
        )
    return proc


_SETTINGS_PY = '''\
"""Written by replicator.devstack.bottlecrm: test-only overrides of BottleCRM's settings."""
from crm.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "{test_app}"]  # noqa: F405
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = {media_root!r}
{celery}'''

_EAGER_CELERY = """
# No Redis: tasks (emails, webhook deliveries) run inline in the request.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = "cache+memory://"
"""

_REDIS_CELERY = """
# Celery as in production: a worker and beat, with Redis as broker and result store.
CELERY_BROKER_URL = {redis_url!r}
CELERY_RESULT_BACKEND = {redis_url!r}
"""

_TEST_APP_PY = '''\
"""Test-only relaxations applied when Django starts (written by replicator.devstack.bottlecrm)."""
import importlib

from django.apps import AppConfig


# True when Celery runs tasks eagerly inside the request (no worker, no Redis).
EAGER_CELERY = {eager}


class ReplicatorTestConfig(AppConfig):
    name = "{test_app}"
    label = "replicator_testapp"

    def ready(self):
        # The webhook SSRF guard refuses loopback, plain http and non-443 ports; tests
        # run their webhook receiver on 127.0.0.1:<random port>.
        from webhooks import ssrf

        ssrf.is_blocked = lambda ip: False
        ssrf._allowed_ports = lambda: range(1, 65536)
        ssrf._allowed_schemes = lambda: ("https", "http")
        if EAGER_CELERY:
            # Eager Celery runs tasks inside the request; a task clearing the RLS context
            # on exit would blind the rest of that request (e.g. its second webhook event).
            # The request middleware resets the context itself. A real worker needs the
            # clearing: it is what keeps one org's context off the next task's connection.
            for module in (
                "webhooks.tasks", "automation.tasks", "cases.tasks", "invoices.tasks", "projects.tasks"
            ):
                mod = importlib.import_module(module)
                if hasattr(mod, "clear_rls_context"):
                    mod.clear_rls_context = lambda: None
'''

_BOOTSTRAP_PY = """
import json, sys
import django
django.setup()
from django.db import connection
from common.models import Org, PersonalAccessToken, Profile, User

email = sys.argv[1]
user, _ = User.objects.get_or_create(email=email, defaults={"is_active": True})
user.set_password(sys.argv[2]); user.is_active = True; user.save()
org = Org.objects.filter(name="Replicator Test").first() or Org.objects.create(name="Replicator Test")
with connection.cursor() as cur:  # profile rows are org-scoped under RLS
    cur.execute("SELECT set_config('app.current_org', %s, false)", [str(org.id)])
profile, _ = Profile.objects.get_or_create(user=user, org=org, defaults={"role": "ADMIN", "is_active": True})
raw, _pat = PersonalAccessToken.generate(profile=profile, name="replicator-tests", scopes=[])
jwt = None
try:
    from common.serializer import OrgAwareRefreshToken
    jwt = str(OrgAwareRefreshToken.for_user_and_org(user, org, profile).access_token)
except Exception as exc:  # the JWT is a convenience for webhook management only
    print(f"no JWT: {exc!r}", file=sys.stderr)
print(json.dumps({"org_id": str(org.id), "profile_id": str(profile.id), "token": raw, "jwt": jwt}))
"""


@dataclass
class BottleCrm:
    """A running BottleCRM; ``token`` is a PersonalAccessToken of an org ADMIN."""

    url: str
    token: str
    pid: int
    workdir: Path
    org_id: str
    jwt: str | None
    database: str
    log_path: Path
    admin_email: str
    admin_password: str
    cluster: PgCluster = field(repr=False)
    # Celery mode: the worker's and beat's PIDs, the broker, and the Redis started for it (if any).
    celery_pids: list[int] = field(default_factory=list)
    redis_url: str | None = None
    own_redis: Redis | None = field(default=None, repr=False)

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def alive(self) -> bool:
        return pid_alive(self.pid)

    @property
    def celery(self) -> bool:
        return bool(self.celery_pids)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the gunicorn master (it stops its workers), SIGKILL the group if it hangs;
        then Celery beat, the worker and the Redis started for them."""
        stop_pid(self.pid, timeout)
        for pid in reversed(self.celery_pids):
            stop_pid(pid, timeout)
        if self.own_redis is not None:
            self.own_redis.stop(timeout)

    def _admin_headers(self) -> dict[str, str]:
        if not self.jwt:
            raise RuntimeError(
                "BottleCRM gave no JWT at bootstrap (see its stderr); webhook management needs one, a token is refused"
            )
        return {"Authorization": f"Bearer {self.jwt}"}

    def create_webhook(self, url: str, events: list[str], *, description: str = "") -> tuple[str, str]:
        """Register a JSON webhook endpoint; returns (endpoint id, signing secret). The secret is shown once."""
        resp = httpx.post(
            f"{self.api}/webhooks/",
            json={"url": url, "events": events, "format": "json", "description": description},
            headers=self._admin_headers(),
            timeout=30,
        )
        if resp.status_code != 201:
            raise RuntimeError(f"POST /api/webhooks/ answered HTTP {resp.status_code}: {resp.text[:500]}")
        body = resp.json()
        return str(body["id"]), str(body["secret"])

    def delete_webhooks(self) -> int:
        """Delete every webhook endpoint (and its delivery log); the count deleted."""
        resp = httpx.get(f"{self.api}/webhooks/", headers=self._admin_headers(), timeout=30)
        resp.raise_for_status()
        ids = [str(e["id"]) for e in resp.json()["endpoints"]]
        for endpoint_id in ids:
            httpx.delete(f"{self.api}/webhooks/{endpoint_id}/", headers=self._admin_headers(), timeout=30)
        return len(ids)

    def deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        """The endpoint's delivery log, newest first: id, event, event_id, status (pending, succeeded,
        failed), attempts, response_status, error, next_attempt_at, payload ..."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            resp = httpx.get(
                f"{self.api}/webhooks/{endpoint_id}/deliveries/",
                params={"limit": 100, "offset": offset},
                headers=self._admin_headers(),
                timeout=30,
            )
            if resp.status_code != 200:
                raise RuntimeError(
                    f"GET /api/webhooks/{endpoint_id}/deliveries/ answered HTTP {resp.status_code}: {resp.text[:300]}"
                )
            page = resp.json()
            out.extend(page["results"])
            if not page.get("next"):
                return out
            offset += len(page["results"])

    def clear_data(self) -> None:
        """Delete every account, contact, opportunity, product and lead (and what hangs off them).

        Done in SQL as the cluster superuser: RLS does not apply to it, and it takes
        ~20 ms where deleting through the API takes seconds.
        """
        tables = ", ".join(f'"{t}"' for t in BUSINESS_TABLES)
        self.cluster.execute(f"TRUNCATE {tables} CASCADE", dbname=self.database)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


def _server_env(venv: Path, workdir: Path, cluster: PgCluster, db: str, role: str, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO"))}
    env.update(
        {
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(workdir),
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "SECRET_KEY": secrets.token_urlsafe(48),
            "ENV_TYPE": "dev",
            "DEBUG": "False",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DBNAME": db,
            "DBUSER": role,
            "DBPASSWORD": password,
            "DBHOST": cluster.host,
            "DBPORT": str(cluster.port),
            "CELERY_BROKER_URL": "memory://",
            "CELERY_RESULT_BACKEND": "cache+memory://",
        }
    )
    return env


def _write_settings(workdir: Path, redis_url: str | None = None) -> None:
    """Settings for eager Celery, or, with ``redis_url``, for a real worker on that broker."""
    (workdir / "media").mkdir(exist_ok=True)
    celery = _REDIS_CELERY.format(redis_url=redis_url) if redis_url else _EAGER_CELERY
    (workdir / f"{SETTINGS_MODULE}.py").write_text(
        _SETTINGS_PY.format(test_app=TEST_APP, media_root=str(workdir / "media"), celery=celery)
    )
    app = workdir / TEST_APP
    app.mkdir(exist_ok=True)
    (app / "__init__.py").write_text(f'default_app_config = "{TEST_APP}.apps.ReplicatorTestConfig"\n')
    (app / "apps.py").write_text(_TEST_APP_PY.format(test_app=TEST_APP, eager=redis_url is None))


_OWN_EVERYTHING_SQL = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') LOOP
    BEGIN
      EXECUTE format('ALTER %s public.%I OWNER TO %I',
        CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                       WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
        r.relname, '{role}');
    EXCEPTION WHEN feature_not_supported OR object_not_in_prerequisite_state THEN
      NULL;  -- a sequence owned by a column follows its table
    END;
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public' LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.sig, '{role}');
  END LOOP;
END $$;
"""


def _prepare_database(
    venv: Path,
    cluster: PgCluster,
    db: str,
    role: str,
    env: dict[str, str],
    workdir: Path,
    cache_dir: Path | None,
) -> None:
    """Restore the cached migrated dump, or migrate once and cache the dump.

    Dump and restore run as the cluster superuser: BottleCRM FORCEs row-level security
    on its tables, so its own role can neither COPY them out nor back in. The restored
    objects are then handed to the role, as if it had run the migrations itself.
    """
    bindir = pg_bin()
    dump = _version_dir(cache_dir) / "migrated.dump"
    conn = ["-h", cluster.host, "-p", str(cluster.port), "-U", cluster.user]

    def restore() -> None:
        _run(
            [str(bindir / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", *conn, "-d", db,
             str(dump)],
            "restore the cached BottleCRM database",
            env=env,
        )  # fmt: skip
        cluster.execute(_OWN_EVERYTHING_SQL.replace("{role}", role), dbname=db)

    if dump.exists():
        restore()
        return
    with file_lock(_version_dir(cache_dir) / "migrate.lock"):
        if dump.exists():  # another process migrated while we waited
            restore()
            return
        _run(
            [str(venv / "bin" / "django-admin"), "migrate", "--noinput"],
            "migrate BottleCRM",
            env=env,
            cwd=workdir,
        )
        tmp = dump.with_suffix(".tmp")
        _run(
            [str(bindir / "pg_dump"), "-Fc", *conn, "-f", str(tmp), db],
            "dump the migrated BottleCRM database",
            env=env,
        )
        tmp.replace(dump)


def start_bottlecrm(
    cluster: PgCluster,
    workdir: Path,
    *,
    workers: int = 2,
    cache_dir: Path | None = None,
    ready_timeout: float = 60.0,
    celery: bool = False,
    redis_url: str | None = None,
) -> BottleCrm:
    """Create a database in ``cluster``, bootstrap an admin and a token, serve on a free loopback port.

    ``celery=True`` also starts a Celery worker and Celery beat on ``redis_url`` (a Redis of
    its own, stopped with the server, when None); otherwise tasks run eagerly in the request.
    """
    if redis_url and not celery:
        raise ValueError("redis_url is the Celery broker: pass celery=True with it")
    venv = ensure_installed(cache_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    own_redis = start_redis(workdir / "redis") if celery and not redis_url else None
    try:
        return _start(venv, cluster, workdir, workers, cache_dir, ready_timeout, celery, redis_url, own_redis)
    except BaseException:
        if own_redis is not None:
            own_redis.stop()
        raise


def _start(
    venv: Path,
    cluster: PgCluster,
    workdir: Path,
    workers: int,
    cache_dir: Path | None,
    ready_timeout: float,
    celery: bool,
    redis_url: str | None,
    own_redis: Redis | None,
) -> BottleCrm:
    broker = (own_redis.url if own_redis else redis_url) if celery else None
    suffix = secrets.token_hex(4)
    db = role = f"bottlecrm_{suffix}"
    password = secrets.token_urlsafe(16)
    # Not a superuser and no BYPASSRLS: otherwise BottleCRM's row-level security is inert.
    cluster.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER NOBYPASSRLS NOCREATEDB")
    cluster.create_database(db, owner=role)
    _write_settings(workdir, broker)
    env = _server_env(venv, workdir, cluster, db, role, password)
    if broker:
        env["CELERY_BROKER_URL"] = env["CELERY_RESULT_BACKEND"] = broker
    env["PGPASSWORD"] = password
    _prepare_database(venv, cluster, db, role, env, workdir, cache_dir)

    admin_email, admin_password = "admin@replicator.test", secrets.token_urlsafe(12)
    boot = _run(
        [str(venv / "bin" / "python"), "-c", _BOOTSTRAP_PY, admin_email, admin_password],
        "bootstrap the BottleCRM admin, org and token",
        env=env,
        cwd=workdir,
    )
    ids = json.loads(boot.stdout.strip().splitlines()[-1])

    port = free_port()
    log_path = workdir / "bottlecrm.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(venv / "bin" / "gunicorn"),
                "crm.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                # Without it parallel gunicorns fight over one control socket path.
                "--no-control-socket",
                "--timeout",
                "120",
                "--access-logfile",
                "-",
                "--chdir",
                str(workdir),
            ],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    crm = BottleCrm(
        url=f"http://127.0.0.1:{port}",
        token=ids["token"],
        pid=proc.pid,
        workdir=workdir,
        org_id=ids["org_id"],
        jwt=ids["jwt"],
        database=db,
        log_path=log_path,
        admin_email=admin_email,
        admin_password=admin_password,
        cluster=cluster,
        redis_url=broker,
        own_redis=own_redis,
    )
    try:
        if broker:
            _start_celery(crm, venv, env, workdir, ready_timeout)
        _wait_ready(crm, proc, ready_timeout)
    except BaseException:
        crm.stop()
        raise
    return crm


def _start_celery(crm: BottleCrm, venv: Path, env: dict[str, str], workdir: Path, timeout: float) -> None:
    """A worker (waits until it is consuming) and beat, logging next to the server's log."""
    celery = str(venv / "bin" / "celery")
    worker_log = workdir / "celery-worker.log"
    name = f"replicator-{crm.database}@%h"
    worker = _spawn(
        [celery, "-A", CELERY_APP, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", name,
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env, workdir, worker_log,
    )  # fmt: skip
    crm.celery_pids.append(worker.pid)
    beat = _spawn(
        [celery, "-A", CELERY_APP, "beat", "--loglevel", "INFO",
         "--schedule", str(workdir / "celerybeat-schedule"), "--pidfile", str(workdir / "celerybeat.pid")],
        env, workdir, workdir / "celery-beat.log",
    )  # fmt: skip
    crm.celery_pids.append(beat.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for what, proc, log in (("worker", worker, worker_log), ("beat", beat, workdir / "celery-beat.log")):
            if proc.poll() is not None:
                raise RuntimeError(f"Celery {what} exited with {proc.returncode} at start; log {log}:\n{log_tail(log)}")
        # Logged once the worker consumes from the broker.
        if " ready." in worker_log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"the Celery worker was not ready within {timeout:.0f}s; log {worker_log}:\n{log_tail(worker_log)}"
    )


def _spawn(cmd: list[str], env: dict[str, str], workdir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def _wait_ready(crm: BottleCrm, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    headers = {"Authorization": f"Bearer {crm.token}"}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"BottleCRM (gunicorn) exited with {proc.returncode} during startup; log {crm.log_path}:\n"
                + crm.log_tail()
            )
        try:
            resp = httpx.get(f"{crm.api}/invoices/products/?limit=1", headers=headers, timeout=5)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}: {resp.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(
        f"BottleCRM did not answer within {timeout:.0f}s (last: {last}); log {crm.log_path}:\n" + crm.log_tail()
    )


def drop_database(crm: BottleCrm) -> None:
    """Drop the server's database and role (call after stop())."""
    with psycopg.connect(crm.cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{crm.database}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{crm.database}"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replicator.devstack.bottlecrm",
        description="Start PostgreSQL + a real BottleCRM, print url/token as JSON, run until SIGTERM.",
    )
    parser.add_argument("--workdir", type=Path, help="where the cluster, settings and logs go (default: a temp dir)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--install-only", action="store_true", help="install BottleCRM's virtualenv and exit")
    parser.add_argument(
        "--celery",
        action="store_true",
        help="run a Celery worker and beat on a Redis of its own (real webhook retries)",
    )
    args = parser.parse_args(argv)
    if args.install_only:
        print(ensure_installed())
        return 0
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="replicator-bottlecrm-"))
    cluster = start_cluster(workdir / "pg")
    crm = None
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        crm = start_bottlecrm(cluster, workdir / "crm", workers=args.workers, celery=args.celery)
        print(
            json.dumps(
                {
                    "url": crm.url,
                    "token": crm.token,
                    "jwt": crm.jwt,
                    "org_id": crm.org_id,
                    "pid": crm.pid,
                    "log": str(crm.log_path),
                    "postgres": cluster.url(crm.database),
                    "redis": crm.redis_url,
                }
            ),
            flush=True,
        )
        while not stopping:
            if not crm.alive():
                print(f"BottleCRM exited; log tail:\n{crm.log_tail()}", flush=True)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        if crm is not None:
            crm.stop()
        cluster.destroy()


if __name__ == "__main__":
    raise SystemExit(main())
