"""agents.chat_model's OpenAI-compatible endpoint client: replies of the wrong shape raise its documented
RuntimeError (naming the endpoint), like network failures do."""

import httpx
import pytest

from agents.chat_model import ChatEndpoint, http_policy_config


@pytest.mark.parametrize("body", [b'{"choices": []}', b"null", b'{"choices": [{"message": null}]}',
                                  b'{"choices": [{"message": {"content": "hi"}}], "usage": [1, 2]}'])
def test_malformed_replies_raise_the_documented_error(body):
  url = "http://endpoint.test/v1"
  endpoint = ChatEndpoint(http_policy_config(url=url, retries=1, backoff_s=0.0))
  endpoint._client.close()
  endpoint._client = httpx.Client(base_url=url, transport=httpx.MockTransport(
      lambda request: httpx.Response(200, content=body, headers={"Content-Type": "application/json"})))
  with pytest.raises(RuntimeError, match=f"chat endpoint {url} failed: the reply is not a chat completion"):
    endpoint.complete([{"role": "user", "content": "hi"}])
