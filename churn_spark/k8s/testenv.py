"""A real Kubernetes control plane on this machine, for proving the manifests: etcd + kube-apiserver + kubectl.

Debian's etcd (3.4) and kubectl (1.20) are too old to pair with a current API server, so the three binaries
are built from the Go module proxy, once, into ``~/.cache/churn-spark/k8s/<version>/`` (built in a temporary
folder beside it, then renamed: a half-finished build is never taken for a finished one):

- kube-apiserver and kubectl: a wrapper module requiring ``k8s.io/kubernetes`` at one release, every
  ``k8s.io/*`` staging module (read from that release's own go.mod) replaced by the matching published
  ``v0.x`` version; version strings set by ``-ldflags -X`` as the project's release build does.
- etcd: a wrapper module requiring ``go.etcd.io/etcd/server/v3`` (whose root package is etcd's main),
  its sibling modules pinned to the same release.

`start_control_plane` runs them on 127.0.0.1 free ports with a generated CA and serving certificate
(openssl), a static admin token, service-account signing keys and RBAC authorization, waits for /readyz,
writes a kubeconfig, and `ControlPlane.stop` ends exactly the two process groups it started.

    python -m churn_spark.k8s.testenv build   # build or reuse; prints the folder
    python -m churn_spark.k8s.testenv up      # start, print the KUBECONFIG path, run until Ctrl-C
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from churn_spark.errors import EnvironmentProblem
from churn_spark.k8s.manifests import cache_dir
from churn_spark.processes import run_until_interrupted

log = logging.getLogger("churn_spark")

KUBERNETES_VERSION = "v1.37.2"
STAGING_VERSION = "v0.37.2"  # the k8s.io/* staging modules are published as v0.<minor>.<patch>
ETCD_VERSION = "v3.7.3"
ETCD_SIBLINGS = ("go.etcd.io/etcd/api/v3", "go.etcd.io/etcd/client/pkg/v3", "go.etcd.io/etcd/client/v3",
                 "go.etcd.io/etcd/pkg/v3")  # etcd server's go.mod replaces these with ../ paths
BINARIES = ("etcd", "kube-apiserver", "kubectl")
BUILD_TIMEOUT = 1800
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)


def bin_dir() -> Path:
    """Where the built binaries live: one folder per (Kubernetes, etcd) release pair."""
    return cache_dir() / "k8s" / f"{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"


def binaries_ready(folder: Path | None = None) -> bool:
    folder = folder or bin_dir()
    return all((folder / name).is_file() for name in BINARIES)


def _go_env() -> dict[str, str]:
    # the machine's own Go, modules resolved from go.mod (no vendor folder), no VCS stamping of a temp folder
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod -buildvcs=false"}


def _go(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(["go", *args], cwd=cwd, env=_go_env(), capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:] or ["no output"]
        raise EnvironmentProblem(f"go {' '.join(args[:3])} failed in {cwd.name}: {' | '.join(tail)}")
    return proc.stdout


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The k8s.io modules that k8s.io/kubernetes's go.mod replaces with its ./staging folders."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def wrapper_go_mod(module: str, require: str, version: str, replaced: list[str] | tuple[str, ...],
                   replaced_version: str) -> str:
    """go.mod text of a module that only requires `require` and pins each `replaced` module to one release."""
    lines = [f"module {module}", "", "go 1.26.0", "", f"require {require} {version}", "", "replace ("]
    lines += [f"\t{m} => {m} {replaced_version}" for m in replaced]
    return "\n".join([*lines, ")", ""])


def version_ldflags() -> str:
    """What Kubernetes' release build stamps (hack/lib/version.sh), for both packages that report it."""
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    values = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean",
              "gitCommit": ""}  # no git checkout to name (the default is an unexpanded "$Format:%H$")
    pkgs = ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
    return " ".join(["-s", "-w", *(f"-X {p}.{k}={v}" for p in pkgs for k, v in values.items())])


def _build_kubernetes(work: Path, out: Path) -> None:
    mod = work / "kubernetes"
    mod.mkdir()
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], work))
    staging = staging_modules(Path(info["GoMod"]).read_text())
    if not staging:
        raise EnvironmentProblem(f"k8s.io/kubernetes {KUBERNETES_VERSION}'s go.mod names no staging modules")
    (mod / "go.mod").write_text(wrapper_go_mod("churn-spark.local/k8s-testenv", "k8s.io/kubernetes",
                                               KUBERNETES_VERSION, staging, STAGING_VERSION))
    cmds = [f"k8s.io/kubernetes/cmd/{name}" for name in ("kube-apiserver", "kubectl")]
    _go(["get", "-tool", *(f"{c}@{KUBERNETES_VERSION}" for c in cmds)], mod)  # pinned: no @latest drift
    _go(["build", "-trimpath", "-ldflags", version_ldflags(), "-o", f"{out}{os.sep}", *cmds], mod)


def _build_etcd(work: Path, out: Path) -> None:
    mod = work / "etcd"
    mod.mkdir()
    (mod / "go.mod").write_text(wrapper_go_mod("churn-spark.local/etcd-testenv", "go.etcd.io/etcd/server/v3",
                                               ETCD_VERSION, ETCD_SIBLINGS, ETCD_VERSION))
    _go(["get", "-tool", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], mod)
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"], mod)


def ensure_binaries() -> Path:
    """The folder holding etcd, kube-apiserver and kubectl: reused when complete, else built once (under a
    file lock, so two test sessions never build twice) into a temporary folder that is renamed into place."""
    target = bin_dir()
    if binaries_ready(target):
        return target
    if shutil.which("go") is None:
        raise EnvironmentProblem(f"Go is not installed: etcd, kube-apiserver and kubectl {KUBERNETES_VERSION} "
                                 "are built from the Go module proxy")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binaries_ready(target):
            return target
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            out = work / "bin"
            out.mkdir()
            started = time.monotonic()
            _build_etcd(work, out)
            etcd_s = time.monotonic() - started
            _build_kubernetes(work, out)
            record = {"kubernetes": KUBERNETES_VERSION, "etcd": ETCD_VERSION, "etcd_build_s": round(etcd_s, 1),
                      "kubernetes_build_s": round(time.monotonic() - started - etcd_s, 1),
                      "go": _go(["env", "GOVERSION"], work).strip(),
                      "bytes": {name: (out / name).stat().st_size for name in BINARIES}}
            (out / "BUILD.json").write_text(json.dumps(record, indent=2) + "\n")
            shutil.rmtree(target, ignore_errors=True)
            out.rename(target)
            log.info("k8s: built %s in %.0f s", ", ".join(BINARIES), time.monotonic() - started)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _openssl(args: list[str], cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise EnvironmentProblem("openssl not found: it makes the test API server's certificates")
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")


def make_pki(pki: Path) -> None:
    """A throwaway CA, a serving certificate for 127.0.0.1/localhost signed by it, and the service-account
    signing key pair (tokens the API server issues are signed with it)."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
              "-subj", "/CN=churn-spark-test-ca"], pki)
    _openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
              "-subj", "/CN=kube-apiserver"], pki)
    (pki / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
                                    "extendedKeyUsage=serverAuth\n")
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
              "-out", "server.crt", "-days", "2", "-extfile", "server.ext"], pki)
    _openssl(["genrsa", "-out", "sa.key", "2048"], pki)
    _openssl(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], pki)


def kubeconfig_text(server: str, ca_file: Path, token: str) -> str:
    """A kubeconfig with one cluster, one token user and one current context (JSON is valid YAML)."""
    cluster = {"server": server, "certificate-authority": str(ca_file)}
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "churn-spark-test",
        "clusters": [{"name": "churn-spark-test", "cluster": cluster}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "churn-spark-test", "context": {"cluster": "churn-spark-test", "user": "admin"}}],
    }, indent=2) + "\n"


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver; `kubectl(...)` talks to it as the admin (group system:masters)."""

    workdir: Path
    bin: Path
    server: str
    kubeconfig: Path
    token: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    owns_workdir: bool = True

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server; the caller reads returncode/stdout/stderr."""
        return subprocess.run([str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM each process group this started (API server first), SIGKILL what is left after 15 s."""
        for proc in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        self.processes.clear()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(cp: ControlPlane, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    with open(cp.workdir / f"{name}.log", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # own process group: stop() ends it and nothing else
    cp.processes.append(proc)
    return proc


def _wait(cp: ControlPlane, name: str, url: str, deadline: float, context: ssl.SSLContext | None = None,
          headers: dict[str, str] | None = None) -> None:
    proc = cp.processes[-1]
    while True:
        if proc.poll() is not None:
            raise EnvironmentProblem(f"{name} exited with {proc.returncode}: {cp.log_tail(name, 5)}")
        with contextlib.suppress(OSError):
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5, context=context) as resp:
                if resp.status == 200:
                    return
        if time.monotonic() > deadline:
            raise EnvironmentProblem(f"{name} not ready at {url} in time: {cp.log_tail(name, 5)}")
        time.sleep(0.5)


def _etcd_argv(cp: ControlPlane, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [str(cp.bin / "etcd"), "--name=test", f"--data-dir={cp.workdir / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}", "--initial-cluster-state=new",
            "--unsafe-no-fsync", "--log-level=warn"]  # a throwaway store: no fsync per write


def _apiserver_argv(cp: ControlPlane, port: int, etcd_port: int) -> list[str]:
    pki = cp.workdir / "pki"
    return [str(cp.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            "--endpoint-reconciler-type=none",  # a loopback advertise address cannot go into the endpoints
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--token-auth-file={cp.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",  # only allocates Service IPs: no traffic goes there
            "--profiling=false", "--v=0"]


def start_control_plane(workdir: str | Path | None = None, timeout: float = 120) -> ControlPlane:
    """Build or reuse the binaries, start etcd and kube-apiserver on loopback, wait for /readyz."""
    binaries = ensure_binaries()
    owns = workdir is None
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="churn-k8s-"))
    work.mkdir(parents=True, exist_ok=True)
    make_pki(work / "pki")
    token = os.urandom(16).hex()
    (work / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')
    port = free_port()
    cp = ControlPlane(workdir=work, bin=binaries, server=f"https://127.0.0.1:{port}",
                      kubeconfig=work / "kubeconfig", token=token, owns_workdir=owns)
    cp.kubeconfig.write_text(kubeconfig_text(cp.server, work / "pki" / "ca.crt", token))
    deadline = time.monotonic() + timeout
    try:
        etcd_port, peer_port = free_port(), free_port()
        _spawn(cp, "etcd", _etcd_argv(cp, etcd_port, peer_port))
        _wait(cp, "etcd", f"http://127.0.0.1:{etcd_port}/health", deadline)
        _spawn(cp, "kube-apiserver", _apiserver_argv(cp, port, etcd_port))
        context = ssl.create_default_context(cafile=str(work / "pki" / "ca.crt"))
        _wait(cp, "kube-apiserver", f"{cp.server}/readyz", deadline, context, {"Authorization": f"Bearer {token}"})
    except BaseException:
        cp.stop()
        raise
    log.info("k8s: kube-apiserver %s ready at %s (kubeconfig %s)", KUBERNETES_VERSION, cp.server, cp.kubeconfig)
    return cp


@contextlib.contextmanager
def running_control_plane(workdir: str | Path | None = None) -> Iterator[ControlPlane]:
    cp = start_control_plane(workdir)
    try:
        yield cp
    finally:
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    """`build`: build or reuse the binaries and print their folder; `up`: also start the control plane, print
    the kubeconfig path, and keep it running until interrupted."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[churn-spark %(asctime)s] %(message)s")
    args = list(sys.argv[1:] if argv is None else argv) or ["build"]
    if args[0] not in ("build", "up"):
        print("usage: python -m churn_spark.k8s.testenv [build|up]", file=sys.stderr)
        return 2
    try:
        if args[0] == "build":
            print(ensure_binaries(), flush=True)
            return 0
        cp = start_control_plane(Path(args[1]) if len(args) > 1 else None)
    except EnvironmentProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
    return run_until_interrupted(cp.processes[-1], cp.stop)


if __name__ == "__main__":
    sys.exit(main())
