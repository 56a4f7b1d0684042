"""The OpenAPI 3.1 document served at ``/openapi.json``: every route of the app, by hand.

Kept next to the routes it describes; ``tests/test_openapi.py`` checks that each route of
the app appears here and runs schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .model import ErrorCode, JobState

_STATES = [s.value for s in JobState]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "The body or a cursor is not readable (not JSON, too deep, lone surrogate)",
        401: "Missing or wrong bearer token",
        404: "No such job or video",
        409: "The action is not allowed in the job's current status",
        410: "A single-use link was used already",
        413: "The body is larger than 64 KB",
        422: "A field is missing or wrong; `error.field` names it",
        503: "The store is unreachable; retry after Retry-After seconds",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


_JOB_ID = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["ok", "error"],
        "properties": {
            "ok": {"const": False},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            },
        },
    },
    "IntakeRequest": {
        "type": "object",
        "required": ["sessionId", "taskId", "model"],
        "properties": {
            "sessionId": {"type": "string", "minLength": 1, "maxLength": 256},
            "taskId": {"type": "string", "minLength": 1, "maxLength": 256},
            "model": {"type": "string", "minLength": 1, "maxLength": 256},
            "provider": {
                "type": "string",
                "description": "Adapter name (gemini, replicate, kie-market ...); "
                "default: the first models: pattern that matches the model",
            },
            "attempt": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1},
            "callbackUrl": {"type": "string", "format": "uri"},
            "context": {"type": "object", "description": "At most 16 KB of JSON"},
            "expectPush": {
                "type": "boolean",
                "default": False,
                "description": "The provider pushes to /callbacks/{provider}: poll only every"
                " polling.push_fallback_interval_s as a safety net",
            },
        },
    },
    "GenerateRequest": {
        "type": "object",
        "required": ["sessionId", "model", "prompt"],
        "properties": {
            "sessionId": {"type": "string", "minLength": 1, "maxLength": 256},
            "model": {
                "type": "string",
                "description": "A model the adapter can submit (veo3, veo3_fast, veo3_lite, "
                "sora-2-text-to-video ...); a 422 lists them",
            },
            "provider": {"type": "string", "description": "Adapter name; default: models:"},
            "prompt": {"type": "string", "minLength": 1, "maxLength": 5000},
            "imageUrls": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "aspectRatio": {"type": "string", "description": "One the model offers (16:9 ...)"},
            "durationSeconds": {"type": "integer"},
            "resolution": {"type": "string", "description": "One the model offers (1080p ...)"},
            "count": {
                "type": "integer",
                "minimum": 1,
                "maximum": 4,
                "default": 1,
                "description": "Provider tasks under this one job (videos 0..count-1, one ZIP)",
            },
            "callbackUrl": {"type": "string", "format": "uri"},
            "context": {"type": "object", "description": "At most 16 KB of JSON"},
            "options": {
                "type": "object",
                "description": "Provider-specific fields the adapter declares (Veo: "
                "generationType, enableTranslation, watermark, seeds; Sora: remove_watermark, "
                "character_id_list)",
            },
        },
    },
    "GenerateResponse": {
        "type": "object",
        "required": ["ok", "jobId", "status", "statusUrl"],
        "properties": {
            "ok": {"const": True},
            "jobId": {"type": "string"},
            "status": {"enum": _STATES},
            "statusUrl": {"type": "string"},
            "alreadyKnown": {
                "type": "boolean",
                "description": "true: this Idempotency-Key was seen with this body before",
            },
        },
    },
    "IntakeResponse": {
        "type": "object",
        "required": ["ok", "jobId", "status", "message", "statusUrl"],
        "properties": {
            "ok": {"const": True},
            "jobId": {"type": "string"},
            "status": {"enum": _STATES},
            "message": {"type": "string"},
            "alreadyKnown": {"type": "boolean"},
            "statusUrl": {"type": "string"},
            "callback": {
                "description": "What happened to the posted callbackUrl: a new job's target,"
                " added to a running job, the ended job's final event sent to it, known already,"
                " or no final event (a cancelled job)",
                "enum": [
                    "registered",
                    "added",
                    "final_event_sent",
                    "already_registered",
                    "no_final_event",
                ],
            },
        },
    },
    "JobError": {
        "type": ["object", "null"],
        "properties": {
            "code": {"enum": [c.value for c in ErrorCode]},
            "message": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "VideoMetadata": {
        "type": "object",
        "properties": {
            "size_bytes": {"type": "integer"},
            "duration_s": {"type": "number"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "resolution": {"type": "string"},
            "codec": {"type": "string"},
            "content_type": {"type": "string"},
            "sha256": {"type": "string"},
        },
    },
    "Delivery": {
        "type": "object",
        "properties": {
            "event": {"type": "string"},
            "target": {"type": "string"},
            "webhookId": {"type": "string"},
            "status": {"enum": ["pending", "sent", "failed"]},
            "attempts": {"type": "integer"},
            "lastError": {"type": ["string", "null"]},
            "nextAttemptAt": {"type": ["string", "null"]},
            "sentAt": {"type": ["string", "null"]},
        },
    },
    "JobSummary": {
        "type": "object",
        "required": ["jobId", "status", "model", "attempts", "createdAt"],
        "properties": {
            "jobId": {"type": "string"},
            "sessionId": {"type": "string"},
            "taskId": {"type": ["string", "null"]},
            "taskIds": {"type": "array", "items": {"type": "string"}},
            "retryOf": {"type": ["string", "null"]},
            "attemptNumber": {"type": "integer"},
            "model": {"type": "string"},
            "provider": {"type": "string"},
            "status": {"enum": _STATES},
            "message": {"type": "string"},
            "attempts": {"type": "integer"},
            "createdAt": {"type": "string"},
            "updatedAt": {"type": "string"},
            "finishedAt": {"type": ["string", "null"]},
            "nextPollAt": {"type": ["string", "null"]},
            "error": _ref("JobError"),
            "videoCount": {"type": "integer"},
            "queuePosition": {"type": "integer"},
            "statusUrl": {"type": "string"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["ok", "jobId", "status", "attempts", "videoUrls"],
        "properties": {
            "ok": {"const": True},
            "jobId": {"type": "string"},
            "status": {"enum": _STATES},
            "message": {"type": "string"},
            "attempts": {"type": "integer"},
            "elapsedSeconds": {"type": "number"},
            "expectPush": {"type": "boolean"},
            "error": _ref("JobError"),
            "videoUrls": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "array", "items": _ref("VideoMetadata")},
            "deliveries": {"type": "array", "items": _ref("Delivery")},
            "queuePosition": {"type": "integer"},
            "taskIds": {"type": "array", "items": {"type": "string"}},
            "retryOf": {"type": ["string", "null"]},
            "attemptNumber": {"type": "integer"},
            "action": {
                "enum": ["resubmitted", "requeued"],
                "description": "retry only: a new job and provider task, or the same job "
                "polled again (a job this service did not submit)",
            },
            "hasCallback": {
                "type": "boolean",
                "description": "Whether the job was posted with a callbackUrl (never shown)",
            },
            "callbackUrl": {
                "type": "boolean",
                "deprecated": True,
                "description": "Old name of hasCallback; removed in the next release",
            },
        },
    },
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document; the server URL is the configured public base URL."""
    secured: list[dict[str, list[str]]] = (
        [{"bearer": []}] if settings.server.auth_token is not None else []
    )
    job_ops_errors = _errors(401, 404, 503)
    paths: dict[str, Any] = {
        "/poll-video": {"post": _intake_op("pollVideo")},
        "/webhook/poll-video": {"post": _intake_op("pollVideoWebhookAlias")},
        "/generate": {"post": _generate_op()},
        "/jobs": {
            "get": {
                "operationId": "listJobs",
                "summary": "List jobs, newest first, or grouped as processing/queued/history",
                "parameters": [
                    _query("status", "Comma-separated statuses", {"type": "string"}),
                    _query("sessionId", "Only this session's jobs", {"type": "string"}),
                    _query("model", "Only this model", {"type": "string"}),
                    _query("since", "ISO 8601 time or Unix seconds", {"type": "string"}),
                    _query("cursor", "nextCursor of the previous page", {"type": "string"}),
                    _query("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 200}),
                    _query("group", "true: {processing, queued, history}", {"type": "boolean"}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "ok": {"const": True},
                                "jobs": {"type": "array", "items": _ref("JobSummary")},
                                "nextCursor": {"type": ["string", "null"]},
                                "processing": {"type": "array", "items": _ref("JobSummary")},
                                "queued": {"type": "array", "items": _ref("JobSummary")},
                                "history": {"type": "array", "items": _ref("JobSummary")},
                            },
                        },
                        "A page of jobs",
                    ),
                    **_errors(400, 401, 422, 503),
                },
            }
        },
        "/jobs/{jobId}": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "getJob",
                "summary": "A job's status, attempts, videos, metadata and deliveries",
                "responses": {"200": _json(_ref("Job"), "The job"), **job_ops_errors},
            },
            "delete": {
                "operationId": "deleteJob",
                "summary": "Remove the job's videos and record (idempotent)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"ok": {"const": True}, "deleted": {"type": "boolean"}},
                        },
                        "Deleted, or was already gone (deleted: false)",
                    ),
                    **_errors(401, 503),
                },
            },
        },
        "/jobs/{jobId}/cancel": _action("cancelJob", "Stop polling at once; status cancelled"),
        "/jobs/{jobId}/retry": _action(
            "retryJob",
            "A finished job we submitted is generated again as a new job (retryOf, "
            "attemptNumber); a failed or cancelled poll-only job goes back to queued",
        ),
        "/jobs/{jobId}/links": {
            "parameters": [_JOB_ID],
            "post": {
                "operationId": "createDownloadLinks",
                "summary": "Expiring, optionally single-use links to the ZIP and each video",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "expiresIn": {"type": "integer", "minimum": 60},
                                    "singleUse": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"type": "object"}, "The links"),
                    **_errors(400, 401, 404, 413, 422, 503),
                },
            },
        },
        "/jobs/{jobId}/download.zip": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "downloadZip",
                "summary": "All of the job's videos as one streamed ZIP (token or signed link)",
                "parameters": [
                    _query("expires", "Signed link expiry", {"type": "string"}),
                    _query("sig", "Signed link signature", {"type": "string"}),
                    _query("once", "Single-use nonce", {"type": "string"}),
                ],
                "responses": {
                    "200": {
                        "description": "The ZIP",
                        "content": {
                            "application/zip": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    **_errors(401, 404, 410, 503),
                },
            },
        },
        "/jobs/{jobId}/videos/{index}": {
            "parameters": [
                _JOB_ID,
                {
                    "name": "index",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "get": {
                "operationId": "getVideo",
                "summary": "One stored video (token or signed link); S3 answers a redirect",
                "parameters": [
                    _query("expires", "Signed link expiry", {"type": "string"}),
                    _query("sig", "Signed link signature", {"type": "string"}),
                    _query("once", "Single-use nonce", {"type": "string"}),
                ],
                "responses": {
                    "200": {
                        "description": "The video",
                        "content": {
                            "video/mp4": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "302": {"description": "Redirect to a presigned storage URL"},
                    **_errors(401, 404, 410, 503),
                },
            },
        },
        "/jobs/{jobId}/events": {
            "parameters": [_JOB_ID],
            "get": _sse("jobEvents", "Server-Sent Events for one job"),
        },
        "/events": {"get": _sse("allEvents", "Server-Sent Events for all jobs")},
        "/sessions/{sessionId}": {
            "parameters": [
                {"name": "sessionId", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "put": {
                "operationId": "putSession",
                "summary": "Store a user session (for stores without Redis sessions)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _json({"type": "object"}, "Stored"),
                    **_errors(400, 401, 413, 422, 503),
                },
            },
        },
        "/callbacks/{provider}": {
            "parameters": [
                {
                    "name": "provider",
                    "in": "path",
                    "required": True,
                    "description": "Provider family (kie, replicate, gemini, fal ...) or adapter",
                    "schema": {"type": "string"},
                }
            ],
            "post": {
                "operationId": "providerPush",
                "summary": "A provider's push (KIE callBackUrl, Replicate/Gemini webhook, fal"
                " fal_webhook): a hint that makes the job's status be read again now",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "ok": {"const": True},
                                "challenge": {"type": "string"},
                            },
                        },
                        "Accepted (also for a task we do not know; no job data), or"
                        " MiniMax's URL check echoed",
                    ),
                    **_errors(400, 401, 404, 413, 503),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is alive",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Store, storage and scheduler are working",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "Ready"),
                    "503": _json({"type": "object"}, "Not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text exposition",
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/": {
            "get": {
                "operationId": "dashboard",
                "summary": "The live dashboard (HTML; its data calls use the bearer token)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webhook-poller",
            "version": "0.1.0",
            "description": "Waits for AI video generations, stores the video, tells your "
            "workflow. Errors share one envelope: {ok: false, error: {code, message, field}}.",
        },
        "servers": [{"url": settings.server.base_url()}],
        "security": secured,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _intake_op(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "Accept a provider task to wait for; answers once the job is stored",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("IntakeRequest")},
                "application/x-www-form-urlencoded": {"schema": _ref("IntakeRequest")},
                "multipart/form-data": {"schema": _ref("IntakeRequest")},
            },
        },
        "responses": {
            "200": _json(_ref("IntakeResponse"), "Stored; polling started (or already known)"),
            **_errors(400, 401, 409, 413, 422, 503),
        },
    }


def _generate_op() -> dict[str, Any]:
    return {
        "operationId": "generateVideo",
        "summary": "Check a generation request, store its job, answer; the service submits "
        "it to the provider, polls, stores the video and calls back",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "The same key with the same body gives the same job and never a "
                "second paid submission; with another body it is a 409",
                "schema": {"type": "string", "maxLength": 256},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("GenerateRequest")},
                "application/x-www-form-urlencoded": {"schema": _ref("GenerateRequest")},
            },
        },
        "responses": {
            "200": _json(_ref("GenerateResponse"), "Stored as submitting (or already known)"),
            **_errors(400, 401, 409, 413, 422, 503),
        },
    }


def _action(operation_id: str, summary: str) -> dict[str, Any]:
    return {
        "parameters": [_JOB_ID],
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "responses": {
                "200": _json(_ref("Job"), "The job after the action"),
                **_errors(401, 404, 409, 503),
            },
        },
    }


def _sse(operation_id: str, summary: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary + ": `snapshot` first, then `job` and `deleted` events",
        "responses": {
            "200": {
                "description": "An event stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors(401, 404, 503),
        },
    }
