"""HTTP errors: raised anywhere in the receiver, rendered once by the app as `{"error": ...}`.

Each message is shown to the caller (the DMP shows it to the marketer), so it says what was
wrong and what to do, and never contains a secret or the request body.
"""


class HttpError(Exception):
    status = 500
    reason = "Internal Server Error"

    def __init__(self, message, headers=(), *, detail=None):
        """`detail`: what the service log says beside `message` (never shown to the caller)."""
        super().__init__(message)
        self.message = message
        self.headers = list(headers)
        self.detail = detail


class BadRequest(HttpError):
    status, reason = 400, "Bad Request"


class Unauthorized(HttpError):
    status, reason = 401, "Unauthorized"


class Forbidden(HttpError):
    status, reason = 403, "Forbidden"


class NotFound(HttpError):
    status, reason = 404, "Not Found"


class MethodNotAllowed(HttpError):
    status, reason = 405, "Method Not Allowed"

    def __init__(self, message, allow):
        super().__init__(message, [("Allow", allow)])


class LengthRequired(HttpError):
    status, reason = 411, "Length Required"


class PayloadTooLarge(HttpError):
    status, reason = 413, "Payload Too Large"


class AudienceRefused(HttpError):
    """The platform refused to create the audience; the DMP shows the marketer why."""

    status, reason = 422, "Unprocessable Content"


class ServiceUnavailable(HttpError):
    """Nothing was stored; the DMP may send the same request again."""

    status, reason = 503, "Service Unavailable"
