"""A real single-node Slurm cluster for tests: ``munged``, ``slurmctld`` and ``slurmd`` on localhost,
CPU only, everything (key, configuration, state, logs, sockets) in one temporary folder.

Debian's ``slurm-wlm`` and ``munge`` packages provide the daemons (``scripts/setup.sh --test``
installs them where it can: root and apt-get). The generated ``slurm.conf`` needs neither systemd nor
cgroups (``proctrack/linuxproc``, ``task/none``, no job accounting: ``sacct`` answers nothing, which
the executor must cope with), trusts the node's stated CPUs (``config_overrides``) and listens on free
ports, so it can run beside another cluster. Clients find it through ``$SLURM_CONF``.

    python tests/slurm_cluster.py -- COMMAND ...   # run COMMAND with the cluster up (e.g. a bench)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "srun", "scancel", "sinfo")
NODE = "localhost"
START_TIMEOUT_S = 60.0


def _which(tool: str) -> str | None:
    """The tool's path (daemons live in /usr/sbin, not always on a user's PATH)."""
    return shutil.which(tool, path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin")


def unavailable() -> str | None:
    """Why this machine cannot run the cluster (None: it can)."""
    missing = [tool for tool in TOOLS if _which(tool) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} not on PATH; scripts/setup.sh --test)"
    if os.geteuid() != 0:
        return "the single-node Slurm cluster needs root (slurmd starts jobs as their user)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(folder: Path, cpus: int) -> str:
    memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    return f"""ClusterName=lepci
SlurmctldHost={NODE}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mib} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _wait_idle(env: dict[str, str], folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
        if state.stdout.strip() == "idle":
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*.log")))
    raise RuntimeError(f"the test Slurm cluster did not come up in {START_TIMEOUT_S:g} s:\n{logs}")


@contextlib.contextmanager
def slurm_cluster(folder: Path, cpus: int = 4) -> Iterator[dict[str, str]]:
    """Run the cluster while the block runs; yields the environment its clients need (``SLURM_CONF``).
    On the way out every job is cancelled and the daemons are stopped."""
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True)
    key = folder / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, cpus))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munged = [
        _which("munged"),
        "--foreground",
        "--force",
        f"--key-file={key}",
        f"--socket={folder}/munge.socket",
        f"--pid-file={folder}/munged.pid",
        f"--log-file={folder}/munged.log",
        f"--seed-file={folder}/munged.seed",
    ]
    commands = [munged, [_which("slurmctld"), "-D", "-i"], [_which("slurmd"), "-D", "-N", NODE]]
    daemons: list[subprocess.Popen] = []
    try:
        for command in commands:
            with open(folder / f"{Path(command[0]).name}.out", "w") as out:
                daemons.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
            if command is munged:
                while not (folder / "munge.socket").exists() and daemons[0].poll() is None:
                    time.sleep(0.05)
        _wait_idle(env, folder)
        yield {"SLURM_CONF": str(conf)}
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
            if queue.returncode or not queue.stdout.strip():
                break
            time.sleep(0.5)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    reason = unavailable()
    if not command or reason:
        print(reason or "usage: python tests/slurm_cluster.py -- COMMAND ...", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="slurm_cluster_") as folder, slurm_cluster(Path(folder)) as env:
        return subprocess.run(command, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
