"""A client for OpenAI-compatible servers (vLLM, SGLang, Ollama, OpenAI), standard library only.

  client = OpenAIClient("http://localhost:8000/v1", model="Qwen/Qwen2.5-0.5B-Instruct")
  out = client.complete(["2+2="], n=4, temperature=0.7, max_tokens=8, logprobs=1)
  out[0].texts, out[0].token_logprobs      # 4 completions of the prompt, and their token scores
  chats = client.chat([[{"role": "user", "content": "Capital of France?"}]], n=2)
  client.sample(prompts, n, temperature, max_new_tokens, seed=0)   # the `Backend` protocol

`complete` posts to /v1/completions and `chat` to /v1/chat/completions, one request per
prompt (a string `prompt` is the form every server accepts), up to `max_concurrency` at once.
Timeouts, connection errors, HTTP 429 and 5xx are retried `max_retries` times with exponential
backoff (`backoff_s * 2**k`, or the server's Retry-After when longer, capped at
`max_backoff_s`); other 4xx are not. A call returns every prompt's n choices or raises an
`OpenAIError` naming the URL: `AuthError` when the key is rejected (401/403),
`ResponseFormatError` for a body that is not JSON or lacks a field (named, e.g.
`choices[1].logprobs.token_logprobs`), `ServerUnavailableError` when retries run out.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import email.utils
import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from jaxsys.lib.llm import backend

API_KEY_ENV = "OPENAI_API_KEY"
_ERROR_DETAIL_CHARS = 300


class OpenAIError(RuntimeError):
  """A request to an OpenAI-compatible server failed.

  Attributes:
    url: the endpoint.
    status: the last HTTP status, or None when no response came.
    attempts: how many requests were sent.
  """

  def __init__(self, message: str, *, url: str, status: int | None = None, attempts: int = 1):
    super().__init__(message)
    self.url = url
    self.status = status
    self.attempts = attempts


class AuthError(OpenAIError):
  """The server rejected the API key (HTTP 401 or 403)."""


class ResponseFormatError(OpenAIError):
  """The response was not JSON, or lacked a field the API defines."""


class ServerUnavailableError(OpenAIError):
  """Timeouts, connection errors, 429 or 5xx persisted through every retry."""


@dataclasses.dataclass(frozen=True)
class Completion:
  """The n choices returned for one prompt."""

  texts: tuple[str, ...]  # [n] generated texts, prompt excluded
  finish_reasons: tuple[str | None, ...]  # [n] "stop", "length", ... as the server says
  tokens: tuple[tuple[str, ...], ...] | None = None  # [n][T_j] when log-probs were asked for
  token_logprobs: tuple[tuple[float, ...], ...] | None = None  # [n][T_j] natural-log probs

  def samples(self) -> list[backend.Sample]:
    """The choices as `backend.Sample`s; raises ValueError if log-probs were not asked for."""
    if self.tokens is None or self.token_logprobs is None:
      raise ValueError("this Completion has no log-probs: request them (logprobs=...)")
    return [
      backend.Sample(text, toks, lps, reason)
      for text, toks, lps, reason in zip(
        self.texts, self.tokens, self.token_logprobs, self.finish_reasons, strict=True
      )
    ]


def _normalise_base_url(base_url: str) -> str:
  """'http://host:8000' -> 'http://host:8000/v1'; a URL with a path is kept as given."""
  if not isinstance(base_url, str):
    raise ValueError(f"base_url={base_url!r} must be a str")
  parsed = urllib.parse.urlsplit(base_url.strip())
  if parsed.scheme not in ("http", "https") or not parsed.hostname:
    raise ValueError(f"base_url={base_url!r} must look like http://host:port/v1")
  try:
    parsed.port  # noqa: B018  (parsing the port validates it)
  except ValueError as err:
    raise ValueError(f"base_url={base_url!r} has a bad port: {err}") from None
  path = parsed.path.rstrip("/") or "/v1"
  if path.endswith("/completions"):
    raise ValueError(f"base_url={base_url!r} must be the API root (e.g. .../v1), not an endpoint")
  return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def _walk(obj: Any, path: Sequence[str | int], url: str, kind: type | tuple[type, ...]) -> Any:
  """obj[path[0]][path[1]]...; raises ResponseFormatError naming the first missing field."""
  name = ""
  for part in path:
    name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    if isinstance(part, int):
      ok = isinstance(obj, list) and -len(obj) <= part < len(obj)
    else:
      ok = isinstance(obj, dict) and part in obj
    if not ok:
      raise ResponseFormatError(f"response from {url} lacks field {name}", url=url, status=200)
    obj = obj[part]
  # bool is an int to isinstance, but never a valid number in these responses.
  if not isinstance(obj, kind) or (isinstance(obj, bool) and bool not in _as_tuple(kind)):
    raise ResponseFormatError(
      f"response from {url}: field {name} is {type(obj).__name__}, expected "
      f"{' or '.join(k.__name__ for k in _as_tuple(kind))}",
      url=url,
      status=200,
    )
  return obj


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
  return kind if isinstance(kind, tuple) else (kind,)


def _error_detail(err: urllib.error.HTTPError) -> str:
  """The server's error message from an HTTP error body, shortened."""
  try:
    body = err.read().decode("utf-8", "replace")
  except OSError:
    return err.reason if isinstance(err.reason, str) else ""
  finally:
    err.close()
  try:
    message = json.loads(body)["error"]
    message = message.get("message", message) if isinstance(message, dict) else message
    body = str(message)
  except (ValueError, KeyError, TypeError):
    pass
  return body.strip()[:_ERROR_DETAIL_CHARS]


def _retry_after_s(headers: Any) -> float | None:
  """Seconds from a Retry-After header (delta-seconds or an HTTP date), if any."""
  value = headers.get("Retry-After") if headers is not None else None
  if not value:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    try:
      return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
      return None


class OpenAIClient:
  """Completions and chat completions with n samples, retries and log-probs.

  Args:
    base_url: API root, e.g. "http://localhost:8000/v1" (a bare "http://host:port" gets /v1).
    model: the model name the server expects.
    api_key: bearer token; None reads $OPENAI_API_KEY (local servers often need none).
    timeout_s: per-request socket timeout (connect, and each read).
    max_retries: retries after the first attempt for timeouts, connection errors, 429, 5xx.
    backoff_s: first retry delay; doubles each retry.
    max_backoff_s: cap on one delay, Retry-After included.
    max_concurrency: requests in flight at once (one per prompt).
    sample_api: "chat" or "completions": the endpoint `sample` uses (a prompt becomes one user
      message for chat).
  """

  def __init__(
    self,
    base_url: str,
    *,
    model: str,
    api_key: str | None = None,
    timeout_s: float = 60.0,
    max_retries: int = 4,
    backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    max_concurrency: int = 8,
    sample_api: str = "chat",
  ):
    self.base_url = _normalise_base_url(base_url)
    if not isinstance(model, str) or not model:
      raise ValueError(f"model={model!r} must be a non-empty str")
    if not isinstance(timeout_s, int | float) or not timeout_s > 0:
      raise ValueError(f"timeout_s={timeout_s!r} must be a number > 0")
    for name, value in (("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s)):
      if not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name}={value!r} must be a number >= 0")
    for name, value, low in (
      ("max_retries", max_retries, 0),
      ("max_concurrency", max_concurrency, 1),
    ):
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an int >= {low}")
    if sample_api not in ("chat", "completions"):
      raise ValueError(f"sample_api={sample_api!r} must be 'chat' or 'completions'")
    self.model = model
    self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    self.timeout_s = float(timeout_s)
    self.max_retries = max_retries
    self.backoff_s = float(backoff_s)
    self.max_backoff_s = float(max_backoff_s)
    self.max_concurrency = max_concurrency
    self.sample_api = sample_api
    self._opener = urllib.request.build_opener()

  def __repr__(self) -> str:  # never shows the key
    return f"OpenAIClient({self.base_url!r}, model={self.model!r})"

  # -- public API -------------------------------------------------------------------------------

  def complete(
    self,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 256,
    logprobs: int | None = None,
    stop: str | Sequence[str] | None = None,
    *,
    seeds: Sequence[int] | None = None,
  ) -> list[Completion]:
    """POST /completions for each prompt. Returns one `Completion` (n choices) per prompt.

    logprobs: None, or how many top alternatives the server should consider per token
      (0 asks for the sampled tokens' log-probs only); the result then carries `tokens` and
      `token_logprobs`. seeds: one int per prompt, sent as `seed` (best effort on servers).
    """
    backend.check_sample_args(prompts, n, temperature, max_tokens, length_field="max_tokens")
    if logprobs is not None and (
      isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0
    ):
      raise ValueError(f"logprobs={logprobs!r} must be None or an int >= 0")
    stop = _check_stop(stop)
    seeds = _check_seeds(seeds, len(prompts))
    payloads = []
    for i, prompt in enumerate(prompts):
      payload = {
        "model": self.model,
        "prompt": prompt,
        "n": n,
        "temperature": temperature,
        "max_tokens": max_tokens,
      }
      if logprobs is not None:
        payload["logprobs"] = logprobs
      if stop is not None:
        payload["stop"] = stop
      if seeds is not None:
        payload["seed"] = seeds[i]
      payloads.append(payload)
    parse = lambda url, body: self._parse_completion(url, body, n, logprobs is not None)
    return self._run_all("/completions", payloads, parse)

  def chat(
    self,
    messages_list: Sequence[Sequence[Mapping[str, str]]],
    n: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 256,
    logprobs: bool = False,
    *,
    stop: str | Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
  ) -> list[Completion]:
    """POST /chat/completions for each conversation. Returns one `Completion` per conversation.

    messages_list: conversations, each a list of {"role": ..., "content": ...} dicts.
    logprobs: True to get `tokens` and `token_logprobs` of each choice.
    """
    if isinstance(messages_list, str | Mapping) or not isinstance(messages_list, Sequence):
      raise ValueError(
        f"messages_list must be a list of conversations, got {type(messages_list).__name__}"
      )
    for i, messages in enumerate(messages_list):
      if isinstance(messages, str | Mapping) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(f"messages_list[{i}] must be a non-empty list of message dicts")
      for j, message in enumerate(messages):
        if not isinstance(message, Mapping) or not all(
          isinstance(message.get(field), str) for field in ("role", "content")
        ):
          raise ValueError(
            f"messages_list[{i}][{j}]={message!r} must be a dict with str 'role' and 'content'"
          )
    backend.check_sample_args(
      [""] * len(messages_list), n, temperature, max_tokens, length_field="max_tokens"
    )
    if not isinstance(logprobs, bool):
      raise ValueError(f"logprobs={logprobs!r} must be a bool")
    stop = _check_stop(stop)
    seeds = _check_seeds(seeds, len(messages_list))
    payloads = []
    for i, messages in enumerate(messages_list):
      payload = {
        "model": self.model,
        "messages": [dict(m) for m in messages],
        "n": n,
        "temperature": temperature,
        "max_tokens": max_tokens,
      }
      if logprobs:
        payload["logprobs"] = True
      if stop is not None:
        payload["stop"] = stop
      if seeds is not None:
        payload["seed"] = seeds[i]
      payloads.append(payload)
    parse = lambda url, body: self._parse_chat(url, body, n, logprobs)
    return self._run_all("/chat/completions", payloads, parse)

  def sample(
    self,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int,
    *,
    key: Any | None = None,
    seed: int | None = None,
  ) -> list[list[str]]:
    """`backend.Backend.sample`: [len(prompts)][n] texts from the `sample_api` endpoint."""
    return [list(c.texts) for c in self._sample(prompts, n, temperature, max_new_tokens, key, seed)]

  def sample_with_logprobs(
    self,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int,
    *,
    key: Any | None = None,
    seed: int | None = None,
  ) -> list[list[backend.Sample]]:
    """`backend.LogprobBackend.sample_with_logprobs`: [len(prompts)][n] scored samples."""
    completions = self._sample(
      prompts, n, temperature, max_new_tokens, key, seed, with_logprobs=True
    )
    return [c.samples() for c in completions]

  # -- internals --------------------------------------------------------------------------------

  def _sample(self, prompts, n, temperature, max_new_tokens, key, seed, with_logprobs=False):
    backend.check_sample_args(prompts, n, temperature, max_new_tokens, key, seed)
    seeds = _prompt_seeds(len(prompts), key, seed)
    if self.sample_api == "chat":
      conversations = [[{"role": "user", "content": p}] for p in prompts]
      return self.chat(
        conversations, n, temperature, max_new_tokens, logprobs=with_logprobs, seeds=seeds
      )
    return self.complete(
      prompts, n, temperature, max_new_tokens, logprobs=0 if with_logprobs else None, seeds=seeds
    )

  def _run_all(self, path: str, payloads: list[dict], parse) -> list[Completion]:
    """Posts every payload (concurrently); all parsed results, or the first error raised."""

    def one(i):
      try:
        return self._post(path, payloads[i], parse)
      except OpenAIError as err:
        err.add_note(f"(request {i} of {len(payloads)})")
        raise

    if len(payloads) <= 1 or self.max_concurrency == 1:
      return [one(i) for i in range(len(payloads))]
    workers = min(self.max_concurrency, len(payloads))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      futures = [pool.submit(one, i) for i in range(len(payloads))]
      done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
      failed = [f for f in futures if f in done and f.exception() is not None]
      if failed:
        # Requests not yet started are dropped; the exiting `with` waits for those in flight.
        pool.shutdown(wait=True, cancel_futures=True)
        raise failed[0].exception()
      return [f.result() for f in futures]

  def _post(self, path: str, payload: dict, parse) -> Completion:
    """One POST with retries; returns parse(url, decoded JSON body)."""
    url = self.base_url + path
    body = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if self.api_key:
      headers["Authorization"] = f"Bearer {self.api_key}"
    attempts = 0
    last_error, last_status, retry_after = "", None, None
    while True:
      attempts += 1
      request = urllib.request.Request(url, data=body, headers=headers, method="POST")
      try:
        with self._opener.open(request, timeout=self.timeout_s) as response:
          raw = response.read()
        break
      except urllib.error.HTTPError as err:
        status, detail = err.code, _error_detail(err)
        if status in (401, 403):
          given = (
            "was rejected" if self.api_key else f"is missing (pass api_key or set ${API_KEY_ENV})"
          )
          raise AuthError(
            f"{url}: the API key {given} (HTTP {status}: {detail})",
            url=url,
            status=status,
            attempts=attempts,
          ) from None
        if status != 429 and status < 500:
          raise OpenAIError(
            f"{url} refused the request with HTTP {status}: {detail}",
            url=url,
            status=status,
            attempts=attempts,
          ) from None
        last_error, last_status, retry_after = (
          f"HTTP {status}: {detail}",
          status,
          _retry_after_s(err.headers),
        )
      except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, socket.gaierror):
          # A host name that does not resolve is a typo far more often than a DNS hiccup.
          raise OpenAIError(
            f"cannot resolve the host of {url} ({reason}); check base_url={self.base_url!r}",
            url=url,
            attempts=attempts,
          ) from None
        last_error = _describe_io_error(reason, self.timeout_s)
        last_status, retry_after = None, None
      except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as err:
        last_error = _describe_io_error(err, self.timeout_s)
        last_status, retry_after = None, None
      if attempts > self.max_retries:
        raise ServerUnavailableError(
          f"POST {url} failed after {attempts} attempts; last error: {last_error}",
          url=url,
          status=last_status,
          attempts=attempts,
        )
      delay = self.backoff_s * 2 ** (attempts - 1)
      if retry_after is not None:
        delay = max(delay, retry_after)
      time.sleep(min(delay, self.max_backoff_s))
    try:
      decoded = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
      raise ResponseFormatError(
        f"response from {url} is not valid JSON ({err}): {raw[:200]!r}",
        url=url,
        status=200,
        attempts=attempts,
      ) from None
    try:
      return parse(url, decoded)
    except ResponseFormatError as err:
      err.attempts = attempts
      raise

  def _choices(self, url: str, body: Any, n: int) -> list[dict]:
    """body["choices"] checked to hold n dicts, in `index` order."""
    if isinstance(body, dict) and "choices" not in body and "error" in body:
      raise ResponseFormatError(
        f"response from {url} lacks field choices; it reports an error: {body['error']!r}"[:500],
        url=url,
        status=200,
      )
    choices = _walk(body, ["choices"], url, list)
    if len(choices) != n:
      raise ResponseFormatError(
        f"response from {url} has {len(choices)} choices, expected n={n} "
        "(does the server support n > 1?)",
        url=url,
        status=200,
      )
    for j in range(n):
      _walk(choices, [j], url, dict)
    # Servers list choices in index order, but the API only promises the `index` field.
    if all(isinstance(c.get("index"), int) for c in choices):
      choices = sorted(choices, key=lambda c: c["index"])
    return choices

  def _parse_completion(self, url: str, body: Any, n: int, with_logprobs: bool) -> Completion:
    body = {"choices": self._choices(url, body, n)}
    texts = tuple(_walk(body, ["choices", j, "text"], url, str) for j in range(n))
    tokens = logprobs = None
    if with_logprobs:
      tokens, logprobs = [], []
      for j in range(n):
        path = ["choices", j, "logprobs"]
        num_tokens = len(_walk(body, [*path, "tokens"], url, list))
        num_logprobs = len(_walk(body, [*path, "token_logprobs"], url, list))
        if num_tokens != num_logprobs:
          raise ResponseFormatError(
            f"response from {url}: choices[{j}].logprobs has {num_tokens} tokens but "
            f"{num_logprobs} token_logprobs",
            url=url,
            status=200,
          )
        tokens.append(tuple(_walk(body, [*path, "tokens", t], url, str) for t in range(num_tokens)))
        logprobs.append(
          tuple(
            float(_walk(body, [*path, "token_logprobs", t], url, (int, float)))
            for t in range(num_tokens)
          )
        )
      tokens, logprobs = tuple(tokens), tuple(logprobs)
    reasons = tuple(c.get("finish_reason") for c in body["choices"])
    return Completion(texts, reasons, tokens, logprobs)

  def _parse_chat(self, url: str, body: Any, n: int, with_logprobs: bool) -> Completion:
    body = {"choices": self._choices(url, body, n)}
    texts = tuple(_walk(body, ["choices", j, "message", "content"], url, str) for j in range(n))
    tokens = logprobs = None
    if with_logprobs:
      tokens, logprobs = [], []
      for j in range(n):
        path = ["choices", j, "logprobs", "content"]
        num_tokens = len(_walk(body, path, url, list))
        tokens.append(tuple(_walk(body, [*path, t, "token"], url, str) for t in range(num_tokens)))
        logprobs.append(
          tuple(
            float(_walk(body, [*path, t, "logprob"], url, (int, float))) for t in range(num_tokens)
          )
        )
      tokens, logprobs = tuple(tokens), tuple(logprobs)
    reasons = tuple(c.get("finish_reason") for c in body["choices"])
    return Completion(texts, reasons, tokens, logprobs)


def _describe_io_error(err: BaseException, timeout_s: float) -> str:
  if isinstance(err, TimeoutError):
    return f"timed out after {timeout_s:g} s"
  if isinstance(err, ConnectionRefusedError):
    return "connection refused (is the server running on that port?)"
  return f"{type(err).__name__}: {err}"


def _check_stop(stop: Any) -> str | list[str] | None:
  if stop is None or isinstance(stop, str):
    return stop
  if isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):
    return list(stop)
  raise ValueError(f"stop={stop!r} must be None, a str or a list of str")


def _check_seeds(seeds: Sequence[int] | None, count: int) -> list[int] | None:
  if seeds is None:
    return None
  seeds = list(seeds)
  if len(seeds) != count or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
    raise ValueError(f"seeds={seeds!r} must be {count} ints, one per prompt")
  return seeds


def _prompt_seeds(count: int, key: Any | None, seed: int | None) -> list[int] | None:
  """One 31-bit seed per prompt from `key` or `seed` (None when neither is given).

  Distinct per prompt, so repeated prompts in one call still get different samples.
  """
  if key is None and seed is None:
    return None
  if key is not None:
    import jax  # only here: the client itself needs no JAX
    import jax.numpy as jnp

    seed = int(jax.random.bits(key, (), jnp.uint32))
  rng = random.Random(seed)
  return [rng.getrandbits(31) for _ in range(count)]
