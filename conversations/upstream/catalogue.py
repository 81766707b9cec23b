"""The models a model server offers (`GET /models`), for the model picker."""

from __future__ import annotations

import httpx

from conversations.upstream import netguard
from conversations.upstream.client import Endpoint, UpstreamError, blocked_error, client, error_from_response


async def list_models(endpoint: Endpoint) -> list[str]:
    """The model ids the server offers, for the model picker."""
    endpoint.trusted()
    try:
        response = await client().get(f"{endpoint.base_url}/models", headers=endpoint.headers())
    except netguard.Blocked as blocked:
        raise blocked_error(blocked) from None
    except httpx.HTTPError:
        raise UpstreamError("upstream_unavailable", "models") from None
    if response.status_code != 200:
        raise error_from_response(response, endpoint)
    try:
        data = response.json()["data"]
        return sorted(str(item["id"]) for item in data if isinstance(item, dict) and "id" in item)
    except (ValueError, KeyError, TypeError):
        raise UpstreamError("upstream_error", "model_list") from None
