"""The .test study through profiles/slurm on a real one-node SLURM cluster (.ci/slurm.sh).

The cluster tests (markers slurm, slow) run only as root on Linux where SLURM is up or can be
installed with apt-get, and skip otherwise; the cluster is brought up once for the module and
the daemons it started are stopped at the end. The status script's state mapping is also
checked against fake squeue/scontrol/sacct commands, anywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import ROOT, SHARED_BBQ
from polars.testing import assert_frame_equal

SLURM_SH = ROOT / ".ci" / "slurm.sh"
PROFILE = ROOT / "profiles" / "slurm"
# the shard the kill test deletes, and the wildcards its SLURM job's comment shows
KILLED = "results/answers/tiny/q4/seed=123/shard=1.parquet"
KILLED_WILDCARDS = {"model=tiny", "variant=q4", "seed=123", "shard=1"}
SHARD = re.compile(r"results/answers/[^/]+/[^/]+/seed=\d+/shard=\d+\.parquet")
# machine-specific settings of the profile, overridden for this small node: every job asks for
# 1 GB and 10 minutes (the rules read theirs from the study config's cluster section)
CLUSTER_CFG = {
    "cluster": {
        f"{kind}_{res}": (1000 if res == "mem_mb" else 10)
        for kind in ("model", "checkpoint", "light", "analysis")
        for res in ("mem_mb", "runtime")
    }
}
SLURM_ARGS = [
    "--profile",
    str(PROFILE),
    "--jobs",
    "4",
    "--cores",
    "2",
    "--group-components",
    "answers=3",
    "--seconds-between-status-checks",
    "1",
    "--default-resources",
    "mem_mb=1000",
    "runtime=10",
    "gpu=0",
    "slurm_extra=''",
]


def _slurm_up() -> bool:
    """A SLURM controller answers (with $SLURM_CONF or the default config) with a usable node."""
    if not shutil.which("sinfo"):
        return False
    try:
        run = subprocess.run(["sinfo", "-h", "-o", "%T"], text=True, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return run.returncode == 0 and any(s.startswith(("idle", "mix")) for s in run.stdout.split())


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "SLURM test needs Linux"
    try:
        import snakemake_executor_plugin_cluster_generic  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-cluster-generic not installed (pip install -e '.[slurm]')"
    if _slurm_up():
        return None
    if os.geteuid() != 0:
        return "no SLURM up, and starting one needs root (slurmctld, slurmd, munged)"
    have_slurm = all(shutil.which(c) for c in ("sbatch", "squeue", "slurmctld", "slurmd", "munged"))
    if not have_slurm and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """Environment of a running one-node SLURM (SLURM_CONF set); stops what it started."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "COMPBIAS_SLURM_DIR": str(state), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t0 = time.monotonic()
    try:
        up = subprocess.run(["bash", str(SLURM_SH), "start"], env=env, text=True, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SLURM_SH), "stop"], env=env, capture_output=True, timeout=120)
        pytest.skip("SLURM did not come up within 600 s")
    try:
        if up.returncode != 0:
            pytest.skip(f"SLURM cannot start: {up.stderr.strip()[-1500:]}")
        conf = (up.stdout.strip().splitlines() or [""])[-1].removeprefix("export SLURM_CONF=")
        if conf:
            env["SLURM_CONF"] = conf
        else:
            env.pop("SLURM_CONF", None)
        print(f"SLURM up in {time.monotonic() - t0:.0f}s: {up.stderr.strip()}")
        yield env
    finally:
        down = subprocess.run(["bash", str(SLURM_SH), "stop"], env=env, text=True, capture_output=True, timeout=120)
        print(down.stderr)


def snakemake(work: Path, env: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(work, *args), text=True, capture_output=True, env=env, **kw)


def _cmd(work: Path, *args: str) -> list[str]:
    # the target first: --default-resources takes all the words after it
    return [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "-s",
        str(ROOT / "workflow" / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "config.yaml"),
        str(work / "cluster.yaml"),
    ]


def planned(run: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run."""
    out, table = {}, False
    for line in run.stdout.splitlines():
        parts = line.split()
        if line.startswith("Job stats"):
            table = True
        elif table and parts and parts[0] == "total":
            break
        elif table and len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def write_study(work: Path, tiny_model: Path) -> dict:
    """The .test study, smaller (bf16 and q4, 2 seeds + 1 placebo seed: 10 answer shards),
    with absolute paths; cluster.yaml holds this node's resource requests."""
    if not SHARED_BBQ.is_dir():
        pytest.skip(f"real BBQ data not found at {SHARED_BBQ}")
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["models"]["tiny"] = {"path": str(tiny_model)}
    cfg["dataset"]["path"] = str(SHARED_BBQ)
    cfg["variants"] = {name: cfg["variants"][name] for name in ("bf16", "q4")}
    cfg["seeds"], cfg["placebo_seeds"] = [42, 123], [7]
    cfg["perplexity"]["path"] = str(ROOT / cfg["perplexity"]["path"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    (work / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER_CFG))
    return cfg


def slurm_records(ids: list[str], env: dict) -> tuple[str, dict[str, tuple[str, str]]]:
    """(source, {job id: (job name, state)}) from sacct, else the jobcomp log through
    sacct --completion, else slurmctld's memory (scontrol show job)."""
    for source, extra in (("sacct", []), ("sacct --completion", ["--completion"])):
        run = subprocess.run(
            ["sacct", *extra, "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,JobName,State"],
            text=True,
            capture_output=True,
            env=env,
        )
        rows = {}
        for line in run.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0] in ids:
                rows[parts[0]] = (parts[1], parts[2].split()[0])
        if run.returncode == 0 and rows:
            return source, rows
    rows = {}
    for jobid in ids:
        run = subprocess.run(["scontrol", "show", "job", "-o", jobid], text=True, capture_output=True, env=env)
        fields = dict(f.split("=", 1) for f in run.stdout.split() if "=" in f)
        if "JobState" in fields:
            rows[jobid] = (fields.get("JobName", ""), fields["JobState"])
    return "scontrol show job", rows


@pytest.fixture(scope="module")
def slurm_study(slurm_env, tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("slurm_study")
    cfg = write_study(work, tiny_model)
    t0 = time.monotonic()
    run = snakemake(work, slurm_env, "all", *SLURM_ARGS, timeout=600)
    (work / "snakemake.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    print(f"SLURM run of the study: {time.monotonic() - t0:.0f}s")
    return work, cfg, run.stdout + run.stderr


@pytest.fixture(scope="module")
def local_study(tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("local_study")
    write_study(work, tiny_model)
    t0 = time.monotonic()
    run = snakemake(work, {**os.environ, "HF_HUB_OFFLINE": "1"}, "results/rates.parquet", "--cores", "2", timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    print(f"local run: {time.monotonic() - t0:.0f}s")
    return work


@pytest.mark.slurm
@pytest.mark.slow
def test_answer_jobs_ran_through_slurm(slurm_study, slurm_env):
    work, cfg, log = slurm_study
    submitted = set(re.findall(r"with external jobid '(\d+)'", log))
    assert submitted, "no job was submitted to SLURM"
    # every answer shard was written by a SLURM job: its SLURM output log (written by the job on
    # the node) names the shard, and SLURM's record of that job says it completed
    shard_job = {}
    for path in sorted((work / ".snakemake" / "slurm_logs").glob("smk-*answers*.log")):
        jobid = path.stem.rsplit("-", 1)[1]
        for shard in SHARD.findall(path.read_text()):
            shard_job[shard] = jobid
    n_shards = (len(cfg["variants"]) * len(cfg["seeds"]) + len(cfg["placebo_seeds"])) * cfg["shards"]
    assert len(shard_job) == n_shards == 10, sorted(shard_job)
    assert all((work / shard).exists() for shard in shard_job)
    ids = sorted(set(shard_job.values()), key=int)
    assert set(ids) <= submitted
    assert 4 <= len(ids) < 10  # 10 shards in groups of up to 3 (--group-components answers=3)
    source, records = slurm_records(ids, slurm_env)
    print(f"answer jobs per {source}: {records}")
    assert set(records) == set(ids), (source, records)
    assert all(name == "smk-answers_answers" and state == "COMPLETED" for name, state in records.values()), (
        source,
        records,
    )
    # the other rules were SLURM jobs too (one submission each)
    other = [p.name for p in (work / ".snakemake" / "slurm_logs").glob("smk-*.log") if "answers" not in p.name]
    for rule in ("items", "checkpoint", "scores", "merge", "rates", "analysis", "summary"):
        assert any(name.startswith(f"smk-{rule}-") for name in other), rule


@pytest.mark.slurm
@pytest.mark.slow
def test_outputs_equal_a_local_run(slurm_study, local_study):
    work, cfg, _ = slurm_study
    keys = ["model", "variant", "seed", "item_id"]
    slurm = pl.read_parquet(work / "results/answers.parquet").sort(keys)
    local = pl.read_parquet(local_study / "results/answers.parquet").sort(keys)
    n_answers = 20 * (len(cfg["variants"]) * len(cfg["seeds"]) + len(cfg["placebo_seeds"]))
    assert slurm.height == local.height == n_answers
    assert_frame_equal(slurm, local, check_exact=True)
    slurm_rates = pl.read_parquet(work / "results/rates.parquet")
    local_rates = pl.read_parquet(local_study / "results/rates.parquet")
    order = [c for c, t in slurm_rates.schema.items() if not t.is_float()]
    assert_frame_equal(slurm_rates.sort(order), local_rates.sort(order), check_exact=True)


def _find_job(env: dict) -> tuple[str, str] | None:
    """(job id, state) of the SLURM job computing the killed shard, if queued."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T|%k"], text=True, capture_output=True, env=env).stdout
    for line in out.splitlines():
        jobid, name, state, comment = line.split("|", 3)
        if name.startswith("smk-answers") and KILLED_WILDCARDS <= set(re.split(r"[ ,]", comment)):
            return jobid, state
    return None


@pytest.mark.slurm
@pytest.mark.slow
def test_killed_shard_job_leaves_no_shard_and_is_redone(slurm_study, slurm_env):
    work, _, _ = slurm_study
    shard = work / KILLED
    before = pl.read_parquet(work / "results/answers.parquet")
    shard.unlink()
    # rerun through SLURM without retries, and scancel the shard's job once SLURM runs it
    log = open(work / "killed_run.log", "w")
    proc = subprocess.Popen(
        _cmd(work, "all", *SLURM_ARGS, "--retries", "0"), env=slurm_env, stdout=log, stderr=subprocess.STDOUT
    )
    killed = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            found = _find_job(slurm_env)
            if found and found[1] == "RUNNING":
                subprocess.run(["scancel", found[0]], env=slurm_env, check=True)
                killed = found[0]
                break
            time.sleep(0.1)
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (work / "killed_run.log").read_text()
    assert killed, "the shard's SLURM job was never seen running:\n" + text[-3000:]
    assert rc != 0, text[-3000:]
    # SLURM recorded the job as cancelled (not completed), and so does the profile's status.py
    source, records = slurm_records([killed], slurm_env)
    print(f"killed job per {source}: {records}")
    assert records[killed][1] == "CANCELLED", (source, records)
    status = subprocess.run([str(PROFILE / "status.py"), killed], text=True, capture_output=True, env=slurm_env)
    assert status.stdout.strip() == "failed"
    # nothing that looks like the shard: at most a hidden temporary of the atomic write
    assert not shard.exists()
    assert [p.name for p in shard.parent.iterdir() if not p.name.startswith(".")] == ["shard=0.parquet"]
    # the plan redoes exactly that shard and what depends on it
    dry = snakemake(work, slurm_env, "all", "-n", *SLURM_ARGS)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = planned(dry)
    assert jobs == {
        "answers": 1,
        "merge": 1,
        "rates": 1,
        "analysis": 1,
        "figures": 1,
        "report_tables": 1,
        "summary": 1,
        "all": 1,
    }, dry.stdout[-3000:]
    rerun = snakemake(work, slurm_env, "all", *SLURM_ARGS, timeout=600)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-5000:]
    assert shard.exists()
    assert_frame_equal(pl.read_parquet(work / "results/answers.parquet"), before, check_exact=True)
    again = snakemake(work, slurm_env, "all", "-n", *SLURM_ARGS)
    assert "Nothing to be done" in again.stdout + again.stderr


FAKE = """#!/bin/sh
# fake {cmd}: prints $FAKE_{var}, or fails with $FAKE_{var}_ERR
case "$*" in *--completion*) out=$FAKE_{var}_C; err=$FAKE_{var}_C_ERR ;; *) out=$FAKE_{var}; err=$FAKE_{var}_ERR ;; esac
[ -n "$err" ] && {{ echo "$err" >&2; exit 1; }}
[ -n "$out" ] && echo "$out"
exit 0
"""


@pytest.mark.parametrize(
    "fake, expected",
    [
        ({"SQUEUE": "PENDING"}, "running"),
        ({"SQUEUE": "RUNNING"}, "running"),
        ({"SQUEUE": "COMPLETING"}, "running"),
        ({"SQUEUE": "COMPLETED"}, "success"),
        ({"SQUEUE": "OUT_OF_MEMORY"}, "failed"),
        # gone from squeue: slurmctld still remembers it
        (
            {
                "SQUEUE_ERR": "slurm_load_jobs error: Invalid job id specified",
                "SCONTROL": "JobId=5 JobName=smk-answers JobState=CANCELLED Reason=None",
            },
            "failed",
        ),
        ({"SCONTROL": "JobId=5 JobName=smk-answers JobState=COMPLETED Reason=None"}, "success"),
        # only accounting, or only the jobcomp log (sacct --completion), knows it
        ({"SACCT": "5|TIMEOUT"}, "failed"),
        ({"SACCT_ERR": "Slurm accounting storage is disabled", "SACCT_C": "5|COMPLETED"}, "success"),
        ({"SACCT_ERR": "Slurm accounting storage is disabled", "SACCT_C": "5|CANCELLED by 0"}, "failed"),
        # nobody knows the job: failed (Snakemake retries it)
        ({"SACCT_ERR": "Slurm accounting storage is disabled"}, "failed"),
        # SLURM does not answer: keep it running, ask again at the next check
        (
            {
                "SQUEUE_ERR": "slurm_load_jobs error: Unable to contact slurm controller",
                "SCONTROL_ERR": "slurm_load_jobs error: Unable to contact slurm controller",
            },
            "running",
        ),
    ],
)
def test_status_script_maps_slurm_states(tmp_path, fake, expected):
    for cmd, var in (("squeue", "SQUEUE"), ("scontrol", "SCONTROL"), ("sacct", "SACCT")):
        path = tmp_path / cmd
        path.write_text(FAKE.format(cmd=cmd, var=var))
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_")}
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    env.update({f"FAKE_{k}": v for k, v in fake.items()})
    run = subprocess.run(
        [sys.executable, str(PROFILE / "status.py"), "5"], text=True, capture_output=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{expected}\n", run.stderr
