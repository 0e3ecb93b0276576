"""The gateway's own OpenAPI description (served at /openapi.json, fuzzed in tests/gateway/test_fuzz.py)."""

from __future__ import annotations

from typing import Any

from app.gateway.request_ctx import JSON
from app.gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ResponsesRequest

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def openapi_spec() -> dict[str, Any]:
    """The gateway's own OpenAPI 3.1 description: the generation, embedding and responses routes
    (request bodies from the pydantic models the gateway validates with), the model list, health."""
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    err = {"description": "OpenAI-shaped error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}
    errors = {str(c): err for c in (400, 401, 403, 404, 413, 429, 502, 503, 504)}
    paths: dict[str, Any] = {}
    for path, model, op in (
        ("/v1/chat/completions", ChatCompletionRequest, "createChatCompletion"),
        ("/v1/completions", CompletionRequest, "createCompletion"),
        ("/v1/embeddings", EmbeddingRequest, "createEmbedding"),
        ("/v1/responses", ResponsesRequest, "createResponse"),
    ):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(js.pop("$defs", {}))
        schemas[model.__name__] = js
        paths[path] = {
            "post": {
                "operationId": op,
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
                },
                "responses": {
                    "200": {
                        "description": "The completion (JSON), or an SSE stream when `stream` is true",
                        "content": {
                            JSON: {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **errors,
                },
            }
        }
    listing = {"200": {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}, **errors}
    paths["/v1/models"] = {"get": {"operationId": "listModels", "security": [{"bearer": []}], "responses": listing}}
    paths["/v1/models/{model_id}"] = {
        "get": {
            "operationId": "retrieveModel",
            "security": [{"bearer": []}],
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": listing,
        }
    }
    # /readyz and /metrics live on the internal port (app/gateway/serving.py), not in this API.
    paths["/healthz"] = {"get": {"operationId": "healthz", "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "LLM gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
