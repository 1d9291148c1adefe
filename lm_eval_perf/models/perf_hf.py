"""``perf-hf``: lm-eval's ``hf`` model with every batch timed and the run's efficiency recorded.

The subclass is deliberately narrow. It overrides lm-eval's three request methods (to open one
monitor window per call), the two narrow waists ``_model_call`` and ``_model_generate`` (to time each
batch, synchronized), ``_select_cont_toks`` (to learn each scored row's unpadded length) and
``get_model_info`` (to put the ``efficiency`` record into lm-eval's results JSON). Batching, padding,
tokenization and decoding are lm-eval's own, so per-sample outputs equal ``--model hf``'s.

Model arguments beyond HFLM's (all optional):

* ``monitor_interval`` (s, default 0.1) - sampling period of the GPU/host sampler.
* ``warmup_batches`` (default 0) - first batches of each request kind left out of latency figures.
* ``print_summary`` (default true) - print a short efficiency table when the process ends, i.e.
  after lm-eval's own tables.
* ``peak_flops`` (FLOP/s), ``peak_bandwidth`` (bytes/s) - override the device peaks for MFU/MBU.
* ``generation_backend`` (default ``eager``) - how the throughput task generates: ``eager`` is
  lm-eval's own ``generate`` path; ``static`` a static KV cache with compiled decode steps (see
  :mod:`lm_eval_perf.tasks.throughput`). lm-eval's own tasks always use the eager path.
* ``artifacts_dir`` - where plugin tasks (throughput, forward, ESD) write their files; default: the
  folder of lm-eval's results JSON (``--output_path``), else ``./lm_eval_perf_artifacts``.
* ``head`` (``auto``) and ``label_map`` - sequence classifiers (``AutoModelForSequenceClassification``,
  read from the config's ``architectures`` or forced with ``head=classification``) answer
  multiple-choice tasks from their labels; see :mod:`lm_eval_perf.models.classifier`.
* ``precision``, ``quant_backend``, ``group_size``, ``quantize_lm_head`` (bf16/fp16/fp32 casts,
  int4, AWQ, NF4) and
  ``svd_ratio``, ``svd_rank``, ``svd_targets``, ``svd_solver``, ``compressed``, ``allow_pickle``
  (low-rank compression) - see :mod:`lm_eval_perf.models.plan`; recorded under
  ``efficiency.load.precision`` / ``efficiency.load.compression``.

``pretrained`` also accepts ``path/to/model.gguf``, ``bundled:smollm2`` and ``arch:<preset>``
(random weights built on the device); see :mod:`lm_eval_perf.models.sources`.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from lm_eval_perf import registration
from lm_eval_perf.atomic import check_writable
from lm_eval_perf.errors import UserInputError, install_excepthook
from lm_eval_perf.model_args import FROM_PRETRAINED_ARGS, hflm_args, model_arg_names
from lm_eval_perf.models import classifier, sources
from lm_eval_perf.models.forward_call import ForwardCall
from lm_eval_perf.models.plan import LoadPlan
from lm_eval_perf.models.probe import probe_length, rows_that_fit
from lm_eval_perf.models.session import EvalSession, SessionState, efficiency_record
from lm_eval_perf.models.shape import logits_device, model_devices, model_shape
from lm_eval_perf.models.stops import kept_tokens
from lm_eval_perf.monitor import PerformanceMonitor, peaks_for
from lm_eval_perf.monitor.clock import TokenTimer
from lm_eval_perf.monitor.sources import NoGpuSource
from lm_eval_perf.plugins import is_plugin_request, plugin_name, run_plugin
from lm_eval_perf.records.efficiency import RUN_DEVICE, validate_if_asked

install_excepthook()

GENERATION_BACKENDS = ("eager", "static")


def _check_dtype(name: str, value) -> None:
    if value is None or isinstance(value, torch.dtype) or value == "auto":
        return
    if not isinstance(getattr(torch, str(value), None), torch.dtype):
        raise UserInputError(f"{name}={value!r} is not a torch dtype: use auto, bfloat16, float16 or float32")


def _check_output_path(path: str) -> None:
    """A one-line error unless lm-eval's ``--output_path`` (a folder, or a ``.json`` file in one) can
    be written; creates nothing."""
    target = Path(path).expanduser()
    check_writable(target if target.suffix != ".json" else target.parent, "--output_path")


def _check_device(model_args: dict, additional_config: dict | None) -> None:
    """lm-eval passes its own ``device`` (``--device``, default ``cuda:0``) beside the model
    arguments, so ``device=`` in ``--model_args`` would reach the constructor twice. And HFLM takes
    a bare ``cuda`` as given even where torch has no CUDA (``cuda:0`` falls back to the CPU), which
    would end in a traceback when the model is moved: a one-line error instead."""
    given = (additional_config or {}).get("device")
    if "device" in model_args and given is not None:
        raise UserInputError(
            f"device={model_args['device']} in --model_args collides with lm-eval's own device argument "
            f"(it passes --device, default cuda:0, to every model): use --device {model_args['device']}"
        )
    if given == "cuda" and not model_args.get("parallelize") and not torch.cuda.is_available():
        raise UserInputError(
            f"--device cuda: torch {torch.__version__} sees no CUDA device on this machine; use --device cpu "
            "(or leave --device out: the model then runs on a GPU where there is one, else on the CPU)"
        )


_LAST_RECORDS: list[dict] = []


def _print_last_records() -> None:
    from lm_eval_perf.records.console import render_efficiency

    for record in _LAST_RECORDS:
        print(render_efficiency(record))


@register_model("perf-hf")
class PerfHFLM(HFLM):
    """lm-eval's HFLM plus a performance monitor; see the module docstring for the extra arguments."""

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        _check_device(simple_parse_args_string(arg_string), additional_config)
        return super().create_from_arg_string(arg_string, additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        _check_device(arg_dict, additional_config)
        return super().create_from_arg_obj(arg_dict, additional_config)

    def __init__(
        self,
        pretrained: str | transformers.PreTrainedModel,
        monitor_interval: float = 0.1,
        warmup_batches: int = 0,
        print_summary: bool = True,
        peak_flops: float | None = None,
        peak_bandwidth: float | None = None,
        artifacts_dir: str | None = None,
        generation_backend: str = "eager",
        head: str = "auto",
        label_map: str | dict | None = None,
        **kwargs,
    ) -> None:
        try:
            monitor_interval, warmup_batches = float(monitor_interval), int(warmup_batches)
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"monitor_interval/warmup_batches must be numbers: {exc}") from exc
        if monitor_interval <= 0 or warmup_batches < 0:
            raise UserInputError("monitor_interval must be > 0 seconds and warmup_batches >= 0")
        if generation_backend not in GENERATION_BACKENDS:
            raise UserInputError(
                f"generation_backend={generation_backend!r}: use one of {', '.join(GENERATION_BACKENDS)}"
            )
        self.plan = LoadPlan.pop_from(kwargs)  # precision / compression args; sets kwargs["dtype"]
        self._head_arg = str(head)
        self.is_classifier = False  # set from the config by _get_config
        for key in ("dtype", "softmax_dtype", "mixed_precision_dtype"):
            _check_dtype(key, kwargs.get(key))
        self._extra_args = {k for k in kwargs if k not in hflm_args()}
        if registration.output_path():
            _check_output_path(registration.output_path())  # fail now, not after hours of evaluation

        if kwargs.get("peft"):
            sources.check_adapter(str(kwargs["peft"]))
        self.source: sources.ModelSource | None = None
        started = time.perf_counter()
        if isinstance(pretrained, str):
            self.source = sources.resolve(
                pretrained, kwargs.pop("tokenizer", None), kwargs.pop("gguf_file", None)
            )
            kwargs.update(
                pretrained=self.source.pretrained,
                tokenizer=self.source.tokenizer,
                gguf_file=self.source.gguf_file,
            )
        else:
            kwargs["pretrained"] = pretrained
        self.source_time_s = time.perf_counter() - started  # a bundled model's conversion on first use
        started = time.perf_counter()
        super().__init__(**kwargs)
        self.load_time_s = time.perf_counter() - started
        self._split_requests_over_processes()
        self.classifier: classifier.Labels | None = None
        self._classifier_call: ForwardCall | None = None
        if self.is_classifier:
            self.classifier = classifier.Labels.of(self.model.config, label_map)
            self._classifier_call = ForwardCall(
                self.model, self.mixed_precision_dtype, last_position_only=False
            )
            if self.model.config.pad_token_id is None:  # a decoder classifier pools at the last non-pad token
                self.model.config.pad_token_id = self.tokenizer.pad_token_id
        elif label_map is not None:
            raise UserInputError("label_map= applies to sequence classifiers only (see head=)")
        self.folded_ids: str | None = None
        if self.source is not None and self.source.random_weights:
            self.folded_ids = sources.fold_token_ids(self.model, len(self.tokenizer))
        self._classifier_batch_size: int | None = None

        self.monitor_interval = monitor_interval
        self.warmup_batches = warmup_batches
        self.print_summary = bool(print_summary)
        self.shape = model_shape(self.model, self.mixed_precision_dtype)
        self.devices = model_devices(self.model)
        self.event_device = logits_device(self.model)
        self.peaks = peaks_for(
            torch.cuda.get_device_name(self.devices[0]) if self.devices else None,
            None if peak_flops is None else float(peak_flops),
            None if peak_bandwidth is None else float(peak_bandwidth),
            self.shape.compute_dtype,
        )
        self._artifacts_dir = artifacts_dir
        self.generation_backend = generation_backend
        self._session: EvalSession | None = None
        self._open_session = contextlib.ExitStack()  # holds the session open across request calls
        self._rank_states: list[SessionState] = []  # every rank's share, gathered to rank 0
        self._unmeasured = False  # batches outside the evaluation: batch-size probes, plugin tasks
        self.probes: list[dict] = []  # batch_size=auto probes of this evaluation
        self.artifacts: dict[str, str] = {}  # files plugin tasks wrote, by name
        self.efficiency: dict | None = None

    def _split_requests_over_processes(self) -> None:
        """Under ``accelerate launch`` on machines without several CUDA devices, HFLM keeps rank 0
        of 1 in every process (it sets rank and world size only when it counts more than one GPU),
        so each process would evaluate every request and write the results. Take rank and world
        size from accelerate, as HFLM does with GPUs, so N CPU processes split the requests."""
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1 and self._world_size == 1:
            self._rank = accelerator.local_process_index
            self._world_size = accelerator.num_processes

    # -- loading hooks (HFLM calls these from its __init__) --------------------------------------

    def _get_config(self, pretrained: str, **kwargs) -> None:
        if self.source is not None and self.source.random_weights:
            self._config = sources.transformers_config(self.source.arch_config)  # type: ignore[arg-type]
        else:
            try:
                super()._get_config(pretrained, **kwargs)
            except (OSError, ValueError) as exc:  # no such model, no or a broken config.json
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserInputError(f"cannot load model {pretrained}: {first}") from exc
        self.is_classifier = classifier.has_classification_head(self._config, self._head_arg)
        if self.is_classifier:
            self.AUTO_MODEL_CLASS = transformers.AutoModelForSequenceClassification
        unknown = sorted(k for k in self._extra_args - FROM_PRETRAINED_ARGS if not hasattr(self._config, k))
        if unknown:
            known = sorted(model_arg_names())
            hint = difflib.get_close_matches(unknown[0], known, n=1)
            raise UserInputError(
                f"unknown model_args key {unknown[0]!r} for perf-hf"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )

    def _get_backend(self, config, backend="default", trust_remote_code=False) -> None:
        if not self.is_classifier:
            return super()._get_backend(config, backend=backend, trust_remote_code=trust_remote_code)
        # HFLM knows causal and seq2seq models; a classifier's requests are scored by models.classifier,
        # and HFLM's batch-size probe (one tower, no labels) runs it as it runs a causal LM
        self.backend = "causal"

    def _create_model(self, pretrained: str, dtype="auto", **kwargs) -> None:
        self.plan.bind(self._device)  # the device HFLM resolved; checked before any weight loads
        random_weights = self.source is not None and self.source.random_weights
        model = self.plan.load(pretrained, random_weights, dtype)  # AWQ / compressed checkpoints
        if model is not None:
            self._model = model
        elif not random_weights:
            super()._create_model(pretrained, dtype=dtype, **kwargs)
        else:
            torch_dtype = torch.bfloat16 if dtype in (None, "auto") else getattr(torch, str(dtype), dtype)
            config_args = (
                self._extra_args - FROM_PRETRAINED_ARGS
            )  # set on the config, as from_pretrained does
            for key in config_args:
                setattr(self._config, key, kwargs[key])
            with torch.device(self._device):
                self._model = self.AUTO_MODEL_CLASS.from_config(self._config, dtype=torch_dtype)
        self._model = self.plan.finish(self._model)  # SVD truncation, load-time quantization

    # -- the three request methods ---------------------------------------------------------------

    @contextlib.contextmanager
    def _measuring(self, kind: str, requests) -> Iterator[None]:
        """One monitor window around one call of a request method; starts a session if needed."""
        if self._session is None:
            session = EvalSession(self.new_monitor(warmup_batches=self.warmup_batches))
            self._session = self._open_session.enter_context(session)
            self.probes = []
        self._session.begin(kind, requests)
        try:
            yield
        finally:
            self._session.end()

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        with self._measuring("loglikelihood", requests):
            if self.classifier is not None:
                return classifier.score(
                    requests, self.classifier, self._classify, self._classify_rows(requests)
                )
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        self._refuse_for_classifier("loglikelihood_rolling", requests)
        with self._measuring("loglikelihood_rolling", requests):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    def _refuse_for_classifier(self, kind: str, requests) -> None:
        if self.classifier is None or not requests:
            return
        tasks = sorted({getattr(r, "task_name", None) or "unknown" for r in requests})
        raise UserInputError(
            f"{self.model_label} is a sequence classifier: "
            f"it answers multiple-choice (loglikelihood) tasks only, not {kind} ({', '.join(tasks)})"
        )

    def generate_until(self, requests, disable_tqdm: bool = False):
        plugins = {i for i, r in enumerate(requests) if is_plugin_request(r.args[1])}
        self._refuse_for_classifier("generate_until", [r for i, r in enumerate(requests) if i not in plugins])
        if not plugins:
            with self._measuring("generate_until", requests):
                return super().generate_until(requests, disable_tqdm=disable_tqdm)
        # Plugin tasks (throughput sweep, ESD) are carried out here and measure themselves.
        results: list[str | None] = [
            self._run_plugin(requests[i].args[1]) if i in plugins else None for i in range(len(requests))
        ]
        normal = [r for i, r in enumerate(requests) if i not in plugins]
        if normal:
            with self._measuring("generate_until", normal):
                outputs = iter(super().generate_until(normal, disable_tqdm=disable_tqdm))
            results = [next(outputs) if r is None else r for r in results]
        return results

    def new_monitor(self, warmup_batches: int = 0) -> PerformanceMonitor:
        """A :class:`PerformanceMonitor` of this model: its GPUs (none on CPU), shape, peaks, interval."""
        gpu = None if self.devices else NoGpuSource(f"the model runs on {self.device}: no GPU to monitor")
        return PerformanceMonitor(
            interval_s=self.monitor_interval,
            devices=self.devices,
            model_shape=self.shape,
            peaks=self.peaks,
            warmup_batches=warmup_batches,
            event_device=self.event_device,
            gpu_source=gpu,
        )

    def artifacts_dir(self) -> Path:
        """Where plugin tasks write their files: next to lm-eval's results JSON when there is one."""
        if self._artifacts_dir is not None:
            return Path(self._artifacts_dir).expanduser()
        return registration.results_dir() or Path.cwd() / "lm_eval_perf_artifacts"

    # -- the narrow waists -----------------------------------------------------------------------

    def _detect_batch_size(self, requests=None, pos: int = 0):
        """lm-eval's ``batch_size=auto`` probe, left out of the evaluation's windows, batches and
        allocator peaks, and on a CPU started no larger than host memory allows (HFLM starts at
        ``max_batch_size`` rows and halves on an out-of-memory error, which a CPU never raises: the
        kernel ends the process instead)."""
        length = probe_length(requests, pos, self.max_length)
        start_rows = self.max_batch_size
        if self.device.type == "cpu":
            start_rows = rows_that_fit(self.config, length, self.model.dtype, start_rows)
        started, previous = time.perf_counter(), self.max_batch_size
        self.max_batch_size = start_rows
        try:
            with self._outside_evaluation("batch_size_probe"):
                chosen = super()._detect_batch_size(requests, pos)
        finally:
            self.max_batch_size = previous
        self.probes.append(
            {
                "positions": length,
                "start_batch_size": start_rows,
                "chosen_batch_size": int(chosen),
                "seconds": time.perf_counter() - started,
            }
        )
        return chosen

    @contextlib.contextmanager
    def _outside_evaluation(self, what: str) -> Iterator[None]:
        """Model calls in this block (``what``) are not recorded as evaluation batches, and their time,
        energy and memory stay out of the open evaluation's windows and allocator peaks."""
        previous, self._unmeasured = self._unmeasured, True
        paused = self._session.paused(what) if self._session is not None else contextlib.nullcontext()
        try:
            with paused:
                yield
        finally:
            self._unmeasured = previous

    def _run_plugin(self, generation_kwargs) -> str:
        """A plugin task's request (it measures itself); the files it wrote go into the results JSON."""
        with self._outside_evaluation(f"plugin task {plugin_name(generation_kwargs)}"):
            result = run_plugin(self, generation_kwargs)
        self.artifacts.update(result.get("artifacts", {}))
        return json.dumps(result)

    def _model_call(self, inps, attn_mask=None, labels=None):
        session = self._session
        if session is None or self._unmeasured:
            return super()._model_call(inps, attn_mask, labels)
        start = session.clock.now()
        logits = super()._model_call(inps, attn_mask, labels)
        session.forward(session.clock.now() - start, int(inps.shape[0]), int(inps.shape[1]))
        return logits

    def _select_cont_toks(self, logits, contlen=None, inplen=None):
        if self._session is not None:
            self._session.row(inplen)
        return super()._select_cont_toks(logits, contlen=contlen, inplen=inplen)

    def _classify_rows(self, requests) -> int:
        """Rows per classifier forward: ``batch_size``, or once per model lm-eval's ``auto`` probe at the
        longest context (HFLM's probe takes token lists and probes at their joint length less one)."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self._classifier_batch_size is None:
            longest = max((r.args[0] for r in requests), key=len)
            ids = self.tokenizer(longest, truncation=True, max_length=self.max_length).input_ids
            self._classifier_batch_size = int(self._detect_batch_size([(None, ids, [0])]))
        return self._classifier_batch_size

    def classifier_inputs(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids and attention mask of a classifier batch on the model's device, tokenized as the
        classifier was trained: its special tokens, right padding to the longest row."""
        batch = self.tokenizer(
            texts,
            padding="longest",
            padding_side="right",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def _classify(self, texts: list[str]) -> torch.Tensor:
        """Logits (rows x labels) of the classifier for ``texts``: one timed forward pass, a batch of
        the evaluation."""
        ids, mask = self.classifier_inputs(texts)
        session = self._session
        assert session is not None and self._classifier_call is not None  # a classifier's loglikelihood call
        start = session.clock.now()
        logits = self._classifier_call(ids, mask)
        session.forward(session.clock.now() - start, int(ids.shape[0]), int(ids.shape[1]))
        for tokens in mask.sum(dim=1).tolist():
            session.row(int(tokens))
        return logits

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        session = self._session
        if session is None or self._unmeasured:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        timer = TokenTimer(session.clock)
        processors = generation_kwargs.pop("logits_processor", None)
        generation_kwargs["logits_processor"] = transformers.LogitsProcessorList([*(processors or []), timer])
        start = session.clock.now()
        start_mark = session.clock.event()
        output = super()._model_generate(context, max_length, stop, **generation_kwargs)
        latency = session.clock.now() - start
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos_ids = {self.eot_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        kept = kept_tokens(
            output[:, context.shape[1] :], self.tok_decode, stop, eos_ids, self.tokenizer.pad_token_id
        )
        session.generation(
            latency, context, generation_kwargs.get("attention_mask"), output, kept, timer, start_mark
        )
        return output

    # -- the record ------------------------------------------------------------------------------

    def gather_object(self, obj, dst: int = 0):
        """lm-eval's gather of per-rank results, carrying each rank's efficiency share along.

        In a data-parallel run lm-eval asks only rank 0 for the model info, after gathering the
        ranks' metrics with this method - the one collective every rank reaches after its last
        request. Each rank ends its session here and sends its share with lm-eval's object; rank 0
        keeps all shares for :meth:`finish_measurement`. Every rank wraps every call the same way,
        so the collectives stay matched.
        """
        if self.world_size <= 1:
            return super().gather_object(obj, dst)
        share = self._end_session() if self._session is not None else None
        gathered = super().gather_object((obj, share), dst)
        if gathered is None:
            return None
        shares = [s for _, s in gathered if s is not None]
        if shares:
            self._rank_states = shares
        return [o for o, _ in gathered]

    def _end_session(self) -> SessionState:
        """Stop the open session; this process's share of the evaluation."""
        assert self._session is not None
        session, self._session = self._session, None
        self._open_session.close()
        return session.state(rank=self.rank, device=str(self.device), batch_size_probe=self.probes or None)

    def finish_measurement(self) -> dict | None:
        """End the current session and return its efficiency record (the last one if none is open);
        in a data-parallel run on rank 0, the record of all ranks."""
        shares, self._rank_states = self._rank_states, []
        if self._session is not None:
            shares = [self._end_session()]
        if shares:
            record = efficiency_record(shares, self.shape, self.peaks)
            record["batch_size_probe"] = shares[0].monitor.extra["batch_size_probe"]  # rank 0's
            record["load"] = {
                "model": self.model_label,
                "random_weights": bool(self.source and self.source.random_weights),
                "load_time_s": self.load_time_s,
                "source_time_s": self.source_time_s,
                "dtype": str(self.model.dtype).removeprefix("torch."),
                "device": str(self.device),
                "head": self.head_record(),
                "token_ids_folded": self.folded_ids,
                **self.plan.record(self.model),  # "precision" and "compression" blocks
            }
            validate_if_asked(record)
            self.efficiency = record
            if self.print_summary:
                if not _LAST_RECORDS:
                    atexit.register(_print_last_records)
                _LAST_RECORDS[:] = [record]
        return self.efficiency

    @property
    def model_label(self) -> str:
        """The model's name in records: ``pretrained=`` as the user spelt it, else its class."""
        return self.source.label if self.source is not None else type(self.model).__name__

    def head_record(self) -> dict:
        """What the model's output is: a causal LM's vocabulary, or a classifier's labels."""
        if self.classifier is None:
            return {"kind": "causal_lm" if self.backend == "causal" else self.backend}
        return {"kind": "sequence_classification", "labels": list(self.classifier.names)}

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["efficiency"] = self.finish_measurement()
        info[RUN_DEVICE] = str(self.device)
        if self.artifacts:
            info["lm_eval_perf_artifacts"] = dict(self.artifacts)
        return info
