"""The OpenAPI 3.1 document served at ``/openapi.json``, built from :mod:`.shapes`.

Components are the shapes' ``model_json_schema`` (requests as validated, answers as
serialized); the event notifiers send is under ``webhooks``; the path table below says per
route which shapes go in and out. Limits (body and ``context`` sizes) come from the settings.
``tests/test_openapi.py`` checks every route appears here and runs schemathesis against it;
``tests/test_openapi_conformance.py`` validates real answers and events against it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from . import shapes
from .config import Settings

_REF = "#/components/schemas/{model}"

_ERROR_TEXT = {
    400: "The body or a cursor is not readable (not JSON, too deep, lone surrogate)",
    401: "Missing or wrong bearer token",
    404: "No such job or video",
    409: "The action is not allowed in the job's current status",
    410: "A single-use link was used already",
    413: "The body is larger than {max_body} bytes",
    422: "A field is missing or wrong; `error.field` names it",
    503: "The store is unreachable; retry after Retry-After seconds",
}
_BINARY = {"type": "string", "format": "binary"}
_TEXT = {"type": "string"}
_SIGNED_LINK = [
    ("expires", "Signed link expiry"),
    ("sig", "Signed link signature"),
    ("once", "Single-use nonce"),
]
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key with the same body gives the same job and never a second "
    "paid submission; with another body it is a 409",
    "schema": {"type": "string", "maxLength": shapes.MAX_ID_LEN},
}

# path -> method -> (operationId, summary, request shape, answer shape, error codes, extras)
# A shape is a component name, a media type -> schema mapping, or None (no body).
_PATHS: dict[str, dict[str, tuple[str, str, Any, Any, tuple[int, ...], dict[str, Any]]]] = {
    "/poll-video": {
        "post": (
            "pollVideo",
            "Accept a provider task to wait for; answers once the job is stored",
            "IntakeRequest+forms",
            "IntakeResponse",
            (400, 401, 409, 413, 422, 503),
            {},
        )
    },
    "/webhook/poll-video": {
        "post": (
            "pollVideoWebhookAlias",
            "Accept a provider task to wait for (alias of /poll-video)",
            "IntakeRequest+forms",
            "IntakeResponse",
            (400, 401, 409, 413, 422, 503),
            {},
        )
    },
    "/generate": {
        "post": (
            "generateVideo",
            "Check a generation request, store its job, answer; the service submits it to the "
            "provider, polls, stores the video and calls back",
            "GenerateRequest",
            "GenerateResponse",
            (400, 401, 409, 413, 422, 503),
            {"parameters": [_IDEMPOTENCY]},
        )
    },
    "/jobs": {
        "get": (
            "listJobs",
            "List jobs, newest first, or grouped as processing/queued/history",
            None,
            {"anyOf": [{"$ref": "JobPage"}, {"$ref": "JobGroups"}]},
            (400, 401, 422, 503),
            {
                "parameters": [
                    ("status", "Comma-separated statuses", _TEXT),
                    ("sessionId", "Only this session's jobs", _TEXT),
                    ("model", "Only this model", _TEXT),
                    ("since", "ISO 8601 time or Unix seconds", _TEXT),
                    ("cursor", "nextCursor of the previous page", _TEXT),
                    ("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 200}),
                    ("group", "true: {processing, queued, history}", {"type": "boolean"}),
                ]
            },
        )
    },
    "/jobs/{jobId}": {
        "get": (
            "getJob",
            "A job's status, attempts, videos, metadata and deliveries",
            None,
            "Job",
            (401, 404, 503),
            {},
        ),
        "delete": (
            "deleteJob",
            "Remove the job's videos and record (idempotent; deleted: false if already gone)",
            None,
            "Deleted",
            (401, 503),
            {},
        ),
    },
    "/jobs/{jobId}/cancel": {
        "post": (
            "cancelJob",
            "Stop polling at once; status cancelled",
            None,
            "Job",
            (401, 404, 409, 503),
            {},
        )
    },
    "/jobs/{jobId}/retry": {
        "post": (
            "retryJob",
            "A finished job we submitted is generated again as a new job (retryOf, "
            "attemptNumber); a failed or cancelled poll-only job goes back to queued",
            None,
            "Job",
            (401, 404, 409, 503),
            {},
        )
    },
    "/jobs/{jobId}/extend": {
        "post": (
            "extendJob",
            "A new job extending a succeeded KIE Veo video (parentJobId), delivered to the "
            "parent's session, context and callbacks",
            "ExtendRequest",
            "Job",
            (400, 401, 404, 409, 413, 422, 503),
            {"parameters": [_IDEMPOTENCY]},
        )
    },
    "/jobs/{jobId}/upscale": {
        "post": (
            "upscaleJob",
            "A new job fetching a succeeded KIE Veo video at 1080p or 4K (parentJobId), "
            "polled at its own cadence",
            "UpscaleRequest",
            "Job",
            (400, 401, 404, 409, 413, 422, 503),
            {"parameters": [_IDEMPOTENCY]},
        )
    },
    "/jobs/{jobId}/links": {
        "post": (
            "createDownloadLinks",
            "Expiring, optionally single-use links to the ZIP and each video",
            "LinksRequest?",
            "Links",
            (400, 401, 404, 413, 422, 503),
            {},
        )
    },
    "/jobs/{jobId}/download.zip": {
        "get": (
            "downloadZip",
            "All of the job's videos as one streamed ZIP (token or signed link)",
            None,
            {"application/zip": _BINARY},
            (401, 404, 410, 503),
            {"parameters": _SIGNED_LINK},
        )
    },
    "/jobs/{jobId}/videos/{index}": {
        "get": (
            "getVideo",
            "One stored video (token or signed link); S3 answers a redirect",
            None,
            {"video/mp4": _BINARY},
            (401, 404, 410, 503),
            {"parameters": _SIGNED_LINK, "redirect": True},
        )
    },
    "/jobs/{jobId}/events": {
        "get": (
            "jobEvents",
            "Server-Sent Events for one job: `snapshot` first, then `job` and `deleted` events",
            None,
            {"text/event-stream": _TEXT},
            (401, 404, 503),
            {},
        )
    },
    "/events": {
        "get": (
            "allEvents",
            "Server-Sent Events for all jobs: `snapshot` first, then `job` and `deleted` events",
            None,
            {"text/event-stream": _TEXT},
            (401, 404, 503),
            {},
        )
    },
    "/sessions/{sessionId}": {
        "put": (
            "putSession",
            "Store a user session (for stores without Redis sessions)",
            {"application/json": {"type": "object"}},
            "SessionStored",
            (400, 401, 413, 422, 503),
            {},
        )
    },
    "/callbacks/{provider}": {
        "post": (
            "providerPush",
            "A provider's push (KIE callBackUrl, Replicate/Gemini webhook, fal fal_webhook): a "
            "hint that makes the job's status be read again now; the same answer for a task "
            "we do not know (no job data), or MiniMax's URL check echoed",
            {"application/json": {"type": "object"}},
            "PushAccepted",
            (400, 401, 404, 413, 503),
            {"public": True},
        )
    },
    "/telegram/webhook": {
        "post": (
            "telegramWebhook",
            "Telegram button presses (Bot API updates), verified by "
            "X-Telegram-Bot-Api-Secret-Token = the telegram notifier's webhook_secret",
            {"application/json": {"type": "object"}},
            "TelegramHandled",
            (400, 401, 413, 503),
            {
                "public": True,
                "headers": [("X-Telegram-Bot-Api-Secret-Token", "The notifier's secret")],
            },
        )
    },
    "/healthz": {"get": ("healthz", "The process is alive", None, "Health", (), {"public": True})},
    "/readyz": {
        "get": (
            "readyz",
            "Store, storage and scheduler are working (503 with the same body when not)",
            None,
            "Readiness",
            (),
            {"public": True, "not_ready": True},
        )
    },
    "/metrics": {
        "get": (
            "metrics",
            "Prometheus text exposition",
            None,
            {"text/plain": _TEXT},
            (401, 503),
            {},
        )
    },
    "/openapi.json": {
        "get": (
            "openapi",
            "This document",
            None,
            {"application/json": {"type": "object"}},
            (),
            {"public": True},
        )
    },
    "/": {
        "get": (
            "dashboard",
            "The live dashboard (HTML; its data calls use the bearer token)",
            None,
            {"text/html": _TEXT},
            (),
            {"public": True},
        )
    },
}

_PATH_PARAMS = {
    "jobId": {"type": "string"},
    "index": {"type": "integer", "minimum": 0},
    "sessionId": {"type": "string"},
    "provider": {"type": "string"},
}


@functools.cache
def _components() -> dict[str, Any]:
    """``model_json_schema`` of every shape: requests as validated, answers as serialized."""
    inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = []
    for shape in shapes.COMPONENTS:
        mode: JsonSchemaMode = "validation" if issubclass(shape, BaseModel) else "serialization"
        inputs.append((shape.__name__, mode, TypeAdapter(shape)))
    _, defs = TypeAdapter.json_schemas(inputs, ref_template=_REF)
    schemas: dict[str, Any] = defs["$defs"]
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _content(shape: Any) -> dict[str, Any]:
    if isinstance(shape, str):
        name = shape.rstrip("?").removesuffix("+forms")
        media = ["application/json"]
        if shape.endswith("+forms"):
            media += ["application/x-www-form-urlencoded", "multipart/form-data"]
        return {m: {"schema": _ref(name)} for m in media}
    if "anyOf" in shape:
        return {
            "application/json": {"schema": {"anyOf": [_ref(s["$ref"]) for s in shape["anyOf"]]}}
        }
    return {media: {"schema": schema} for media, schema in shape.items()}


def _parameters(path: str, extras: dict[str, Any]) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_PARAMS[name]}
        for name in _PATH_PARAMS
        if "{" + name + "}" in path
    ]
    for item in extras.get("parameters", ()):
        if isinstance(item, dict):
            params.append(item)
        else:
            name, description, *schema = item
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": description,
                    "schema": schema[0] if schema else _TEXT,
                }
            )
    for name, description in extras.get("headers", ()):
        params.append(
            {"name": name, "in": "header", "required": True, "description": description}
            | {"schema": _TEXT}
        )
    return params


def _operation(path: str, spec: tuple[Any, ...], max_body: int) -> dict[str, Any]:
    operation_id, summary, request, answer, errors, extras = spec
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if extras.get("public"):
        op["security"] = []
    params = _parameters(path, extras)
    if params:
        op["parameters"] = params
    if request is not None:
        optional = isinstance(request, str) and request.endswith("?")
        op["requestBody"] = {"required": not optional, "content": _content(request)}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": _content(answer)}}
    if extras.get("redirect"):
        responses["302"] = {"description": "Redirect to a presigned storage URL"}
    if extras.get("not_ready"):
        responses["503"] = {"description": "Not ready", "content": _content(answer)}
    for code in errors:
        text = _ERROR_TEXT[code].format(max_body=max_body)
        responses[str(code)] = {"description": text, "content": _content("Error")}
    op["responses"] = responses
    return op


def _event_webhook() -> dict[str, Any]:
    headers = [
        ("webhook-id", "Stable per job run, event and target: drop repeats by it"),
        ("webhook-timestamp", "Unix seconds"),
        ("webhook-signature", "Standard Webhooks signature (v1,<base64 HMAC-SHA256>)"),
    ]
    return {
        "post": {
            "operationId": "videoEvent",
            "summary": "What each callbackUrl and webhook notifier receives: video.succeeded, "
            "video.failed, video.timed_out, video.delayed, video.publish_requested",
            "parameters": [
                {"name": n, "in": "header", "required": True, "description": d, "schema": _TEXT}
                for n, d in headers
            ],
            "requestBody": {"required": True, "content": _content("VideoEvent")},
            "responses": {
                "2XX": {"description": "Received; anything else is retried on callbacks.schedule_s"}
            },
        }
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document; the server URL is the configured public base URL."""
    server = settings.server
    schemas = copy.deepcopy(_components())
    context = f"At most {server.max_context_bytes} bytes of JSON"
    for name in ("IntakeRequest", "GenerateRequest"):
        schemas[name]["properties"]["context"]["description"] = context
    paths = {
        path: {
            method: _operation(path, spec, server.max_body_bytes) for method, spec in ops.items()
        }
        for path, ops in _PATHS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webhook-poller",
            "version": "0.1.0",
            "description": "Waits for AI video generations, stores the video, tells your "
            "workflow. Errors share one envelope: {ok: false, error: {code, message, field}}.",
        },
        "servers": [{"url": server.base_url()}],
        "security": [{"bearer": []}] if server.auth_token is not None else [],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
        "webhooks": {"videoEvent": _event_webhook()},
    }
