"""Several app replicas behind nginx: ``./lab serve --replicas K``.

One command starts K ``streamlit run app.py`` processes on 127.0.0.1 (free ports, the same
``server.cookieSecret`` for all, as Streamlit's deployment docs require for replicas), waits until
each answers ``/_stcore/health``, then runs Debian's nginx in the foreground as the one public
address (``--address``:``--port``, default 0.0.0.0:8501, the port ``./lab app`` uses). A replica
that exits is started again on its port (``--no-restart`` switches that off). Ctrl-C (or SIGTERM)
stops nginx and every replica.

Session affinity. A Streamlit session is one websocket (``/_stcore/stream``), and everything else
a browser tab asks for belongs to the replica that holds it: uploads (``/_stcore/upload_file/<session>``),
images and downloads (``/media/…``, kept in that process's memory). So all requests of a browser
must reach one replica. nginx without its commercial ``sticky`` module offers ``ip_hash`` — but a
class behind one NAT (one lecture-hall Wi-Fi) has one address and would all land on one replica.
Instead nginx gives every browser without our cookie a random one (its ``$request_id``: 128 random
bits) and routes by ``hash $soae_affinity consistent`` over that value: the first request is
hashed on the fresh id and the response sets the same id as the cookie, so the page, its scripts,
the websocket and later requests of that browser all land on the same replica, while different
browsers spread evenly whatever their address. When a replica is down, consistent hashing sends
its browsers to the next replica on the ring (the same one for all requests of a browser);
everybody else keeps their replica. Limits: affinity is per browser (all tabs of a browser share a
replica), needs cookies, and the spread is random (30 students over 2 replicas: 15 ± 3 each).

Run: ``.venv/bin/python -m soae_app.replicas --replicas 2 [--port 8501] [streamlit options…]``.
Unknown options go to every replica's ``streamlit run`` (e.g. ``--runner.postScriptGC false``).
``--backend HOST:PORT`` (repeatable) adds replicas started elsewhere (other machines, with the same
``STREAMLIT_SERVER_COOKIE_SECRET``) to the proxy; only local replicas are supervised.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from soae_app.headless import ROOT, free_port, wait_until_healthy

AFFINITY_COOKIE = "soae_replica"
# Response header naming the replica that answered (for people debugging the setup, and for tests).
REPLICA_HEADER = "X-Soae-Replica"
# Streamlit reads any option from STREAMLIT_<SECTION>_<OPTION>; an environment variable keeps the
# secret out of `ps` (a command-line flag would show it to every user of the machine).
COOKIE_SECRET_ENV = "STREAMLIT_SERVER_COOKIE_SECRET"
# Seconds nginx avoids a replica after a failed connection (then tries it again, once).
FAIL_TIMEOUT_S = 10


def nginx_config(backends: Sequence[str], address: str, port: int, run_dir: Path, user: str | None = None) -> str:
    """The nginx.conf text for a proxy on address:port in front of ``backends`` ("host:port").

    Runs in the foreground with every file (pid, logs, temporary files) under ``run_dir``; ``user``
    names the worker processes' user when nginx is started as root.
    """
    if not backends:
        raise ValueError("nginx_config needs at least one backend (host:port); got none")
    servers = "\n".join(f"        server {backend} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;" for backend in backends)
    temp_paths = "\n".join(f"    {kind}_temp_path {run_dir / (kind + '_temp')};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# Written by soae_app/replicas.py (./lab serve); see that file's docstring.
{f"user {user};" if user else ""}
daemon off;
worker_processes 1;
pid {run_dir / "nginx.pid"};
error_log {run_dir / "nginx-error.log"} warn;

events {{
    worker_connections 4096;
}}

http {{
{temp_paths}
    log_format replicas '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                        'replica=$upstream_addr affinity=$soae_affinity time=$request_time';
    access_log {run_dir / "nginx-access.log"} replicas;
    # Streamlit's server.maxUploadSize is 10 MB here (.streamlit/config.toml); nginx's default is 1 MB.
    client_max_body_size 12m;

    # Affinity key: the browser's cookie, or for a browser without one a fresh random id ...
    map $cookie_{AFFINITY_COOKIE} $soae_affinity {{
        ""      $request_id;
        default $cookie_{AFFINITY_COOKIE};
    }}
    # ... which the response then sets as its cookie (an empty value adds no header).
    map $cookie_{AFFINITY_COOKIE} $soae_set_cookie {{
        ""      "{AFFINITY_COOKIE}=$request_id; Path=/; HttpOnly; SameSite=Lax";
        default "";
    }}
    # Websocket upgrade for /_stcore/stream; plain requests close the upstream connection.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ""      close;
    }}

    upstream soae_replicas {{
        hash $soae_affinity consistent;
{servers}
    }}

    server {{
        listen {address}:{port};
        location / {{
            proxy_pass http://soae_replicas;
            proxy_http_version 1.1;
            # $http_host keeps the port: Streamlit accepts a websocket whose Origin equals its Host.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            # A session's websocket stays open for a whole lecture.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            # A dead replica refuses at once; the request then goes to the next one on the ring.
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            add_header Set-Cookie $soae_set_cookie always;
            # Which replica answered (127.0.0.1:port; after a retry the last one of a list).
            add_header {REPLICA_HEADER} $upstream_addr always;
        }}
    }}
}}
"""


def find_nginx() -> Path:
    """The nginx executable (PATH, then /usr/sbin); FileNotFoundError naming the Debian package."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if found is None:
        raise FileNotFoundError("nginx is not installed: `./lab serve` installs Debian's `nginx` "
                                "(or run `apt-get install nginx`)")
    return Path(found)


@dataclass
class Replica:
    """One ``streamlit run app.py`` on 127.0.0.1:port; ``restarts`` counts how often it was started again."""

    port: int
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    _log: IO | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process (output appended to ``log_path``)."""
        if self._log is None:
            self._log = self.log_path.open("a")
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 20) -> None:
        """Terminate the process (kill it after ``timeout_s``) and close its log."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def make_replicas(count: int, cookie_secret: str, run_dir: Path, streamlit_args: Sequence[str] = (),
                  base_env: dict[str, str] | None = None) -> list[Replica]:
    """``count`` replicas on free ports of 127.0.0.1, all with ``cookie_secret`` (not started)."""
    if count < 1:
        raise ValueError(f"the number of replicas must be at least 1; got {count}")
    if not cookie_secret:
        raise ValueError("the cookie secret must not be empty (every replica needs the same one)")
    env = dict(os.environ if base_env is None else base_env)
    env[COOKIE_SECRET_ENV] = cookie_secret
    replicas = []
    for index in range(count):
        port = free_port()
        while any(r.port == port for r in replicas):
            port = free_port()
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                   "--server.address", "127.0.0.1", "--server.headless", "true", *streamlit_args]
        replicas.append(Replica(port, command, env, run_dir / f"replica-{index}.log"))
    return replicas


def restart_dead(replicas: Sequence[Replica]) -> list[Replica]:
    """Start again every replica whose process has exited; returns those restarted."""
    restarted = []
    for replica in replicas:
        if replica.process is not None and not replica.alive():
            replica.restarts += 1
            replica.start()
            restarted.append(replica)
    return restarted


def write_state(run_dir: Path, proxy_url: str, replicas: Sequence[Replica]) -> None:
    """run_dir/replicas.json: the proxy's URL and each replica's address, pid and restarts (for tools and tests)."""
    state = {"proxy": proxy_url, "replicas": [{"address": r.address, "pid": r.process.pid if r.process else None,
                                               "restarts": r.restarts} for r in replicas]}
    tmp = run_dir / "replicas.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(run_dir / "replicas.json")


def _worker_user() -> str | None:
    """Debian's unprivileged user for nginx workers when we run as root (None otherwise)."""
    return "nobody nogroup" if os.geteuid() == 0 else None


def serve(count: int, address: str, port: int, run_dir: Path, restart: bool, streamlit_args: Sequence[str],
          backends: Sequence[str] = (), health_timeout_s: float = 300) -> int:
    """Start ``count`` local replicas and nginx in front of them and of ``backends`` (replicas started
    elsewhere, "host:port"), and supervise the local ones until a signal or nginx exits; returns the exit code."""
    nginx = find_nginx()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)  # nginx's workers (an unprivileged user under root) create their temp dirs here
    cookie_secret = os.environ.get(COOKIE_SECRET_ENV) or secrets.token_hex(32)
    replicas = make_replicas(count, cookie_secret, run_dir, streamlit_args) if count else []
    conf = run_dir / "nginx.conf"
    upstreams = [r.address for r in replicas] + list(backends)
    conf.write_text(nginx_config(upstreams, address, port, run_dir, _worker_user()))
    proxy: subprocess.Popen | None = None

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proxy_url = f"http://{'127.0.0.1' if address in ('0.0.0.0', '::') else address}:{port}"
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            wait_until_healthy(f"http://{replica.address}", replica.process, timeout_s=health_timeout_s)
        proxy = subprocess.Popen([str(nginx), "-p", str(run_dir), "-c", str(conf), "-e",
                                  str(run_dir / "nginx-error.log")], start_new_session=True)
        try:
            wait_until_healthy(proxy_url, proxy, timeout_s=30)
        except (RuntimeError, TimeoutError) as error:
            log = (run_dir / "nginx-error.log").read_text() if (run_dir / "nginx-error.log").exists() else ""
            raise RuntimeError(f"the proxy did not answer /_stcore/health ({error}; no replica up?); nginx's "
                               f"error log: {log.strip()[-2000:]}") from None
        write_state(run_dir, proxy_url, replicas)
        public = socket.gethostname() if address in ("0.0.0.0", "::") else address
        print(f"SOAE Lab: {len(upstreams)} replica(s) {', '.join(upstreams)} behind nginx at "
              f"http://{public}:{port} (logs and state in {run_dir})", flush=True)
        while True:
            if proxy.poll() is not None:
                print(f"nginx exited with code {proxy.returncode}; see {run_dir / 'nginx-error.log'}", file=sys.stderr)
                return 1
            if restart:
                for replica in restart_dead(replicas):
                    print(f"replica {replica.address} exited; started again (restart {replica.restarts})", flush=True)
                    write_state(run_dir, proxy_url, replicas)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proxy is not None and proxy.poll() is None:
            proxy.send_signal(signal.SIGQUIT)  # nginx's graceful shutdown
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()
        for replica in replicas:  # all at once, then wait for each
            if replica.alive():
                replica.process.terminate()
        for replica in replicas:
            replica.stop()


@dataclass
class Deployment:
    """A running ``python -m soae_app.replicas`` (see :func:`spawn`): the proxy's URL, each replica's
    address and pid as first started, the supervisor process and its folder."""

    url: str
    replicas: list[dict]
    process: subprocess.Popen
    run_dir: Path

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM the supervisor (it stops nginx and the replicas) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout_s)


def spawn(count: int, run_dir: Path, streamlit_args: Sequence[str] = (), restart: bool = False,
          timeout_s: float = 300) -> Deployment:
    """Run ``python -m soae_app.replicas`` (what ``./lab serve`` runs) on 127.0.0.1 and a free port in
    the background, output to run_dir/serve.log; returns once it is serving (for tests and benchmarks).
    RuntimeError with the log if it exits or is not up within ``timeout_s``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "soae_app.replicas", "--replicas", str(count), "--address", "127.0.0.1",
               "--port", str(free_port()), "--run-dir", str(run_dir), *([] if restart else ["--no-restart"]),
               *streamlit_args]
    with (run_dir / "serve.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    state_file = run_dir / "replicas.json"
    deadline = time.monotonic() + timeout_s
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.terminate()
                process.wait()
            raise RuntimeError(f"`soae_app.replicas` did not come up: {(run_dir / 'serve.log').read_text()}")
        time.sleep(0.2)
    state = json.loads(state_file.read_text())
    return Deployment(state["proxy"], state["replicas"], process, run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./lab serve", description="Run K replicas of the app behind nginx with per-browser session affinity.",
        epilog="Other options are passed to every replica's `streamlit run app.py`.")
    parser.add_argument("--replicas", type=int, default=2, help="number of streamlit processes (default 2)")
    parser.add_argument("--address", default="0.0.0.0", help="the proxy's listening address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8501, help="the proxy's port (default 8501)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="folder for nginx.conf, logs and replicas.json (default: a new folder in /tmp)")
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="do not start a replica again when it exits")
    parser.add_argument("--backend", action="append", default=[], metavar="HOST:PORT",
                        help="also send sessions to a replica started elsewhere, e.g. on another machine with "
                             f"`{COOKIE_SECRET_ENV}=<the same secret> ./lab app --server.address 0.0.0.0` "
                             "(repeatable; --replicas 0 for remote replicas only)")
    args, streamlit_args = parser.parse_known_args(argv)
    if args.replicas < 0 or args.replicas + len(args.backend) < 1:
        parser.error(f"--replicas must be at least 1 (or 0 with --backend); got {args.replicas}")
    for backend in args.backend:
        host, _, backend_port = backend.rpartition(":")
        if not host or not backend_port.isdigit() or not 1 <= int(backend_port) <= 65535:
            parser.error(f"--backend must be HOST:PORT with a port in 1..65535; got {backend!r}")
    owned = [a for a in streamlit_args if a.split("=")[0] in ("--server.port", "--server.address")]
    if owned:
        parser.error(f"{owned[0].split('=')[0]} is set per replica by ./lab serve; "
                     "--port and --address set the proxy's")
    if args.backend and COOKIE_SECRET_ENV not in os.environ:
        parser.error(f"--backend needs {COOKIE_SECRET_ENV} set (the same secret as on the remote replicas)")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535; got {args.port}")
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="soae-serve-"))
    try:
        return serve(args.replicas, args.address, args.port, run_dir, args.restart, streamlit_args, args.backend)
    except (FileNotFoundError, TimeoutError, RuntimeError) as error:
        print(f"./lab serve: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
