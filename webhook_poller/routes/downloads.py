"""Download routes: a job's videos, its ZIP, and the signed links to both.

The video and ZIP routes are ``signed``: a caller holding a link made by ``/links`` needs
no token; the handler verifies the signature (and spends a single-use link once). A link
that does not verify falls back to the token for a video, and is refused for a ZIP.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from .. import downloads, inputs
from ..errors import NotFound, RequestRejected, Unauthorized
from ..interfaces import HasLocalPath
from . import Auth, Endpoint
from .base import ApiBase, _int_param
from .gate import require_token


def endpoints(api: DownloadRoutes) -> list[Endpoint]:
    """The ``/links`` body is small and optional: ``server.max_body_bytes`` at most."""
    return [
        Endpoint("/jobs/{job_id}/videos/{index}", api.video, ("GET", "HEAD"), auth=Auth.SIGNED),
        Endpoint("/jobs/{job_id}/download.zip", api.download_zip, ("GET",), auth=Auth.SIGNED),
        Endpoint("/jobs/{job_id}/links", api.make_links, ("POST",)),
    ]


class DownloadRoutes(ApiBase):
    """Handlers of the downloads group."""

    async def video(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            index = inputs.client_int(
                request.path_params["index"], "index", default=-1, low=0, high=10_000
            )
        except RequestRejected:
            raise NotFound("no such video for this job") from None
        svc = self.svc
        assert svc.links is not None
        q = request.query_params
        nonce = q.get("once")
        if svc.links.verify(job_id, index, q.get("expires"), q.get("sig"), nonce=nonce):
            if nonce and request.method != "HEAD":
                await self._use_once(f"video:{nonce}", str(q.get("expires")))
        else:
            require_token(request)
        job = await self.get_job(job_id)
        video = next((v for v in job.videos if v.index == index), None)
        if video is None:
            raise NotFound("no such video for this job")
        filename = f"{job.id}-{index}.mp4"
        content_type = video.metadata.content_type or "video/mp4"
        if isinstance(svc.blobs, HasLocalPath):
            path = svc.blobs.local_path(video.key)
            if not path.is_file():
                raise NotFound("the video file is gone")
            return FileResponse(
                path, media_type=content_type, filename=filename, content_disposition_type="inline"
            )
        url = await svc.blobs.url_for(video.key, expires_s=300, filename=filename)
        if url is None:
            raise NotFound("the video cannot be served")
        return RedirectResponse(url, status_code=302)

    async def download_zip(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        svc = self.svc
        assert svc.links is not None
        q = request.query_params
        if q.get("sig"):
            if not svc.links.verify_path(
                request.url.path, q.get("expires"), q.get("sig"), q.get("once")
            ):
                raise Unauthorized("the download link is invalid or has expired")
            nonce = q.get("once")
            if nonce:
                await self._use_once(f"zip:{nonce}", q["expires"])
        job = await self.get_job(job_id)
        if not job.videos:
            raise NotFound("this job has no stored videos yet")
        return StreamingResponse(
            downloads.zip_stream(svc, job),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"'},
        )

    async def make_links(self, request: Request) -> Response:
        """Expiring (optionally single-use) links to a job's ZIP and videos."""
        job = await self.get_job(request.path_params["job_id"])
        # the body is optional here; when there is one it is read with the limit, never whole
        data = await self.read_object(request) if _has_body(request) else {}
        expires_s = _int_param(
            data.get("expiresIn"),
            "expiresIn",
            default=3600,
            low=60,
            high=self.settings.storage.link_expiry_s,
        )
        single_use = data.get("singleUse", False)
        if not isinstance(single_use, bool):
            raise RequestRejected("singleUse must be true or false", field="singleUse")
        svc = self.svc
        assert svc.links is not None
        path = f"/jobs/{quote(job.id)}/download.zip"
        return JSONResponse(
            {
                "ok": True,
                "jobId": job.id,
                "zipUrl": svc.links.path_url(path, expires_s, single_use=single_use),
                "videoUrls": [
                    svc.links.video_url(job.id, v.index, expires_s, single_use=single_use)
                    for v in job.videos
                ],
                "expiresIn": expires_s,
                "singleUse": single_use,
            }
        )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers
