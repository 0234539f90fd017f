"""Fixtures the agents' tests share: a local OpenAI-compatible chat endpoint (loopback only) for the HTTP chat
policies of the VehicleWorld and tool-environment evaluations (`agents.chat_model.ChatEndpoint`)."""

import http.server
import json
import threading
import types

import pytest


@pytest.fixture
def fake_chat_endpoint():
  """A `/v1/chat/completions` server on 127.0.0.1 answering every request with `endpoint.reply` (default
  "Done.") and usage 111 prompt / 2 completion tokens. Yields a namespace: url (".../v1"), reply (settable), seen
  (a list of (path, Authorization header, JSON body) per request)."""
  endpoint = types.SimpleNamespace(url="", reply="Done.", seen=[])

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      endpoint.seen.append((self.path, self.headers.get("Authorization"), body))
      data = json.dumps({"choices": [{"message": {"role": "assistant", "content": endpoint.reply}}],
                         "usage": {"prompt_tokens": 111, "completion_tokens": 2}}).encode()
      self.send_response(200)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
  try:
    yield endpoint
  finally:
    server.shutdown()
    server.server_close()
