"""Every error in OpenAI's shape: APIError as raised, invalid bodies 400, unknown routes and methods
as Starlette answers them, anything else 500."""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
from fastapi import Request  # imported only by create_app: the `serve` extra (fastapi, uvicorn)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rmt.serving.protocol import APIError, _validation_message


def register_error_handlers(app) -> None:
    @app.exception_handler(APIError)
    def _api_error(request: Request, exc: APIError):
        return JSONResponse(status_code=exc.status, content=exc.body())

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc.errors())
        return JSONResponse(status_code=400, content=APIError(400, message, "invalid_request", param).body())

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        type_ = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return JSONResponse(status_code=exc.status_code, content=APIError(exc.status_code, message, code, None, type_).body())

    @app.exception_handler(Exception)
    def _internal(request: Request, exc: Exception):
        first = (str(exc).strip().splitlines() or [""])[0]
        return JSONResponse(status_code=500, content=APIError(
            500, f"internal error: {type(exc).__name__}: {first}", "internal_error", None, "server_error").body())
