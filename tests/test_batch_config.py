"""batch_eval configs: validation with one-line errors, ${VAR} expansion, the matrix and its folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_perf.batch.cli import main
from lm_eval_perf.batch.config import load_config
from lm_eval_perf.batch.matrix import expand, select
from lm_eval_perf.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD = """
output_dir: ./out
models:
  - arch:tiny-llama
tasks:
  - {name: leaderboard_bbh_local, label: bbh, limit: 1, metadata: {bbh_dir: /nowhere}}
"""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("models: [arch:tiny-llama\ntasks: [x]\n", "is not valid YAML (line"),
        (GOOD + "precisions: [bfloat16, int3]\n", "precisions[1]: unknown precision 'int3'"),
        (
            GOOD.replace(
                "  - arch:tiny-llama", "  - arch:tiny-llama\n  - {pretrained: x, precisions: [fp8]}"
            ),
            "models[1].precisions[0]: unknown precision 'fp8'",
        ),
        (GOOD + "ratios: [1.0, 1.5]\n", "ratios[1]: 1.5 is not a compression ratio in (0, 1]"),
        (GOOD + "timeut: 5\n", "timeut: unknown key (did you mean 'timeout'?)"),
        (GOOD.replace("leaderboard_bbh_local", "leaderboard_bhb_local"), "tasks[0].name: unknown task"),
        (GOOD.replace("./out", "./afile/out"), "output_dir:"),
        (GOOD + "  - {name: leaderboard_bbh_local, label: bbh}\n", "tasks[1].label: 'bbh' is already used"),
        (
            GOOD.replace("  - arch:tiny-llama", "  - ./no-such-model"),
            "models[0].pretrained: local path ./no-such-model (",
        ),
        (
            GOOD.replace("  - arch:tiny-llama", "  - {pretrained: arch:tiny-llama, peft: /no/such/adapter}"),
            "models[0].peft: local path /no/such/adapter does not exist",
        ),
        (
            GOOD.replace("./out", "${NO_SUCH_VAR_X}/out"),
            "output_dir: environment variable NO_SUCH_VAR_X is not set",
        ),
        (GOOD + "isolation: maybe\n", "isolation: 'maybe' is not one of warn, error, wait"),
        (GOOD + "jobs_per_gpu: 0\n", "jobs_per_gpu: expected an integer >= 1, got 0"),
        (
            GOOD.replace("limit: 1,", "limit: 1, gpu_memory_gb: -2,"),
            "tasks[0].gpu_memory_gb: expected GB > 0 or null, got -2",
        ),
        (GOOD + "slurm: {partiton: gpu}\n", "slurm.partiton: unknown key (did you mean 'partition'?)"),
        (GOOD + "slurm: {time_limit_min: 0}\n", "slurm.time_limit_min: expected an integer >= 1, got 0"),
        (GOOD + "slurm: {gpus_per_job: 1}\n", "slurm.gpus_per_job: GPUs per job are the top-level"),
        (GOOD + "slurm: {sbatch: {job_name: x}}\n", "slurm.sbatch.job_name: set by batch_eval"),
        (GOOD + "slurm: {sbatch: {mem: 4G}}\n", "slurm.sbatch.mem: use slurm.mem_gb"),
        (GOOD + "slurm: {sbatch: {exclusive: false}}\n", "slurm.sbatch.exclusive: expected a string"),
        (GOOD + "slurm: [gpu]\n", "slurm: expected a mapping, got list"),
        (GOOD + "devices: [cpu, gpu]\n", "devices[1]: unknown device 'gpu' (did you mean 'cuda'?)"),
        (GOOD + "devices: [cuda:1]\n", "devices[0]: 'cuda:1': use cuda (batch_eval gives each job its GPUs"),
        (GOOD + "devices: [cpu, cpu]\n", "devices[1]: 'cpu' is listed twice"),
        (
            GOOD.replace(
                "  - arch:tiny-llama", "  - {pretrained: arch:tiny-llama, model_args: {device: cpu}}"
            ),
            "models[0].model_args.device: use devices: [cpu, cuda] (each job passes lm-eval's own --device)",
        ),
        (
            GOOD + "devices: [cpu, cuda]\ngpus_per_job: 0\n",
            "models[0]: devices lists cuda but gpus_per_job is 0 (a CPU job)",
        ),
    ],
    ids=[
        "malformed-yaml",
        "unknown-precision",
        "unknown-model-precision",
        "bad-ratio",
        "unknown-key",
        "unknown-task",
        "unwritable-output",
        "duplicate-label",
        "missing-local-model",
        "missing-local-adapter",
        "unset-env",
        "bad-isolation",
        "no-jobs-per-gpu",
        "negative-memory",
        "slurm-unknown-key",
        "slurm-zero-time",
        "slurm-gpus-key",
        "slurm-reserved-option",
        "slurm-option-with-key",
        "slurm-false-flag",
        "slurm-not-mapping",
        "unknown-device",
        "numbered-cuda-device",
        "device-twice",
        "device-in-model-args",
        "cuda-without-gpus",
    ],
)
def test_bad_config_is_one_line_error_and_writes_nothing(tmp_path, capsys, config, message):
    config_file = write(tmp_path / "cfg" / "batch.yaml", config)
    write(tmp_path / "cfg" / "afile", "a file, not a folder")
    before = sorted(tmp_path.rglob("*"))
    assert main(["--config", str(config_file), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lm-eval-perf: error: ") and message in err
    assert sorted(tmp_path.rglob("*")) == before


def test_missing_config_file_via_batch_eval_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "batch_eval.py"), "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"lm-eval-perf: error: config file {tmp_path / 'nope.yaml'} does not exist"
    assert list(tmp_path.iterdir()) == []


def test_env_expansion_with_defaults_and_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCH_TEST_ROOT", "/data/x")
    monkeypatch.delenv("BATCH_TEST_UNSET", raising=False)
    config = load_config(
        write(
            tmp_path / "c" / "b.yaml",
            """
output_dir: ${BATCH_TEST_ROOT:-/never}/out
models: [arch:tiny-llama]
tasks:
  - name: leaderboard_bbh_local
    metadata:
      bbh_dir: "${BATCH_TEST_UNSET:-${CONFIG_DIR}/../shared/bbh}"
      plain: "$HOME stays"
""",
        )
    )
    assert config.output_dir == Path("/data/x/out")
    assert config.tasks[0].metadata == {"bbh_dir": f"{tmp_path / 'c'}/../shared/bbh", "plain": "$HOME stays"}


def test_matrix_keys_model_args_and_ratio_folders(tmp_path):
    (tmp_path / "local" / "ckpt").mkdir(parents=True)  # local paths must exist
    config = load_config(
        write(
            tmp_path / "b.yaml",
            """
precisions: [bfloat16, int4]
ratios: [1.0, 0.6]
model_args: {monitor_interval: 0.5}
models:
  - {pretrained: org/Model-1B, revision: v2, gpus_per_job: 2}
  - {pretrained: ./local/ckpt, name: mine, precisions: float32, ratios: [1.0], tasks: [esd]}
tasks:
  - name: leaderboard_bbh
    label: bbh
    num_fewshot: 3
    limit: 0.5
    batch_size: auto
    gen_kwargs: {max_gen_toks: 64}
    apply_chat_template: true
  - esd
""",
        )
    )
    jobs = {j.key: j for j in expand(config, on_gpu=True)}
    assert sorted(jobs) == sorted(
        [
            f"org__Model-1B@v2/{p}/{t}"
            for p in ("bfloat16", "bfloat16@r0.6", "int4", "int4@r0.6")
            for t in ("bbh", "esd")
        ]
        + ["mine/float32/esd"]
    )
    compressed = jobs["org__Model-1B@v2/int4@r0.6/bbh"]
    assert compressed.model_args == {
        "pretrained": "org/Model-1B",
        "revision": "v2",
        "precision": "int4",
        "svd_ratio": 0.6,
        "parallelize": True,
        "monitor_interval": 0.5,
    }
    assert compressed.compression_ratio == 0.6 and compressed.gpus == 2
    args = list(compressed.args)
    assert json.loads(args[args.index("--model_args") + 1]) == compressed.model_args
    assert args[args.index("--num_fewshot") + 1] == "3" and args[args.index("--limit") + 1] == "0.5"
    assert args[args.index("--batch_size") + 1] == "auto"
    assert json.loads(args[args.index("--gen_kwargs") + 1]) == {"max_gen_toks": 64}
    assert "--apply_chat_template" in args and "--apply_chat_template" not in jobs["mine/float32/esd"].args
    untouched = jobs["org__Model-1B@v2/bfloat16/bbh"]
    assert "svd_ratio" not in untouched.model_args and untouched.compression_ratio == 1.0
    local = jobs["mine/float32/esd"]
    assert local.model_args["pretrained"] == str(tmp_path / "local" / "ckpt")
    on_cpu = {j.key: j for j in expand(config, on_gpu=False)}
    assert on_cpu[compressed.key].gpus == 0 and "parallelize" not in on_cpu[compressed.key].model_args


def test_models_csv_rows_become_models_and_adapters(tmp_path):
    (tmp_path / "lists" / "adapters" / "lora-r8").mkdir(parents=True)  # local paths must exist
    write(
        tmp_path / "lists" / "models.csv",
        "# ESD study\nmodel,revision,source_model,name\n"
        "HuggingFaceTB/SmolLM2-135M,,,\n"
        "\n"
        "./adapters/lora-r8,,HuggingFaceTB/SmolLM2-135M,lora-r8\n"
        "org/other,abc123,,\n",
    )
    config = load_config(
        write(
            tmp_path / "b.yaml",
            "models:\n  - {models_csv: lists/models.csv, precisions: [float32]}\ntasks: [esd]\n",
        )
    )
    jobs = expand(config, on_gpu=False)
    assert [j.key for j in jobs] == [
        "HuggingFaceTB__SmolLM2-135M/float32/esd",
        "lora-r8/float32/esd",
        "org__other@abc123/float32/esd",
    ]
    assert jobs[1].model_args == {
        "pretrained": "HuggingFaceTB/SmolLM2-135M",
        "peft": str(tmp_path / "lists" / "adapters" / "lora-r8"),
        "precision": "float32",
    }
    assert jobs[2].model_args["revision"] == "abc123"


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("model,size\nx,1\n", "unknown column 'size'"),
        ("revision\nmain\n", "has no 'model' column"),
        ("model\n", "no models listed"),
        ("model,name\nx,a/b\n", "line 2: name: 'a/b' is not a folder name"),
        ("model\n./gone\n", "line 2: model: local path ./gone ("),
        ("model,source_model\n./gone,org/base\n", "line 2: model: local path ./gone ("),
    ],
)
def test_bad_models_csv_is_a_one_line_error(tmp_path, csv, message):
    write(tmp_path / "m.csv", csv)
    with pytest.raises(UserInputError, match=r"models\[0\]\.models_csv \(m\.csv\)") as info:
        load_config(write(tmp_path / "b.yaml", "models: [{models_csv: m.csv}]\ntasks: [esd]\n"))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_two_models_may_share_a_name_but_not_a_job(tmp_path):
    clash = r"models\[1\]: job a__b/default/esd is also a job of models\[0\]"
    with pytest.raises(UserInputError, match=clash):
        load_config(write(tmp_path / "b.yaml", "models: [a/b, {pretrained: a/b}]\ntasks: [esd]\n"))
    config = load_config(
        write(
            tmp_path / "c.yaml",
            "precisions: [bfloat16]\nmodels: [{pretrained: org/m, name: m}, "
            "{pretrained: org/m-awq, name: m, precisions: [awq]}]\ntasks: [esd]\n",
        )
    )
    jobs = {j.key: j.pretrained for j in expand(config, on_gpu=True)}
    assert jobs == {"m/bfloat16/esd": "org/m", "m/awq/esd": "org/m-awq"}


def test_only_filters_by_key_value_and_substring(tmp_path):
    config = load_config(
        write(
            tmp_path / "b.yaml",
            "precisions: [bfloat16, float16]\nratios: [1.0, 0.8]\nmodels: [org/a, org/b]\n"
            "tasks: [esd, {name: leaderboard_bbh, label: bbh}]\n",
        )
    )
    jobs = expand(config, on_gpu=False)
    assert len(jobs) == 16
    assert {j.key for j in select(jobs, ["model=org/b", "task=bbh", "precision=float16"])} == {
        "org__b/float16/bbh",
        "org__b/float16@r0.8/bbh",
    }
    assert {j.key for j in select(jobs, ["ratio=0.8", "org__a/bfloat16"])} == {
        "org__a/bfloat16@r0.8/esd",
        "org__a/bfloat16@r0.8/bbh",
    }
    assert len(select(jobs, ["ratio=1"])) == 8
    with pytest.raises(UserInputError, match="unknown key 'size'"):
        select(jobs, ["size=7b"])


def test_a_devices_axis_keys_each_cell_by_device_and_leaves_the_device_to_lm_eval(tmp_path):
    config = load_config(
        write(
            tmp_path / "b.yaml",
            GOOD.replace(
                "  - arch:tiny-llama",
                "  - arch:tiny-llama\n  - {pretrained: arch:tiny-llama, name: gpu-only, devices: cuda}",
            )
            + "devices: [cpu, cuda]\nprecisions: [float32]\nratios: [1.0, 0.5]\n",
        )
    )
    for on_gpu in (False, True):  # where the cell runs is the axis's, not the machine's
        jobs = {j.key: j for j in expand(config, on_gpu)}
        assert sorted(jobs) == sorted(
            [f"arch_tiny-llama/float32{r}@{d}/bbh" for r in ("", "@r0.5") for d in ("cpu", "cuda")]
            + ["gpu-only/float32@cuda/bbh", "gpu-only/float32@r0.5@cuda/bbh"]
        )
        for job in jobs.values():
            assert job.gpus == (job.device == "cuda") and job.identity()["device"] == job.device
            assert "device" not in job.model_args and "--device" not in job.args  # the runner adds it
    assert {j.key for j in select(list(jobs.values()), ["device=cpu"])} == {
        "arch_tiny-llama/float32@cpu/bbh",
        "arch_tiny-llama/float32@r0.5@cpu/bbh",
    }
    without = load_config(write(tmp_path / "plain.yaml", GOOD))  # no axis: the keys of old folders
    assert [(j.key, j.device) for j in expand(without, on_gpu=True)] == [
        ("arch_tiny-llama/default/bbh", None)
    ]


def test_dry_run_prints_the_matrix_and_writes_nothing(tmp_path, capsys):
    config = write(tmp_path / "b.yaml", GOOD + "precisions: [float32, bfloat16]\n")
    assert main(["--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "arch_tiny-llama/float32/bbh" in out
    assert "arch_tiny-llama/bfloat16/bbh" in out
    assert "2 jobs on local CPU" in out and "2 to run" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.yaml"]


def test_task_names_are_checked_against_the_cached_index_and_a_missing_name_rebuilds_it(
    tmp_path, monkeypatch
):
    from lm_eval_perf.batch import task_names

    monkeypatch.setenv("LM_EVAL_PERF_CACHE", str(tmp_path / "cache"))
    index = task_names.index_file(None)
    record = {"key": task_names.index_key(None), "names": ["only_in_the_cache"]}
    write(index, json.dumps(record))
    task_names.check_task_names({"only_in_the_cache": "tasks[0].name"}, None)  # the cache answered
    task_names.check_task_names({"esd": "tasks[0].name"}, None)  # not cached: indexed afresh
    names = json.loads(index.read_text())["names"]
    assert "esd" in names and "leaderboard_bbh_local" in names and "only_in_the_cache" not in names
    with pytest.raises(UserInputError, match=r"tasks\[1\]\.name: unknown task 'no_such_task_x'"):
        task_names.check_task_names({"no_such_task_x": "tasks[1].name"}, None)
    write(index, json.dumps({**record, "key": {**record["key"], "lm_eval": "0.0.1"}}))
    with pytest.raises(UserInputError, match="only_in_the_cache"):  # another lm-eval's index is not used
        task_names.check_task_names({"only_in_the_cache": "tasks[0].name"}, None)


def test_streamed_esd_is_one_lm_eval_perf_esd_job_per_model_with_bounded_memory(tmp_path):
    (tmp_path / "lora").mkdir()  # a local adapter path must exist
    write(tmp_path / "models.csv", "model,revision,source_model,name\norg/base,v1,,\n./lora,,org/base,lora\n")
    config = load_config(
        write(
            tmp_path / "b.yaml",
            """
precisions: [bfloat16, float16]
ratios: [1.0, 0.6]
jobs_per_gpu: 4
models:
  - {models_csv: models.csv, gpus_per_job: 2}
tasks:
  - {name: esd, label: esd-stream, metadata: {stream: true, fix_fingers: xmin_mid, batch_gib: 2}}
  - {name: esd, label: esd-loaded}
""",
        )
    )
    jobs = {j.key: j for j in expand(config, on_gpu=True)}
    streamed = {k: j for k, j in jobs.items() if k.endswith("/esd-stream")}
    assert sorted(streamed) == ["lora/default/esd-stream", "org__base@v1/default/esd-stream"]
    assert len(jobs) - len(streamed) == 2 * 4  # the loaded esd task keeps the precision × ratio axes
    base, lora = streamed["org__base@v1/default/esd-stream"], streamed["lora/default/esd-stream"]
    assert base.gpus == 1 and not base.timing_sensitive  # one GPU whatever gpus_per_job says
    assert base.memory_gb == pytest.approx(2 * 2 * 2**30 / 1e9 + 1.5)  # packs: its memory is bounded
    assert base.args[:5] == ("esd", "--model", "org/base", "--revision", "v1")
    assert json.loads(base.args[base.args.index("--metadata") + 1]) == {
        "stream": True,
        "fix_fingers": "xmin_mid",
        "batch_gib": 2,
    }
    assert lora.args[:5] == ("esd", "--model", "org/base", "--peft", str(tmp_path / "lora"))
    assert jobs["lora/bfloat16/esd-loaded"].gpus == 2
    on_cpu = {j.key: j for j in expand(config, on_gpu=False)}
    assert on_cpu[base.key].gpus == 0
    with pytest.raises(UserInputError, match=r"tasks\[0\]\.metadata\.stream='maybe'"):
        bad = load_config(
            write(tmp_path / "c.yaml", "models: [a/b]\ntasks: [{name: esd, metadata: {stream: maybe}}]\n")
        )
        expand(bad, on_gpu=False)
