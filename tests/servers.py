"""Real servers and worker processes for the scaling tests.

A PostgreSQL server (initdb in a temp dir, 127.0.0.1 on a free port, no Unix socket) and an
`mlflow server`; helpers to start `python -m harness.search` workers in their own process
groups and to kill those groups. Everything binds 127.0.0.1 only, and everything started here
is stopped by its owner (a fixture finalizer or a `finally`).
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """Where initdb and postgres live: Debian's versioned folder, else the PATH."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "postgres").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user() -> dict:
    """PostgreSQL refuses to run as root: run it as the `postgres` account then."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam(PG_SUPERUSER)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def stop_group(process: subprocess.Popen, first: int = signal.SIGTERM, wait_s: float = 10) -> None:
    """Signal a process started with start_new_session=True and all its children; SIGKILL
    whatever is still there after `wait_s`."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, first)
        except ProcessLookupError:
            pass
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers in the group, if any
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(wait_s)


@dataclass
class PostgresServer:
    folder: Path
    port: int
    process: subprocess.Popen
    log: Path

    def url(self, database: str) -> str:
        return f"postgresql://{PG_SUPERUSER}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(
            host=HOST, port=self.port, user=PG_SUPERUSER, dbname="postgres"
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def stop(self) -> None:
        # SIGQUIT is PostgreSQL's "immediate shutdown": a throwaway database needs no checkpoint
        stop_group(self.process, signal.SIGQUIT)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(bin_dir: Path, settings: dict[str, object] | None = None) -> PostgresServer:
    """A throwaway server; `settings` are more `-c name=value` (e.g. max_connections)."""
    # not under pytest's tmp_path: its parents are 0700 root, closed to the postgres account
    folder = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    run_as = _as_server_user()
    if run_as:
        os.chown(folder, run_as["user"], run_as["group"])
    data, log = folder / "data", folder / "postgres.log"
    try:
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", PG_SUPERUSER, "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions", "--locale=C"],
            check=True, capture_output=True, text=True, cwd=folder, **run_as,
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {error.stderr.strip()}") from None
    port = free_port()
    with open(log, "w") as log_file:
        if run_as:
            os.chown(log, run_as["user"], run_as["group"])
        process = subprocess.Popen(
            [bin_dir / "postgres", "-D", data, "-p", str(port), "-c", f"listen_addresses={HOST}",
             "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "full_page_writes=off",
             "-c", "synchronous_commit=off",
             *(f"-c{name}={value}" for name, value in (settings or {}).items())],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
            **run_as,
        )  # fmt: skip
    server = PostgresServer(folder, port, process, log)
    try:
        _wait_for(lambda: _accepts(port), process, "postgres", log, timeout_s=60)
    except BaseException:
        server.stop()
        raise
    return server


def _accepts(port: int) -> bool:
    import psycopg2

    try:
        psycopg2.connect(host=HOST, port=port, user=PG_SUPERUSER, dbname="postgres").close()
        return True
    except psycopg2.OperationalError:
        return False


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_group(self.process, signal.SIGTERM)


def start_mlflow_server(backend_store_uri: str, folder: Path) -> MlflowServer:
    """`mlflow server` on a free 127.0.0.1 port, artifacts proxied to `folder/artifacts`."""
    port = free_port()
    log = folder / "mlflow-server.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port),
             "--workers", "1", "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(folder / "artifacts")],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
        )  # fmt: skip
    server = MlflowServer(f"http://{HOST}:{port}", process, log)
    try:
        _wait_for(lambda: _healthy(server.url), process, "mlflow server", log, timeout_s=120)
    except BaseException:
        server.stop()
        raise
    return server


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_for(ready, process: subprocess.Popen, what: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s}s:\n{log.read_text()}")
        time.sleep(0.2)


@dataclass
class Worker:
    """One `python -m harness.search` process in its own process group."""

    process: subprocess.Popen
    out: Path
    argv: list[str] = field(default_factory=list)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            stop_group(self.process)
            raise AssertionError(
                f"worker still running after {timeout_s}s:\n{self.output()}"
            ) from None

    def output(self) -> str:
        return self.out.read_text()

    def kill(self) -> None:
        stop_group(self.process, signal.SIGKILL)


def worker_env() -> dict[str, str]:
    # one torch thread per worker: several workers share the cores instead of fighting over them
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_worker(
    argv: list[str], folder: Path, name: str, module: str = "harness.search"
) -> Worker:
    out = folder / f"{name}.log"
    with open(out, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=folder, env=worker_env(),
            start_new_session=True, preexec_fn=_default_sigint,
        )  # fmt: skip
    return Worker(process, out, argv)


def _default_sigint() -> None:
    # a shell starts background jobs with SIGINT ignored and children inherit that: the Ctrl-C
    # test must not depend on how the test run itself was started
    signal.signal(signal.SIGINT, signal.SIG_DFL)
