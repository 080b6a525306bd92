"""Python SDK for a Soma server: log in, manage tokens, check health.

    from soma_client import SomaClient
    with SomaClient("https://localhost:8443", verify=False) as soma:
        soma.login("ana", "correct horse battery")
        print(soma.me())

Chat, realtime and memory helpers arrive with those features; for chat, any OpenAI SDK works against
``<base_url>/v1`` with a Soma token as the API key.
"""

from soma_client.client import SomaClient, SomaError

__all__ = ["SomaClient", "SomaError"]
