"""Several app replicas behind nginx (soae_app/replicas.py, `./lab serve`): the configuration, the
shared cookie secret, restarts, and — end to end with Debian's nginx and two real replicas —
per-browser affinity that spreads one address, and a replica killed in the middle of a burst:
sessions on the other replica go on, new and orphaned sessions go to the survivor.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from soae_app.headless import free_port
from soae_app.protocol import Session, answering_replica, first_visit
from soae_app.replicas import (
    AFFINITY_COOKIE,
    COOKIE_SECRET_ENV,
    REPLICA_HEADER,
    Deployment,
    find_nginx,
    main,
    make_replicas,
    nginx_config,
    restart_dead,
    spawn,
)

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="needs Debian nginx (./lab test installs it)")


def test_config_routes_by_affinity_cookie_and_upgrades_websockets(tmp_path):
    text = nginx_config(["127.0.0.1:9001", "127.0.0.1:9002"], "127.0.0.1", 8080, tmp_path)
    assert "hash $soae_affinity consistent;" in text and "ip_hash" not in text
    assert text.count("server 127.0.0.1:900") == 2
    assert f'"{AFFINITY_COOKIE}=$request_id; Path=/; HttpOnly; SameSite=Lax"' in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text and "proxy_set_header Host $http_host;" in text
    assert "client_max_body_size 12m;" in text and "listen 127.0.0.1:8080;" in text
    with pytest.raises(ValueError, match="at least one backend"):
        nginx_config([], "127.0.0.1", 8080, tmp_path)


@needs_nginx
def test_nginx_accepts_the_config(tmp_path):
    tmp_path.chmod(0o755)
    conf = tmp_path / "nginx.conf"
    user = "nobody nogroup" if os.geteuid() == 0 else None
    conf.write_text(nginx_config(["127.0.0.1:9001"], "127.0.0.1", free_port(), tmp_path, user))
    command = [str(find_nginx()), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")]
    check = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr


def test_every_replica_gets_the_same_cookie_secret_and_its_own_port(tmp_path):
    replicas = make_replicas(3, "s3cret", tmp_path, ["--runner.postScriptGC", "false"], base_env={"PATH": "/usr/bin"})
    assert {r.env[COOKIE_SECRET_ENV] for r in replicas} == {"s3cret"}
    assert len({r.port for r in replicas}) == 3
    assert all("s3cret" not in " ".join(r.command) for r in replicas)  # not visible in `ps`
    assert all(r.command[-2:] == ["--runner.postScriptGC", "false"] for r in replicas)
    with pytest.raises(ValueError, match="at least 1"):
        make_replicas(0, "s3cret", tmp_path)
    with pytest.raises(ValueError, match="cookie secret"):
        make_replicas(1, "", tmp_path)


@pytest.mark.parametrize(("argv", "message"), [
    (["--replicas", "0"], "at least 1"),
    (["--replicas", "-1", "--backend", "h:1"], "at least 1"),
    (["--port", "70000"], "--port must be in 1..65535"),
    (["--backend", "nohost"], "HOST:PORT"),
    (["--backend", "10.0.0.2:x"], "HOST:PORT"),
    (["--backend", "10.0.0.2:8501"], COOKIE_SECRET_ENV),
    (["--server.port", "9000"], "set per replica"),
    (["--server.address=0.0.0.0"], "set per replica"),
])
def test_bad_command_lines_are_refused_with_a_reason(argv, message, capsys, monkeypatch):
    monkeypatch.delenv(COOKIE_SECRET_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_streamlit_reads_the_cookie_secret_from_the_environment():
    code = "from streamlit import config; print(config.get_option('server.cookieSecret'))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, COOKIE_SECRET_ENV: "abc123"},
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "abc123"


def test_a_replica_that_exits_is_started_again(tmp_path):
    replicas = make_replicas(2, "x", tmp_path)
    for replica in replicas:  # stand-ins for streamlit: the supervisor only looks at the process
        replica.command = [sys.executable, "-c", "import time; time.sleep(60)"]
        replica.start()
    try:
        victim, other = replicas
        old_pid, other_pid = victim.process.pid, other.process.pid
        assert restart_dead(replicas) == []
        victim.process.kill()
        victim.process.wait()
        assert restart_dead(replicas) == [victim]
        assert victim.alive() and victim.process.pid != old_pid and victim.restarts == 1
        assert other.process.pid == other_pid and other.restarts == 0
    finally:
        for replica in replicas:
            replica.stop()


# ---- end to end: `python -m soae_app.replicas` (what `./lab serve` runs) with two replicas ----

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    deployment = spawn(2, tmp_path_factory.mktemp("serve"))
    try:
        yield deployment
    finally:
        deployment.stop()
    for replica in deployment.replicas:  # the supervisor stopped every replica it started
        stat = Path(f"/proc/{replica['pid']}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"


def _get(url: str, cookie: str | None = None) -> tuple[int, str | None, list[str]]:
    """(status, the replica that answered, Set-Cookie values) of a GET through the proxy."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        replica = answering_replica(response.headers.get(REPLICA_HEADER))
        return response.status, replica, response.headers.get_all("Set-Cookie") or []


@needs_nginx
@pytest.mark.slow
def test_browsers_behind_one_address_spread_and_each_sticks_to_its_replica(cluster):
    addresses = {r["address"] for r in cluster.replicas}
    visits = [first_visit(cluster.url) for _ in range(40)]  # 40 browsers, all from 127.0.0.1 (one NAT)
    counts = Counter(replica for _, replica in visits)
    # ip_hash would put all 40 on one replica; random ids give each about 20 (fewer than 5 has odds
    # of 3e-5 even on a ring split 60/40)
    assert set(counts) == addresses and min(counts.values()) >= 5, counts
    assert len({cookie for cookie, _ in visits}) == 40
    for cookie, replica in visits[:8]:
        for path in ("/", "/_stcore/health", "/krylov-inspector", "/_stcore/host-config"):
            status, answered, set_cookies = _get(cluster.url + path, cookie)
            assert status == 200 and answered == replica, (path, answered, replica)
            assert not any(c.startswith(AFFINITY_COOKIE) for c in set_cookies)  # the cookie is kept, not renewed


# The Attack Lab with light settings (one SOAE iteration, FGSM beside it): the test is about the
# replicas, not the attacks, and must stay short.
LIGHT = {"N": "1", "cmp": "FGSM"}


async def _run_until(session: Session, stop: asyncio.Event, runs: list, query: dict) -> BaseException | None:
    """Rerun the Attack Lab until ``stop`` is set, appending (finish time, PageRun); returns the error that ended it."""
    try:
        while not stop.is_set():
            result = await session.run("", query)
            runs.append((time.monotonic(), result))
        return None
    except ConnectionClosed as error:
        return error


async def _burst_with_a_failure(cluster: Deployment) -> None:
    addresses = [r["address"] for r in cluster.replicas]
    victim = cluster.replicas[0]
    survivor = addresses[1]
    # Two students on each replica (first visits until both have two).
    students: dict[str, list[str]] = {a: [] for a in addresses}
    for _ in range(200):
        if all(len(cookies) >= 2 for cookies in students.values()):
            break
        cookie, replica = first_visit(cluster.url)
        if len(students[replica]) < 2:
            students[replica].append(cookie)
    sessions = {a: [await Session(cluster.url, timeout_s=240, cookie=c).open() for c in cookies]
                for a, cookies in students.items()}
    for address, group in sessions.items():
        assert [s.replica for s in group] == [address] * 2  # the websocket follows the page's replica
    stop = asyncio.Event()
    runs = {id(s): [] for group in sessions.values() for s in group}
    classes = ["T-shirt/top", "Trouser"]
    tasks = {id(s): asyncio.create_task(_run_until(s, stop, runs[id(s)], {"cls": classes[k], **LIGHT}))
             for group in sessions.values() for k, s in enumerate(group)}

    async def wait_for(condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            failed = [t.result() for t in tasks.values() if t.done() and t.result() is not None]
            assert time.monotonic() < deadline, f"timed out waiting for {what}; ended: {failed}"
            await asyncio.sleep(0.05)

    await wait_for(lambda: all(runs[k] for k in runs), 240, "every student's first run")
    os.kill(victim["pid"], signal.SIGKILL)  # in the middle of the burst: every session is rerunning
    killed_at = time.monotonic()
    on_survivor = [id(s) for s in sessions[survivor]]
    await wait_for(lambda: all(sum(t > killed_at for t, _ in runs[k]) >= 2 for k in on_survivor), 120,
                   "two runs after the kill on the surviving replica")
    for session in sessions[victim["address"]]:  # the victim's sessions were cut, not left hanging
        assert isinstance(await asyncio.wait_for(tasks[id(session)], 30), ConnectionClosed)
    stop.set()
    for key in on_survivor:
        assert await asyncio.wait_for(tasks[key], 240) is None
        assert all(result.clean for _, result in runs[key]), [r for _, r in runs[key]]
    # New students, and the victim's students reconnecting with their cookie, all reach the survivor.
    newcomers = [first_visit(cluster.url) for _ in range(6)]
    assert [replica for _, replica in newcomers] == [survivor] * 6
    orphans = [first_visit(cluster.url, cookie) for cookie in students[victim["address"]]]
    assert [replica for _, replica in orphans] == [survivor] * 2
    for cookie, _ in newcomers[:2] + orphans:
        session = await Session(cluster.url, timeout_s=240, cookie=cookie).open()
        assert session.replica == survivor
        result = await session.run("", LIGHT)
        assert result.clean, result
        await session.close()
    for session in sessions[survivor]:
        assert (await session.run("", LIGHT)).clean  # the survivor's sessions are still open
        await session.close()


@needs_nginx
@pytest.mark.slow
def test_killing_a_replica_mid_burst_keeps_the_others_and_moves_new_sessions(cluster):
    asyncio.run(_burst_with_a_failure(cluster))
    assert cluster.process.poll() is None  # the proxy and the supervisor are still up
    for _ in range(10):  # also after nginx's fail_timeout, when it tries the dead replica once more
        status, answered, _ = _get(cluster.url + "/_stcore/health")
        assert status == 200 and answered == cluster.replicas[1]["address"]
