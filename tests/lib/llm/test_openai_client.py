"""OpenAIClient against a real HTTP server on 127.0.0.1 that misbehaves on request."""

import http.server
import json
import socket
import threading
import time

import jax
import pytest

from jaxsys.lib.llm import backend
from jaxsys.lib.llm.openai_client import (
  AuthError,
  OpenAIClient,
  OpenAIError,
  ResponseFormatError,
  ServerUnavailableError,
)


def _good_answer(path, payload):
  """A well-formed response: choice j of prompt p says f"{p}|{j}"; choices listed in reverse."""
  choices = []
  for j in range(payload["n"]):
    if path.endswith("/chat/completions"):
      said = payload["messages"][-1]["content"]
      choice = {"index": j, "message": {"role": "assistant", "content": f"{said}|{j}"}}
      if payload.get("logprobs"):
        tokens = [{"token": said, "logprob": -0.5 * (j + 1)}, {"token": f"|{j}", "logprob": -0.25}]
        choice["logprobs"] = {"content": tokens}
    else:
      said = payload["prompt"]
      choice = {"index": j, "text": f"{said}|{j}", "logprobs": None}
      if "logprobs" in payload:
        choice["logprobs"] = {"tokens": [said, f"|{j}"], "token_logprobs": [-0.5 * (j + 1), -0.25]}
    choices.append({**choice, "finish_reason": "length"})
  return 200, {"id": "cmpl-1", "model": payload["model"], "choices": choices[::-1]}


class _FakeServer:
  """What the handler answers (`respond`) and what it was sent (`requests`)."""

  def __init__(self):
    self.requests = []  # (path, headers, payload) per request received
    self.lock = threading.Lock()
    self.closing = threading.Event()  # cuts a deliberate sleep short at teardown
    # respond(path, payload, attempt) -> (status, body) or (status, body, headers, delay_s)
    self.respond = lambda path, payload, attempt: _good_answer(path, payload)
    self.url = ""


class _Handler(http.server.BaseHTTPRequestHandler):
  def do_POST(self):
    fake = self.server.fake
    payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    with fake.lock:
      fake.requests.append((self.path, dict(self.headers), payload))
      attempt = len(fake.requests)
    status, body, headers, delay_s = (*fake.respond(self.path, payload, attempt), {}, 0.0)[:4]
    if delay_s:
      fake.closing.wait(delay_s)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    self.send_response(status)
    for name, value in {"Content-Type": "application/json", **headers}.items():
      self.send_header(name, value)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.fixture
def server():
  fake = _FakeServer()
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  httpd.daemon_threads = True
  httpd.block_on_close = False
  httpd.handle_error = lambda request, address: None  # the client hung up on a slow answer
  httpd.fake = fake
  thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
  thread.start()
  fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
  yield fake
  fake.closing.set()
  httpd.shutdown()
  httpd.server_close()
  thread.join()


def _client(url, **overrides):
  settings = dict(model="test-model", api_key="sk-test", timeout_s=2.0, max_retries=2)
  return OpenAIClient(url, **{**settings, "backoff_s": 0.001, **overrides})


def test_complete_returns_n_choices_in_order_with_logprobs(server):
  out = _client(server.url).complete(
    ["p0", "p1"], n=3, temperature=0.5, max_tokens=7, logprobs=2, stop=["\n"]
  )
  assert [c.texts for c in out] == [("p0|0", "p0|1", "p0|2"), ("p1|0", "p1|1", "p1|2")]
  assert out[1].tokens == (("p1", "|0"), ("p1", "|1"), ("p1", "|2"))
  assert out[1].token_logprobs == ((-0.5, -0.25), (-1.0, -0.25), (-1.5, -0.25))
  assert out[0].finish_reasons == ("length",) * 3
  assert out[0].samples()[2].logprob == pytest.approx(-1.75)
  sent = sorted(server.requests, key=lambda r: r[2]["prompt"])
  path, headers, payload = sent[0]
  assert path == "/v1/completions" and headers["Authorization"] == "Bearer sk-test"
  assert payload == {
    "model": "test-model",
    "prompt": "p0",
    "n": 3,
    "temperature": 0.5,
    "max_tokens": 7,
    "logprobs": 2,
    "stop": ["\n"],
  }
  plain = _client(server.url).complete(["p"], n=2)[0]
  assert plain.token_logprobs is None and "logprobs" not in server.requests[-1][2]


def test_chat_returns_texts_and_logprobs(server):
  conversations = [
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "bye"}],
  ]
  out = _client(server.url).chat(conversations, n=2, temperature=0.0, max_tokens=5, logprobs=True)
  assert [c.texts for c in out] == [("hi|0", "hi|1"), ("bye|0", "bye|1")]
  assert out[0].token_logprobs == ((-0.5, -0.25), (-1.0, -0.25))
  paths = {r[0] for r in server.requests}
  assert paths == {"/v1/chat/completions"}
  sent = next(r[2] for r in server.requests if r[2]["messages"][-1]["content"] == "hi")
  assert sent["messages"] == conversations[0] and sent["logprobs"] is True


def test_backend_protocol_and_seeds(server, monkeypatch):
  monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
  client = OpenAIClient(server.url, model="m", backoff_s=0.001)
  assert isinstance(client, backend.Backend) and isinstance(client, backend.LogprobBackend)
  texts = client.sample(["q", "q"], n=2, temperature=1.0, max_new_tokens=4, seed=7)
  assert texts == [["q|0", "q|1"], ["q|0", "q|1"]]
  assert server.requests[0][1]["Authorization"] == "Bearer sk-from-env"
  seeds = sorted(r[2]["seed"] for r in server.requests)
  assert seeds[0] != seeds[1]  # repeated prompts still get different samples
  client.sample(["q", "q"], n=2, temperature=1.0, max_new_tokens=4, seed=7)
  assert sorted(r[2]["seed"] for r in server.requests[2:]) == seeds
  scored = client.sample_with_logprobs(
    ["z"], n=1, temperature=1.0, max_new_tokens=4, key=jax.random.key(0)
  )
  assert scored[0][0] == backend.Sample("z|0", ("z", "|0"), (-0.5, -0.25), "length")
  assert isinstance(server.requests[-1][2]["seed"], int)
  completions = _client(server.url, sample_api="completions")
  assert completions.sample(["c"], 1, 0.0, 3) == [["c|0"]]
  assert server.requests[-1][0] == "/v1/completions" and "seed" not in server.requests[-1][2]


def test_timeout_is_retried_then_reported(server):
  server.respond = lambda path, payload, attempt: (200, {}, {}, 2.0)
  client = _client(server.url, timeout_s=0.05, max_retries=1)
  start = time.perf_counter()
  with pytest.raises(ServerUnavailableError, match="after 2 attempts.*timed out after 0.05 s"):
    client.complete(["p"])
  assert time.perf_counter() - start < 1.0
  assert len(server.requests) == 2


def test_500_then_success_retries(server):
  def flaky(path, payload, attempt):
    return (
      (500, {"error": {"message": "overloaded"}}) if attempt <= 2 else _good_answer(path, payload)
    )

  server.respond = flaky
  out = _client(server.url, max_retries=3).complete(["p"], n=2)
  assert out[0].texts == ("p|0", "p|1")
  assert len(server.requests) == 3


def test_always_500_fails_after_bounded_retries(server):
  server.respond = lambda path, payload, attempt: (503, {"error": {"message": "down"}})
  with pytest.raises(ServerUnavailableError, match="after 3 attempts.*HTTP 503: down") as info:
    _client(server.url, max_retries=2).chat([[{"role": "user", "content": "x"}]])
  assert info.value.status == 503 and info.value.attempts == 3
  assert len(server.requests) == 3


def test_429_is_retried_but_other_4xx_is_not(server):
  server.respond = lambda path, payload, attempt: (
    (429, {"error": "slow down"}, {"Retry-After": "0"}, 0.0)
    if attempt == 1
    else _good_answer(path, payload)
  )
  assert _client(server.url).complete(["p"])[0].texts == ("p|0",)
  assert len(server.requests) == 2
  server.respond = lambda path, payload, attempt: (400, {"error": {"message": "bad max_tokens"}})
  with pytest.raises(OpenAIError, match="HTTP 400: bad max_tokens") as info:
    _client(server.url).complete(["p"])
  assert info.value.attempts == 1 and len(server.requests) == 3


def test_malformed_json_and_missing_fields_are_named(server):
  server.respond = lambda path, payload, attempt: (200, b"<html>not json")
  with pytest.raises(ResponseFormatError, match="not valid JSON"):
    _client(server.url).complete(["p"])
  assert len(server.requests) == 1  # a server that answers garbage is not retried

  def drop(field):
    def respond(path, payload, attempt):
      status, body = _good_answer(path, payload)
      del body["choices"][0][field]  # choices are listed in reverse: this is index n - 1
      return status, body

    return respond

  server.respond = drop("text")
  with pytest.raises(ResponseFormatError, match=r"lacks field choices\[1\]\.text"):
    _client(server.url).complete(["p"], n=2)
  server.respond = drop("logprobs")
  with pytest.raises(ResponseFormatError, match=r"lacks field choices\[1\]\.logprobs"):
    _client(server.url).complete(["p"], n=2, logprobs=0)
  server.respond = drop("message")
  with pytest.raises(ResponseFormatError, match=r"lacks field choices\[0\]\.message"):
    _client(server.url).chat([[{"role": "user", "content": "x"}]])
  server.respond = lambda path, payload, attempt: _good_answer(path, {**payload, "n": 1})
  with pytest.raises(ResponseFormatError, match="1 choices, expected n=3"):
    _client(server.url).complete(["p"], n=3)


def test_rejected_or_missing_key_is_reported(server, monkeypatch):
  server.respond = lambda path, payload, attempt: (401, {"error": {"message": "invalid key"}})
  with pytest.raises(AuthError, match="API key was rejected.*HTTP 401: invalid key"):
    _client(server.url).complete(["p"])
  assert len(server.requests) == 1
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  with pytest.raises(AuthError, match="API key is missing"):
    _client(server.url, api_key=None).complete(["p"])
  assert "Authorization" not in server.requests[-1][1]


def test_one_failed_prompt_fails_the_whole_call(server):
  server.respond = lambda path, payload, attempt: (
    (400, {"error": "no"}) if payload["prompt"] == "bad" else _good_answer(path, payload)
  )
  with pytest.raises(OpenAIError, match="HTTP 400") as info:
    _client(server.url).complete(["a", "bad", "c", "d"], n=2)
  assert "request 1 of 4" in "".join(info.value.__notes__)


def test_connection_refused_names_the_url():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
  url = f"http://127.0.0.1:{port}/v1"
  with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port}.*refused") as info:
    _client(url, max_retries=1).complete(["p"])
  assert info.value.attempts == 2 and info.value.status is None


def test_bad_arguments_raise_before_any_request(server):
  client = _client(server.url)
  for call, field in [
    (lambda: client.complete("one string"), "prompts"),
    (lambda: client.complete(["p"], n=0), "n=0"),
    (lambda: client.complete(["p"], temperature=-1.0), "temperature=-1.0"),
    (lambda: client.complete(["p"], max_tokens=0), "max_tokens=0"),
    (lambda: client.sample(["p"], 1, 1.0, 0), "max_new_tokens=0"),
    (lambda: client.complete(["p"], logprobs=-1), "logprobs=-1"),
    (lambda: client.complete(["p"], stop=3), "stop=3"),
    (lambda: client.chat([[{"role": "user"}]]), r"messages_list\[0\]\[0\]"),
    (lambda: client.sample(["p"], 1, 1.0, 4, key=jax.random.key(0), seed=1), "key or seed"),
  ]:
    with pytest.raises(ValueError, match=field):
      call()
  assert server.requests == []
  for url in ["localhost:8000", "ftp://h/v1", "http://h:99999/v1", "http://h/v1/completions"]:
    with pytest.raises(ValueError, match="base_url"):
      OpenAIClient(url, model="m")
  assert OpenAIClient("http://h:8000/", model="m").base_url == "http://h:8000/v1"
  assert "sk-test" not in repr(client)
